"""`josh train`: a LoRA adapter of any registered training kind (josh_core/train/kinds.py): SFT,
KTO, DPO on `josh export` JSONL; online kinds play the environment themselves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from josh_core.cli.output import fail, plain, warn
from josh_core.paths import default_db_path
from josh_core.train.config import TrainingConfigError
from josh_core.train.kinds import KINDS, get_kind, setting_value, settings

KINDS_HELP = "; ".join(
    f"{k.name}: {k.summary}" + (f" (--data: `josh export --kind {k.export}`)" if k.export else " (no --data)")
    for k in KINDS.values()
)


def kind_settings(kind: str, args: list[str]) -> dict[str, Any]:
    """The kind's own settings given as extra flags (`--beta 0.05`, `--num-generations=4`): any
    field of its config class, by its name with dashes or underscores."""
    out: dict[str, Any] = {}
    position = 0
    while position < len(args):
        flag = args[position]
        if not flag.startswith("--") or len(flag) == 2:
            raise TrainingConfigError(f"unexpected argument {flag!r}: settings are given as --NAME VALUE")
        name, has_value, raw = flag[2:].partition("=")
        if not has_value:
            if position + 1 >= len(args):
                raise TrainingConfigError(f"{flag} needs a value")
            raw = args[position + 1]
            position += 1
        position += 1
        out[name.replace("-", "_")] = setting_value(kind, name.replace("-", "_"), raw)
    return out


def print_settings(kind: str) -> None:
    from rich.table import Table

    table = Table(title=f"{kind} settings (--NAME VALUE, or NAME in a --config file)", title_justify="left")
    for column in ("name", "default", "help", "from"):
        table.add_column(column)
    for s in settings(kind):
        table.add_row(plain(s.name.replace("_", "-")), plain(repr(s.default)), plain(s.help), plain(s.declared_in))
    Console(highlight=False, soft_wrap=True).print(table)


def progress_callback(progress: Progress):
    """A transformers TrainerCallback drawing the run as a rich progress bar (steps, last loss)."""
    from transformers import TrainerCallback

    class RichTrainingProgress(TrainerCallback):
        def __init__(self):
            self.task = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.task = progress.add_task("training", total=state.max_steps or None, loss="")

        def on_step_end(self, args, state, control, **kwargs):
            if self.task is not None:
                progress.update(self.task, completed=state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            loss = (logs or {}).get("loss")
            if self.task is not None and isinstance(loss, (int, float)):
                progress.update(self.task, loss=f"loss {loss:.4f}")

        def on_train_end(self, args, state, control, **kwargs):
            if self.task is not None:
                progress.update(self.task, completed=state.global_step)

    return RichTrainingProgress()


def register(app: typer.Typer) -> None:
    @app.command("train", context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
                 epilog="Any setting of the kind's config class is a flag too: --NAME VALUE (e.g. --beta 0.05); "
                        "--list-settings prints them with their defaults.")
    def train(
        ctx: typer.Context,
        kind: str = typer.Option(..., help=KINDS_HELP + "."),
        data: Optional[Path] = typer.Option(None, help="JSONL written by `josh export --kind KIND` (offline kinds); "
                                            "for an online kind, an optional scenario file (JSON) instead of its split."),
        base: str = typer.Option(
            "embedded", help="Agent SPEC to train: embedded\\[@ADAPTER_DIR] | hf:PATH\\[@ADAPTER_DIR] "
            "(with @ADAPTER_DIR the adapter is trained further)."
        ),
        out: Optional[Path] = typer.Option(None, help="Directory for the adapter (then --agent embedded@OUT / "
                                           "hf:PATH@OUT). Required unless --list-settings."),
        config: Optional[Path] = typer.Option(
            None, "--config", help="JSON or TOML settings (top level for every kind, a \\[KIND] table for one kind)."
        ),
        list_settings: bool = typer.Option(False, "--list-settings", help="Print the kind's settings and exit."),
        max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop after N optimiser steps."),
        lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate."),
        epochs: Optional[float] = typer.Option(None, "--epochs", help="Epochs."),
        db: Optional[Path] = typer.Option(None, help="DuckDB file to record the training in (default JOSH_DB or ./josh.duckdb)."),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Train a LoRA adapter: on exported data (SFT, KTO, DPO) or online in the environment (GRPO)."""
        from josh_core.storage.db import DatabaseError
        from josh_core.train import TrainingConfigError, TrainingDataError, run_training
        from josh_core.train.guards import (
            TrainingBusy,
            TrainingDiverged,
            disk_full_message,
            is_disk_full,
            quiet_libraries,
        )

        try:
            kind = get_kind(kind).name  # the registry, as it is when the command runs
        except TrainingConfigError as error:
            fail(f"--kind: {error}")
        if list_settings:
            print_settings(kind)
            return
        if out is None:
            fail("--out is required: the directory for the adapter")
        quiet_libraries()
        overrides: dict[str, Any] = {"max_steps": max_steps, "learning_rate": lr, "num_train_epochs": epochs}
        try:
            overrides.update(kind_settings(kind, list(ctx.args)))
        except TrainingConfigError as error:
            fail(str(error))
        db_path = db or default_db_path()
        console = Console(stderr=True, highlight=False, soft_wrap=True)
        columns = (
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[loss]}"),
            TimeElapsedColumn(), TimeRemainingColumn(),
        )
        try:
            with Progress(*columns, console=console, transient=False) as progress:
                result = run_training(
                    kind, data, base, out, overrides=overrides, config_file=config, db=db_path,
                    callbacks=[lambda: progress_callback(progress)],
                )
        except (TrainingDataError, TrainingConfigError, DatabaseError, TrainingBusy) as error:
            fail(str(error))
        except TrainingDiverged as error:
            fail(f"{error} (the training is recorded as failed)")
        except OSError as error:
            if is_disk_full(error):
                fail(disk_full_message(error, out))
            fail(f"{error.filename or out}: {error.strerror or error}")
        except KeyboardInterrupt:
            fail("interrupted (the training is recorded as failed)", code=130)
        for note in result.notes:
            warn(note)
        if as_json:
            typer.echo(json.dumps(result.model_dump(mode="json")))
            return
        out_console = Console(highlight=False, soft_wrap=True)
        loss = f"{result.final_loss:.4f}" if result.final_loss is not None else "n/a"
        out_console.print(plain(
            f"trained {result.kind} on {result.examples} examples: {result.steps} steps, final loss {loss}, "
            f"{result.seconds:.1f} s"
        ))
        out_console.print(plain(f"adapter {result.adapter_dir}"))
        agent = f"embedded@{result.adapter_dir}" if base.split("@", 1)[0] == "embedded" else (
            f"hf:{result.base_model}@{result.adapter_dir}")
        out_console.print(plain(f"training {result.training_id} in {db_path}; play it with --agent {agent}"))
