"""Resumable trainings: timed checkpoints in the adapter folder, picked up by a rerun.

On two CPU cores a KTO round of a few hundred rows trains for hours, longer than one working
session, so a training must survive being stopped. While it trains, a checkpoint (adapter,
optimiser, scheduler, RNG states: transformers' `checkpoint-N/`) is saved into OUT at the end
of the first optimiser step that finishes `checkpoint_minutes` after the last save. Rerunning
the same training (same kind, base, data and resolved settings) into the same OUT resumes from
the newest checkpoint; a different training into that OUT discards the stale checkpoints. Once
the adapter is saved, the checkpoints are removed.

Time rather than steps: a step takes milliseconds on a GPU and minutes here, and "lose at most
ten minutes" means the same on both.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from josh_core.adapter_folder import RESUME_FILE, STAGING_DIR  # RESUME_FILE: what the checkpoints belong to

log = logging.getLogger(__name__)

_PREFIX = "checkpoint-"


def _checkpoints(out: Path) -> list[Path]:
    found = [p for p in out.glob(f"{_PREFIX}*") if p.is_dir() and p.name[len(_PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(_PREFIX):]))


def checkpoint_step(checkpoint: Path) -> int:
    return int(checkpoint.name[len(_PREFIX):])


def prepare(out: Path, key: dict[str, Any]) -> tuple[Path | None, dict[str, Any] | None]:
    """(the checkpoint to resume from, the previous attempt's marker) for this training in OUT;
    (None, None) when there is nothing of this training to resume: stale checkpoints are removed
    and OUT is marked as belonging to `key`."""
    marker_path = out / RESUME_FILE
    previous: dict[str, Any] | None = None
    if marker_path.is_file():
        try:
            previous = json.loads(marker_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None
    complete = [c for c in _checkpoints(out) if (c / "trainer_state.json").is_file()]
    if previous is not None and previous.get("key") == key and complete:
        return complete[-1], previous
    if _checkpoints(out):
        log.warning("discarding checkpoints in %s: they belong to another training", out)
    discard(out)
    shutil.rmtree(out / STAGING_DIR, ignore_errors=True)  # another training's unfinished output
    marker_path.write_text(json.dumps({"key": key}, indent=2) + "\n", encoding="utf-8")
    return None, None


def record_attempt(out: Path, training_id: str) -> None:
    """Remember which `trainings` row the current attempt writes (a resumed attempt closes it)."""
    marker_path = out / RESUME_FILE
    marker = json.loads(marker_path.read_text(encoding="utf-8"))
    marker["training_id"] = training_id
    marker_path.write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")


def discard(out: Path) -> None:
    """Remove the checkpoints and the marker (after the adapter is saved, or when stale)."""
    for checkpoint in _checkpoints(out):
        shutil.rmtree(checkpoint, ignore_errors=True)
    (out / RESUME_FILE).unlink(missing_ok=True)


def timed_checkpoint_callback(minutes: float):
    """A TrainerCallback asking the trainer to save after a step once `minutes` have passed since
    the start or the last save (0: after every step)."""
    from transformers import TrainerCallback

    class TimedCheckpoint(TrainerCallback):
        def __init__(self) -> None:
            self.last = time.monotonic()

        def on_step_end(self, args, state, control, **kwargs):
            if time.monotonic() - self.last >= minutes * 60:
                control.should_save = True
            return control

        def on_save(self, args, state, control, **kwargs):
            self.last = time.monotonic()
            return control

    return TimedCheckpoint()
