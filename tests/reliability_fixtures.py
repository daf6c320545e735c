"""Local OpenAI-compatible servers that misbehave, for the reliability tests: one that answers
with text of our choosing (an echo of the API key, a lone-surrogate escape), one that accepts
and never answers, and a port nobody listens on. All on 127.0.0.1, ports 18100-18199."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PORTS = range(18100, 18200)


def free_port(exclude: set[int] | frozenset[int] = frozenset()) -> int:
    """A port of the range nobody listens on now (so a connection to it is refused)."""
    for port in PORTS:
        if port in exclude:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 18100-18199")


def refused_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"


class FakeChatServer:
    """An OpenAI-compatible chat endpoint.

    mode "answer": every request gets one choice whose content is `reply(headers)` (a raw
    JSON-escaped string is sent as it is, so `\\ud800` reaches the client as an escape);
    mode "hang": the request is read and never answered (until the server stops)."""

    def __init__(self, mode: str = "answer", reply: Any = "Hello.", raw_content: str | None = None):
        self.mode = mode
        self.reply = reply
        self.raw_content = raw_content  # a JSON string literal, sent verbatim as the content
        self.requests = 0
        self.stopping = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                server.requests += 1
                if server.mode == "hang":
                    server.stopping.wait(60)
                    return
                content = server.reply(self.headers) if callable(server.reply) else server.reply
                literal = server.raw_content if server.raw_content is not None else json.dumps(content)
                body = ('{"id": "c1", "object": "chat.completion", "created": 0, "model": "m", "choices": '
                        '[{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": '
                        + literal + '}}], "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}')
                data = body.encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.port = free_port()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FakeChatServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
