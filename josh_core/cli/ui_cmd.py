"""`josh ui`: start the Streamlit app on a database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import typer

from josh_core.paths import default_db_path

# The app lives beside the package in the source tree (app.py + pages/); the README installs
# the project in editable mode, so it is found from here.
APP_PATH = Path(__file__).resolve().parents[2] / "app.py"


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
        raise typer.Exit(subprocess.call(cmd, cwd=APP_PATH.parent, env=env))
