"""Helpers for the hardening tests (tests/test_hardening_*.py): the `josh` command as a
subprocess and in-process, a minimal OpenAI-compatible server that answers every request
with one canned error, and small scenario / script files built from real ToolWOZ data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from engine_fixtures import call, speak

JOSH = [str(Path(sys.executable).parent / "josh")]


def default_signals() -> None:
    """`preexec_fn` for child processes: SIGINT (and SIGTERM) at their default disposition.

    A test run started in the background (`nohup`, `setsid ... &`, cron) has SIGINT ignored,
    and a child inherits an ignored signal: Python then installs no KeyboardInterrupt handler
    in it, and the tests that interrupt a rollout would see the signal vanish."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def josh(*args: str, env: dict[str, str] | None = None, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """`josh ARGS` in a subprocess (the real console: markup, progress, exit code)."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    kwargs.setdefault("preexec_fn", default_signals)
    return subprocess.run([*JOSH, *args], capture_output=True, text=True, timeout=timeout, env=full_env, **kwargs)


def invoke(*args: str, **kwargs):
    """`josh ARGS` in-process (exceptions are kept on the result, not raised)."""
    from josh_core.cli import app

    return CliRunner().invoke(app, list(args), **kwargs)


def no_traceback(result) -> bool:
    """True when a command ended through its own exit (no exception escaped)."""
    if isinstance(result, subprocess.CompletedProcess):
        return "Traceback" not in result.stderr and "Traceback" not in result.stdout and "╭─ Traceback" not in result.stderr
    return result.exception is None or isinstance(result.exception, SystemExit)


class ErrorServer:
    """An OpenAI-compatible endpoint that answers every chat request with `status` and an
    error body holding `message` (and, with `echo_key`, the Authorization header it got)."""

    def __init__(self, status: int = 400, message: str = "bad request", echo_key: bool = False):
        self.status = status
        self.message = message
        self.echo_key = echo_key
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                server.requests += 1
                message = server.message
                if server.echo_key:
                    message += f" (you sent {self.headers.get('Authorization')})"
                body = json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode()
                self.send_response(server.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "ErrorServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def write_json(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value))
    return path


def scenario_dicts(limit: int = 2, split: str = "train") -> list[dict]:
    from josh_core.envs.toolwoz.scenarios import load_split

    return [s.model_dump(mode="json") for s in load_split(split, limit=limit)]


def simple_scripts(folder: Path, scenarios: list[dict], goal: bool = True) -> tuple[Path, Path, Path]:
    """A scenario file, an agent script (the first scenario's first goal call, then a reply)
    and a user script."""
    folder.mkdir(parents=True, exist_ok=True)
    first = scenarios[0]["goal_calls"][0]
    turn = [call(first["name"], **first["parameters"])] if goal else []
    agent = write_json(folder / "agent.json", {"turns": [[[*turn, speak("Done.")]], [[speak("Anything else?")]]]})
    user = write_json(folder / "user.json", {"turns": ["Hello, I need help.", "Thanks, that is all."]})
    scenario_file = write_json(folder / "scenarios.json", scenarios)
    return scenario_file, agent, user


def stored_run(folder: Path, name: str = "runs.duckdb", limit: int = 2) -> tuple[Path, str]:
    """A database with one finished plain run of real scenarios played by script policies
    (the first scenario's first goal is reached, so exports have rows)."""
    from josh_core.rollout import RolloutConfig, start_run
    from josh_core.envs.toolwoz.scenarios import load_split

    scenarios = load_split("train", limit=limit)
    _, agent, user = simple_scripts(folder, [s.model_dump(mode="json") for s in scenarios])
    db_path = folder / name
    config = RolloutConfig(josh=True, agent=f"script:{agent}", user=f"script:{user}", max_turns=2)
    result = start_run(db_path, scenarios, config)
    return db_path, result.run_id


def foreign_duckdb(path: Path) -> Path:
    """A DuckDB file that is not a JOSH database (someone else's table)."""
    import duckdb

    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE measurements (x INTEGER)")
    con.execute("INSERT INTO measurements VALUES (1), (2)")
    con.close()
    return path


def tables_of(path: Path) -> list[str]:
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        return sorted(r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall())
    finally:
        con.close()
