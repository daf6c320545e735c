"""Shared helpers for the model tests: the embedded backend, a local OpenAI-compatible server,
and a scripted backend double for agent tests.

The server speaks the chat-completions protocol over real HTTP (FastAPI + uvicorn on
127.0.0.1, a free port). Model "embedded" is answered by the real embedded model through the
transformers backend; model "scripted" answers from a queue the test fills (tool calls,
fault injection), so retries and tool calling can be tested exactly.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import deque
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from josh_core.llm.base import ChatRequest, ChatResponse, Choice, ConstraintUnsupported, SamplingParams
from josh_core.types import Message, ToolCall


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ChatServer:
    """An OpenAI-compatible /v1/chat/completions server in a background thread."""

    def __init__(self, backend: Any = None, *, supports_n: bool = True):
        self.backend = backend  # serves model "embedded" (an HFBackend)
        self.supports_n = supports_n
        self.scripted: deque[dict[str, Any]] = deque()  # replies for model "scripted"
        self.faults: deque[tuple[int, dict[str, str]]] = deque()  # (status, headers) to fail with first
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.delay_s = 0.0
        self._lock = threading.Lock()
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._server = None
        self._thread: threading.Thread | None = None

    def app(self):
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def completions(request: Request):
            body = await request.json()
            with self._lock:
                self.requests.append(body)
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                if self.faults:
                    status, headers = self.faults.popleft()
                    return JSONResponse({"error": {"message": f"injected {status}", "type": "test"}},
                                        status_code=status, headers=headers)
                n = int(body.get("n", 1))
                if n > 1 and not self.supports_n:
                    return JSONResponse({"error": {"message": "n > 1 is not supported", "param": "n"}},
                                        status_code=400)
                if body["model"] == "scripted":
                    return JSONResponse(self._scripted(body, n))
                return JSONResponse(await self._generate(body, n))
            finally:
                with self._lock:
                    self.in_flight -= 1

        return app

    def _scripted(self, body: dict[str, Any], n: int) -> dict[str, Any]:
        choices = []
        for i in range(n):
            reply = self.scripted.popleft() if self.scripted else {"content": f"scripted reply {i}"}
            message = {"role": "assistant", "content": reply.get("content")}
            if reply.get("tool_calls"):
                message["tool_calls"] = [
                    {"id": f"call_{j}", "type": "function",
                     "function": {"name": c["name"], "arguments": c["arguments"] if isinstance(c["arguments"], str)
                                  else json.dumps(c["arguments"])}}
                    for j, c in enumerate(reply["tool_calls"])
                ]
            choices.append({"index": i, "message": message,
                            "finish_reason": "tool_calls" if reply.get("tool_calls") else "stop"})
        return {"id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()),
                "model": "scripted", "choices": choices,
                "usage": {"prompt_tokens": 10, "completion_tokens": 5 * n, "total_tokens": 10 + 5 * n}}

    async def _generate(self, body: dict[str, Any], n: int) -> dict[str, Any]:
        messages = [Message(role=m["role"], content=m.get("content") or "") for m in body["messages"]]
        stop = body.get("stop")
        request = ChatRequest(
            messages=messages, n=n, tools=body.get("tools"),
            sampling=SamplingParams(temperature=body.get("temperature", 1.0), top_p=body.get("top_p"),
                                    top_k=body.get("top_k"), max_tokens=body.get("max_tokens", 16),
                                    stop=[stop] if isinstance(stop, str) else stop, seed=body.get("seed")),
        )
        response: ChatResponse = await self.backend.chat(request)
        choices = []
        for i, c in enumerate(response.choices):
            message: dict[str, Any] = {"role": "assistant", "content": c.text}
            if c.tool_calls:
                message["tool_calls"] = [{"id": f"call_{j}", "type": "function",
                                          "function": {"name": t.name, "arguments": json.dumps(t.parameters)}}
                                         for j, t in enumerate(c.tool_calls)]
            choices.append({"index": i, "message": message, "finish_reason": c.finish_reason or "stop"})
        return {"id": "chatcmpl-embedded", "object": "chat.completion", "created": int(time.time()),
                "model": body["model"], "choices": choices,
                "usage": {"prompt_tokens": response.prompt_tokens or 0,
                          "completion_tokens": response.completion_tokens or 0,
                          "total_tokens": (response.prompt_tokens or 0) + (response.completion_tokens or 0)}}

    def start(self) -> "ChatServer":
        import uvicorn

        config = uvicorn.Config(self.app(), host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.time() + 20
        while not self._server.started:
            if time.time() > deadline:
                raise RuntimeError("test chat server did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)


class ScriptedBackend:
    """A ChatBackend double: answers each request with the next queued choice, records requests.

    A queued item is a text, a `Choice`, or an exception to raise.
    """

    def __init__(self, replies: list[Any], *, is_local: bool = True, name: str = "scripted",
                 refuse_constraints: bool = False):
        self.replies = deque(replies)
        self.is_local = is_local
        self.name = name
        self.refuse_constraints = refuse_constraints
        self.requests: list[ChatRequest] = []

    async def chat(self, request: ChatRequest) -> ChatResponse:
        self.requests.append(request)
        if request.constraint is not None and self.refuse_constraints:
            raise ConstraintUnsupported("scripted backend takes no constraints")
        reply = self.replies.popleft() if self.replies else "SPEAK (script exhausted) <COMMAND_END>"
        if isinstance(reply, Exception):
            raise reply
        choice = reply if isinstance(reply, Choice) else Choice(text=reply)
        return ChatResponse(choices=[choice], prompt_tokens=100, completion_tokens=10)

    async def aclose(self) -> None:
        pass


def tool_choice(name: str, **params: str) -> Choice:
    return Choice(text="", tool_calls=[ToolCall(name=name, parameters=params, id="x")], finish_reason="tool_calls")
