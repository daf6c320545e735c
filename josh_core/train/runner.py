"""One training: data -> the kind's trainer with LoRA -> an adapter an agent SPEC loads.

`train(kind, data, base, out, ...)` is the entry point the CLI, the self-training loop and the
app call. It

1. resolves the configuration (defaults < config file < overrides; `TrainingConfigError`),
2. reads and checks the exported JSONL (`TrainingDataError` when it cannot be used), or, for an
   online kind, the scenarios it will play,
3. records a `trainings` row (status 'running') when a database is given,
4. loads the base of the agent SPEC with a fresh LoRA adapter, or continues `@ADAPTER_DIR`,
5. trains, streaming every log (step, loss, learning rate, ...) to `<out>/metrics.jsonl`, to the
   row's `metrics` and to `on_log`,
6. saves the adapter, the tokenizer and `josh_training.json` into `out`, so `embedded@OUT` or
   `hf:PATH@OUT` plays the trained agent, and closes the row ('done', or 'failed' with the error).

While it trains it keeps a timed checkpoint in `out`; the same training rerun into the same `out`
resumes from it (`josh_core.train.checkpoints`).

Guarantees (`josh_core.train.guards`): everything that can be checked is checked before `out`
or the database is touched (settings finite, data readable, `out` a folder of ours or new, the
database a JOSH one and not truncated); `out` is locked for the training; the metrics and the
new adapter are written into `out/.josh-partial/` and moved into `out` only once the training
finished with finite losses and weights, `josh_training.json` last, so `out` holds the old
complete adapter or the new one, never a mix; a 'running' row whose process is gone is closed
as interrupted at the next training in the same database.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from josh_core.adapter_folder import MANIFEST_FILE
from josh_core.rollout import code_revision
from josh_core.train import checkpoints, guards
from josh_core.train.config import TrainConfig, TrainerInputs, TrainingConfigError
from josh_core.train.data import TrainingData, TrainingDataError
from josh_core.train.kinds import TrainingKind, build_config, get_kind
from josh_core.train.model import (
    BaseModelSpec,
    Precision,
    choose_precision,
    cuda_available,
    load_model,
    load_tokenizer,
    resolve_base,
)

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
TRAINING_FILE = MANIFEST_FILE

LogCallback = Callable[[dict[str, Any]], None]


class TrainingResult(BaseModel):
    training_id: str
    kind: str
    base: str  # the agent SPEC trained from (may carry @ADAPTER_DIR)
    base_model: str  # the transformers model it resolved to
    adapter_dir: str  # load it as embedded@DIR / hf:PATH@DIR
    data_path: str
    data_hash: str  # sha256 of the JSONL
    examples: int  # rows in the JSONL
    steps: int  # optimiser steps taken
    losses: list[float] = Field(default_factory=list)  # the loss of every logged step
    final_loss: float | None = None
    seconds: float
    status: Literal["done", "failed"] = "done"
    metrics_path: str
    resumed_from_step: int | None = None  # the checkpoint an interrupted training went on from
    # What an online kind sampled (episodes, agent_turns, ...): its last `budget/NAME` logs.
    budget: dict[str, int] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)  # e.g. "load_in_4bit ignored: no CUDA device"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _finite(value: Any) -> Any:
    """JSON-safe metrics: NaN / inf become None (DuckDB's JSON and browsers reject them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _trainer_callback_class():
    from transformers import TrainerCallback

    class MetricsRecorder(TrainerCallback):
        """Streams every log to metrics.jsonl, the trainings row and `on_log`."""

        def __init__(self, metrics_path: Path, db: Any, training_id: str, on_log: LogCallback | None,
                     started: float):
            self.metrics_path = metrics_path
            self.db = db
            self.training_id = training_id
            self.log_fn = on_log  # not `on_log`: that name is the callback method
            self.started = started
            self.records: list[dict[str, Any]] = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            record = {
                "step": state.global_step,
                "max_steps": state.max_steps,
                "epoch": _finite(state.epoch),
                "seconds": round(time.perf_counter() - self.started, 3),
                **{k: _finite(v) for k, v in (logs or {}).items()},
            }
            self.records.append(record)
            with self.metrics_path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
            if self.db is not None:
                from josh_core.storage.trainings import update_training_metrics

                try:
                    update_training_metrics(self.db, self.training_id, self.records)
                except Exception as error:  # a busy database must not stop the training
                    log.warning("could not update training %s in %s: %s", self.training_id, self.db.path, error)
            if self.log_fn is not None:
                self.log_fn(dict(record))

    return MetricsRecorder


def _checkpointing_argument() -> str:
    """transformers 5.x renamed `gradient_checkpointing` to `activation_checkpointing` (the old
    name warns); older 5.x releases know only the old one."""
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def trl_arguments(config: TrainConfig, precision: Precision, out: Path) -> dict[str, Any]:
    """The TrainingArguments shared by the three TRL configs."""
    args: dict[str, Any] = {
        "output_dir": str(out),
        "learning_rate": config.learning_rate,
        "num_train_epochs": config.num_train_epochs,
        "max_steps": config.max_steps,
        "per_device_train_batch_size": config.per_device_train_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "max_length": config.max_length,
        "seed": config.seed,
        "warmup_steps": config.warmup_steps,
        "lr_scheduler_type": config.lr_scheduler_type,
        "weight_decay": config.weight_decay,
        "logging_steps": config.logging_steps,
        "bf16": precision.bf16,
        "fp16": precision.fp16,
        _checkpointing_argument(): precision.gradient_checkpointing,
        "report_to": "none",
        # Only the timed checkpoints of `checkpoints.py` (and the adapter at the end) are saved;
        # the newest one is kept, older ones removed as the next is written.
        "save_strategy": "no",
        "save_total_limit": 1,
        "disable_tqdm": True,  # progress goes through callbacks (the CLI draws a rich bar)
        "dataloader_pin_memory": cuda_available(),  # pinning warns and does nothing without a GPU
    }
    args.update(config.trl_args)
    return args


def _resolved_config(config: TrainConfig, precision: Precision, data: TrainingData) -> dict[str, Any]:
    resolved = config.resolved(data)
    resolved["precision"] = {
        "bf16": precision.bf16, "fp16": precision.fp16, "load_in_4bit": precision.four_bit,
        "gradient_checkpointing": precision.gradient_checkpointing, "dtype": str(precision.dtype),
    }
    return resolved


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("trl", "peft", "transformers", "torch"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            pass
    return out


def command_line() -> str:
    """The command line of this process, as typed (`josh ...` for the josh script), for the
    adapter's record: `josh adapters ship` copies it into the shipped manifest."""
    import shlex
    import sys

    argv = list(sys.argv) or ["python"]
    if Path(argv[0]).name == "josh":
        argv[0] = "josh"
    return shlex.join(argv)


def _save_adapter(trainer, tokenizer, out: Path) -> None:  # out: the staging folder
    model = trainer.accelerator.unwrap_model(trainer.model)
    # Only the trained adapter: KTO / DPO add a frozen "ref" copy when continuing an adapter.
    model.save_pretrained(str(out), selected_adapters=["default"])
    tokenizer.save_pretrained(str(out))


def _metrics_up_to(metrics_path: Path, step: int | None) -> list[dict[str, Any]]:
    """The logged records of an interrupted attempt up to the checkpoint resumed from (later ones
    are logged again as the steps are redone)."""
    if step is None or not metrics_path.is_file():
        return []
    records = []
    for line in metrics_path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut by the interruption
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
            records.append(record)
    return records


def _close_interrupted(database, old_id: str, new_id: str, step: int | None) -> None:
    """The row of the interrupted attempt says where the training went on: a killed attempt is
    still 'running', one stopped by an error is 'failed' with it."""
    from josh_core.storage import trainings

    try:
        row = trainings.get_training(database, old_id)
    except (KeyError, LookupError):
        return
    if row.status == "done":
        return
    resumed = f"resumed from step {step} as {new_id}"
    error = f"{row.error}; {resumed}" if row.error else f"interrupted; {resumed}"
    trainings.finish_training(database, old_id, status="failed", seconds=row.seconds or 0.0, error=error)


def run_training(
    kind: str,
    data: str | Path | None,
    base: str,
    out: str | Path,
    *,
    overrides: dict[str, Any] | None = None,
    config_file: str | Path | None = None,
    db: str | Path | None = None,
    on_log: LogCallback | None = None,
    callbacks: list | None = None,
) -> TrainingResult:
    """`train` with extra transformers `TrainerCallback`s (the CLI's progress bar): instances,
    classes, or zero-argument factories (called once the data and settings are checked, so a
    caller need not import transformers before a refused file is reported)."""
    from josh_core.storage.db import Database

    started = time.perf_counter()
    guards.quiet_libraries()
    spec = get_kind(kind)
    kind = spec.name
    config = build_config(kind, config_file, overrides)
    training_data = spec.training_data(data, config)
    base_spec: BaseModelSpec = resolve_base(base)
    out = Path(out)
    if base_spec.adapter is not None and out.resolve() == Path(base_spec.adapter).resolve():
        raise TrainingConfigError("--out must differ from the adapter being continued")
    db_path = Path(db) if db is not None else None
    if spec.online and db_path is None:
        raise TrainingConfigError(f"{kind} stores every episode it plays: give it a database (--db, db=)")
    guards.check_output(out, db_path)
    database = None
    if db_path is not None:
        guards.check_database(db_path)
        database = Database(db_path)
        database.ensure_schema()  # a foreign, newer or unreadable file is refused here
    with guards.claim_output(out, db_path):
        return _train_locked(spec, training_data, config, base, base_spec, out, database, on_log, callbacks,
                             started)


def _train_locked(spec: TrainingKind, training_data: TrainingData, config: TrainConfig, base: str, base_spec: BaseModelSpec,
                  out: Path, database, on_log: LogCallback | None, callbacks: list | None,
                  started: float) -> TrainingResult:
    from josh_core.storage import trainings

    kind = spec.name
    if database is not None:
        for stale in guards.close_stale_trainings(database):
            log.warning("training %s in %s was interrupted earlier: recorded as failed", stale, database.path)
    precision = choose_precision(config)
    for note in precision.notes:
        log.warning(note)
    resolved = _resolved_config(config, precision, training_data)
    resume_key = {"kind": kind, "base": base, "data_hash": training_data.sha256, "config": resolved}
    resume_from, previous = checkpoints.prepare(out, resume_key)
    resumed_step = checkpoints.checkpoint_step(resume_from) if resume_from else None
    staging = guards.staging_dir(out)
    metrics_path = staging / METRICS_FILE
    earlier_records = _metrics_up_to(metrics_path, resumed_step) if resume_from else []
    staging.mkdir(exist_ok=True)
    metrics_path.write_text("".join(json.dumps(r) + "\n" for r in earlier_records))

    training_id = trainings.new_training_id()
    created_at = _now()
    if database is not None:
        trainings.create_training(
            database, kind=kind, base=base, data_path=training_data.source,
            data_hash=training_data.sha256, examples=training_data.examples, config=resolved,
            adapter_path=str(out.resolve()), training_id=training_id,
        )
        if previous and previous.get("training_id"):
            _close_interrupted(database, previous["training_id"], training_id, resumed_step)
    checkpoints.record_attempt(out, training_id)
    recorder = _trainer_callback_class()(metrics_path, database, training_id, on_log, started)
    recorder.records.extend(earlier_records)
    try:
        tokenizer = load_tokenizer(base_spec.model_path)
        model = load_model(base_spec, config, precision)
        args = trl_arguments(config, precision, out)
        from transformers import PrinterCallback, ProgressCallback, TrainerCallback

        extra = [cb if isinstance(cb, (TrainerCallback, type)) else cb() for cb in callbacks or []]
        if config.checkpoint_minutes is not None:
            extra.append(checkpoints.timed_checkpoint_callback(config.checkpoint_minutes))
        trainer = spec.build(TrainerInputs(
            model=model, tokenizer=tokenizer, data=training_data, config=config, args=args,
            callbacks=[recorder, *extra], training_id=training_id, base=base, database=database,
        ))

        # TRL writes a model card (README.md) into output_dir, which is `out`, at every checkpoint:
        # it would overwrite the card of the adapter still in `out`. The new adapter's card comes
        # with save_pretrained into the staging folder.
        trainer.create_model_card = lambda *args, **kwargs: None
        trainer.remove_callback(PrinterCallback)  # logs reach callers through on_log instead
        trainer.remove_callback(ProgressCallback)
        if len(trainer.train_dataset) == 0:
            raise TrainingDataError(
                f"no example of {training_data.source} fits in max_length={config.max_length} tokens "
                "(prompts alone are longer); raise max_length"
            )
        if resume_from is not None:
            log.warning("resuming training in %s from step %s", out, resumed_step)
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        guards.check_trained(trainer.model, recorder.records)
        steps = trainer.state.global_step

        seconds = time.perf_counter() - started
        losses = [float(r["loss"]) for r in recorder.records if r.get("loss") is not None]
        summary = next((r for r in reversed(recorder.records) if "train_loss" in r), {})
        # Cumulative counters a trainer logs as `budget/NAME` (online kinds: what they sampled).
        last = next((r for r in reversed(recorder.records) if any(k.startswith("budget/") for k in r)), {})
        budget = {k.removeprefix("budget/"): v for k, v in last.items() if k.startswith("budget/")}
        result = TrainingResult(
            training_id=training_id,
            kind=kind,
            base=base,
            base_model=base_spec.model_path,
            adapter_dir=str(out.resolve()),
            data_path=training_data.source,
            data_hash=training_data.sha256,
            examples=training_data.examples,
            steps=steps,
            losses=losses,
            final_loss=losses[-1] if losses else None,
            seconds=round(seconds, 3),
            metrics_path=str((out / METRICS_FILE).resolve()),
            resumed_from_step=resumed_step,
            budget=budget,
            notes=precision.notes,
        )
        manifest = {
            "training_id": training_id,
            "kind": kind,
            "base": base,
            "base_model": base_spec.model_path,
            "continued_from": base_spec.adapter,
            "resumed_from_step": resumed_step,
            "data": {"path": result.data_path, "sha256": training_data.sha256, "examples": training_data.examples},
            "config": resolved,
            "metrics": {
                "steps": steps, "final_loss": result.final_loss, "train_loss": summary.get("train_loss"),
                "losses": losses, "seconds": result.seconds, "budget": budget,
            },
            "versions": _versions(),
            "command": command_line(),
            "code_revision": code_revision(),
            "created_at": created_at.isoformat(),
            "finished_at": _now().isoformat(),
        }
        _save_adapter(trainer, tokenizer, staging)
        (staging / TRAINING_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        guards.publish_adapter(out, staging)
        checkpoints.discard(out)
    except BaseException as error:
        if database is not None:
            try:
                trainings.finish_training(
                    database, training_id, status="failed", seconds=time.perf_counter() - started,
                    metrics=recorder.records, error=f"{type(error).__name__}: {error}",
                )
            except Exception as db_error:
                log.warning("could not record the failure of training %s: %s", training_id, db_error)
        raise

    if database is not None:
        trainings.finish_training(database, training_id, status="done", seconds=seconds, metrics=recorder.records)
    return result


def train(
    kind: str,
    data: str | Path | None,
    base: str,
    out: str | Path,
    *,
    overrides: dict | None = None,
    config_file: str | Path | None = None,
    db: str | Path | None = None,
    on_log: Callable[[dict], None] | None = None,
) -> TrainingResult:
    """Train a LoRA adapter on exported JSONL and save it where an agent SPEC loads it.

    kind: a registered training kind (`josh_core.train.kinds`: sft, kto, dpo, ...); data: a `josh
    export` JSONL of that kind (an online kind: an optional scenario file, else None); base: the agent SPEC
    to start from (`embedded`, `hf:PATH`, either with `@ADAPTER_DIR` to continue an adapter);
    out: the adapter directory to write (then `embedded@OUT` / `hf:PATH@OUT` is the trained
    agent). overrides / config_file: settings over the kind's defaults (see
    `josh_core.train.config`). db: a DuckDB file to record the training in (`trainings` table,
    metrics updated as logs arrive); None records nothing. on_log: called with every logged
    dict (step, max_steps, loss, learning_rate, ...).

    Raises TrainingDataError / TrainingConfigError (plain messages) for unusable data or
    settings; other errors propagate after the row is marked 'failed'.
    """
    return run_training(kind, data, base, out, overrides=overrides, config_file=config_file, db=db,
                        on_log=on_log)
