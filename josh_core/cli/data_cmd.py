"""`josh data prepare`: fetch and verify MultiWOZ inputs, build toolwoz-synth, print split counts."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from josh_core.cli.output import fail, plain
from josh_core.toolwoz.data import DataUnavailableError, prepare
from josh_core.toolwoz.official import prepare_official


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
        from_path: Optional[Path] = typer.Option(
            None,
            "--from",
            help="Use local inputs instead of PyPI: convlab-3.0.1.tar.gz, a folder holding it, "
            "or a folder with the four *_db.json files and goal_model.pkl.",
        ),
        official: Optional[Path] = typer.Option(
            None,
            "--official",
            help="Also store the official ToolWOZ splits from a folder with MultiWOZ's data.json "
            "(+ testListFile.json, valListFile.json) or ground_truth_apis.json.",
        ),
        force: bool = typer.Option(False, "--force", help="Convert and generate again."),
    ) -> None:
        """Fetch, verify and convert MultiWOZ data, generate toolwoz-synth, print split counts."""
        console = Console()
        columns = (TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        try:
            with Progress(*columns, console=console, transient=True) as progress:
                tasks: dict[str, int] = {}

                def report(step: str, done: int, total: int) -> None:
                    if step not in tasks:
                        tasks[step] = progress.add_task(step, total=total)
                    progress.update(tasks[step], completed=done, total=total)

                counts = prepare(from_path=from_path, progress=report, force=force)
            console.print(_counts_table("toolwoz-synth", counts))
            if official is not None:
                official_counts = prepare_official(official)
                console.print(_counts_table("official ToolWOZ", official_counts))
        except (DataUnavailableError, FileNotFoundError) as error:
            fail(error)

    app.add_typer(data_app, name="data")
