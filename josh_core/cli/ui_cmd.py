"""`josh ui`: start the Streamlit app on a database.

The Streamlit server is a child process in a process group of its own. SIGTERM, SIGINT and
SIGHUP sent to `josh ui` are passed on to that group, and whatever is left of it when `josh ui`
ends is stopped, so no server stays behind on the port. On Linux the child is also told to
stop when its parent dies without a word (SIGKILL).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import typer

from josh_core.paths import default_db_path

# The app lives beside the package in the source tree (app.py + pages/); the README installs
# the project in editable mode, so it is found from here.
APP_PATH = Path(__file__).resolve().parents[2] / "app.py"
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
STOP_GRACE_S = 10.0  # how long the server gets to stop before it is killed


def _stop_with_parent() -> None:
    """In the child, before Streamlit starts: SIGTERM when the parent dies (Linux only)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # another platform: the signal forwarding still holds
        pass


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone already


def run_server(cmd: list[str], cwd: Path, env: dict[str, str]) -> int:
    """Run the server until it ends; signals to this process go to its whole group, and the
    group is stopped (SIGTERM, then SIGKILL after STOP_GRACE_S) before this returns."""
    process = subprocess.Popen(cmd, cwd=cwd, env=env, start_new_session=True, preexec_fn=_stop_with_parent)
    received: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        received.append(signum)
        _signal_group(process.pid, signum)

    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED_SIGNALS}
    try:
        code = process.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if process.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait()
        _signal_group(process.pid, signal.SIGTERM)  # any helper the server left in its group
    if received:
        return 128 + received[0]
    return code if code >= 0 else 128 - code


def register(app: typer.Typer) -> None:
    @app.command()
    def ui(
        db: Path = typer.Option(None, help="DuckDB file to browse (default: $JOSH_DB or ./josh.duckdb)."),
        port: int = typer.Option(8501, help="Port on localhost."),
    ) -> None:
        """Open the workbench in the browser (Streamlit, localhost only)."""
        if not APP_PATH.exists():
            raise typer.BadParameter(f"app not found at {APP_PATH}: install the project from its source tree")
        env = dict(os.environ, JOSH_DB=str((db or default_db_path()).resolve()))
        cmd = [
            sys.executable, "-m", "streamlit", "run", str(APP_PATH),
            "--server.port", str(port), "--server.address", "localhost", "--server.headless", "true",
        ]
        typer.echo(f"JOSH Workbench on http://localhost:{port}  (db: {env['JOSH_DB']})")
        raise typer.Exit(run_server(cmd, APP_PATH.parent, env))
