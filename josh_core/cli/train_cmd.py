"""`josh train`: a LoRA adapter from `josh export` JSONL (SFT / KTO / DPO with TRL)."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from josh_core.cli.output import fail, plain, warn
from josh_core.paths import default_db_path

Kind = Enum("Kind", {"sft": "sft", "kto": "kto", "dpo": "dpo"}, type=str)


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
    @app.command("train")
    def train(
        kind: Kind = typer.Option(..., help="sft | kto | dpo (the kind of the exported data)."),
        data: Path = typer.Option(..., help="JSONL written by `josh export --kind KIND`."),
        base: str = typer.Option(
            "embedded", help="Agent SPEC to train: embedded\\[@ADAPTER_DIR] | hf:PATH\\[@ADAPTER_DIR] "
            "(with @ADAPTER_DIR the adapter is trained further)."
        ),
        out: Path = typer.Option(..., help="Directory for the adapter (then --agent embedded@OUT / hf:PATH@OUT)."),
        config: Optional[Path] = typer.Option(
            None, "--config", help="JSON or TOML settings (top level for every kind, \\[sft] / \\[kto] / \\[dpo] tables)."
        ),
        max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop after N optimiser steps."),
        lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate."),
        epochs: Optional[float] = typer.Option(None, "--epochs", help="Epochs."),
        db: Optional[Path] = typer.Option(None, help="DuckDB file to record the training in (default JOSH_DB or ./josh.duckdb)."),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Train a LoRA adapter on exported SFT / KTO / DPO data."""
        from josh_core.storage.db import DatabaseError
        from josh_core.train import TrainingConfigError, TrainingDataError, run_training
        from josh_core.train.guards import (
            TrainingBusy,
            TrainingDiverged,
            disk_full_message,
            is_disk_full,
            quiet_libraries,
        )

        quiet_libraries()
        overrides: dict[str, Any] = {"max_steps": max_steps, "learning_rate": lr, "num_train_epochs": epochs}
        db_path = db or default_db_path()
        console = Console(stderr=True, highlight=False, soft_wrap=True)
        columns = (
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[loss]}"),
            TimeElapsedColumn(), TimeRemainingColumn(),
        )
        try:
            with Progress(*columns, console=console, transient=False) as progress:
                result = run_training(
                    kind.value, data, base, out, overrides=overrides, config_file=config, db=db_path,
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
