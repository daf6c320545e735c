"""What a training checks and holds before it touches anything, and how it fails plainly.

- `check_finite`: every number of a training configuration is finite (the CLI flags, a config
  file and `josh selftrain --set` all go through `config.build_config`, which calls it). JSON
  reads `NaN` / `Infinity`, TOML `nan` / `inf` and Typer `--lr inf`; an infinite learning rate
  trained a model of NaN weights and was recorded 'done'.
- `claim_output`: the output folder is refused when it is a file, the database, or a non-empty
  folder that holds no JOSH training (ours: `josh_training.json`, `josh_resume.json`,
  `.josh-partial/`), and is locked for the training (an OS `flock`, released by the kernel when
  the process dies, even on SIGKILL), so two trainings never write one folder at once.
- `close_stale_trainings`: 'running' rows whose training process is gone (nobody holds the lock
  of their folder) are closed as failed ("interrupted"), at the start of the next training.
- `check_trained`: after the last step, a non-finite loss or adapter weight fails the training.
- `check_database`: a truncated DuckDB file (ending inside a storage block) is refused before
  anything is written into it.
- `disk_full_message`: ENOSPC as one line naming the path.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import math
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from josh_core.adapter_folder import JOSH_MARKERS, MANIFEST_FILE, STAGING_DIR
from josh_core.paths import cache_root
from josh_core.storage import trainings
from josh_core.storage.db import truncated_file_problem
from josh_core.storage.locks import exclusive_lock, lock_is_held

log = logging.getLogger(__name__)


class TrainingConfigError(ValueError):
    """A training configuration that cannot be used (plain message, shown without traceback)."""


class TrainingBusy(RuntimeError):
    """Another process is training into the same output folder."""


class TrainingDiverged(RuntimeError):
    """The training ended with a non-finite loss or adapter weight; nothing was saved."""


# -- numbers -----------------------------------------------------------------------------------


def non_finite(value: Any) -> bool:
    """True for NaN / +-inf floats, also inside lists and dicts (trl_args)."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(non_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(non_finite(v) for v in value)
    return False


def check_finite(settings: dict[str, Any], error: type[Exception]) -> None:
    """Raise `error` naming the first setting that is NaN or infinite."""
    for name, value in settings.items():
        if non_finite(value):
            raise error(f"{name} must be a finite number, got {value!r}")


# -- progress ---------------------------------------------------------------------------------------


def quiet_libraries() -> None:
    """The caller's display is the progress (the CLI's bar, selftrain's lines): no tqdm bars from
    datasets / transformers / the hub, and no deprecation notices of their internals.
    Environment variables first, so libraries imported later start quiet."""
    import sys
    import warnings

    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].utils.disable_progress_bars()
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|trl|peft)\.")


# -- the output folder ---------------------------------------------------------------------------


def _lock_path(out: Path) -> Path:
    digest = hashlib.sha1(str(out.resolve()).encode()).hexdigest()[:16]
    return cache_root() / "locks" / f"train-{digest}.lock"


def _foreign_entries(out: Path) -> list[str]:
    """What in `out` a JOSH training did not write (empty for a folder of ours)."""
    names = sorted(p.name for p in out.iterdir())
    if any(name in JOSH_MARKERS for name in names):
        return []
    return names


def check_output(out: Path, db: Path | None) -> None:
    """Refuse an output that is not a folder a training may write (before anything is loaded)."""
    if out.exists() and not out.is_dir():
        what = "the database" if db is not None and db.exists() and out.resolve() == db.resolve() else "a file"
        raise TrainingConfigError(f"--out {out} is {what}, not a folder: give a new or empty folder")
    if db is not None and db.exists() and out.resolve() in (db.resolve(), *db.resolve().parents):
        raise TrainingConfigError(f"--out {out} would hold the database {db}: give another folder")
    if out.is_dir():
        foreign = _foreign_entries(out)
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise TrainingConfigError(
                f"--out {out} is not empty and holds no JOSH training ({shown}): give a new or empty "
                "folder (nothing in it was changed)"
            )


@contextmanager
def claim_output(out: Path, db: Path | None = None) -> Iterator[None]:
    """Check `out` (see `check_output`), create it and hold its lock for the block; raises
    TrainingBusy when another process trains into it."""
    check_output(out, db)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise TrainingConfigError(f"--out {out} cannot be created: {error.strerror or error}") from None
    busy = lambda owner: TrainingBusy(  # noqa: E731
        f"{out} is being trained into by {owner}; wait for it to finish or stop it "
        "(nothing in the folder was changed)")
    with exclusive_lock(_lock_path(out), busy):
        yield


def folder_in_use(out: str | Path) -> bool:
    """True while some process on this machine holds the training lock of `out`."""
    return lock_is_held(_lock_path(Path(out)))


def close_stale_trainings(database) -> list[str]:
    """Close as failed the 'running' trainings whose process is gone; returns their ids."""
    closed = []
    now = datetime.now(timezone.utc).replace(tzinfo=None)  # stored times are naive UTC
    for row in trainings.list_trainings(database):
        if row.status != "running" or folder_in_use(row.adapter_path):
            continue
        seconds = max(0.0, (now - row.created_at.replace(tzinfo=None)).total_seconds())
        trainings.finish_training(
            database, row.id, status="failed", seconds=row.seconds or seconds,
            error="interrupted: its process ended before the training finished",
        )
        closed.append(row.id)
    return closed


def publish_adapter(out: Path, staging: Path) -> None:
    """Move the finished adapter from `staging` into `out`, the manifest last: until it lands,
    `out` reads as incomplete (`adapter_problem`), never as an old adapter with new files."""
    (out / MANIFEST_FILE).unlink(missing_ok=True)
    for entry in sorted(staging.iterdir()):
        if entry.name == MANIFEST_FILE:
            continue
        target = out / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(entry, target)
    os.replace(staging / MANIFEST_FILE, out / MANIFEST_FILE)
    staging.rmdir()


def staging_dir(out: Path) -> Path:
    return out / STAGING_DIR


# -- after training ---------------------------------------------------------------------------------


def check_trained(model, records: list[dict[str, Any]]) -> None:
    """Raise TrainingDiverged when a logged loss or a trainable weight is NaN / infinite."""
    for record in records:
        for key in ("loss", "train_loss"):
            if key in record and (record[key] is None or non_finite(record[key])):
                raise TrainingDiverged(
                    f"the training diverged: {key} is not a finite number at step {record.get('step')} "
                    "(learning rate too high?); no adapter was saved"
                )
    import torch

    for name, parameter in model.named_parameters():
        if parameter.requires_grad and not bool(torch.isfinite(parameter.detach()).all()):
            raise TrainingDiverged(
                f"the training diverged: adapter weight {name} holds NaN or infinite values "
                "(learning rate too high?); no adapter was saved"
            )


# -- files --------------------------------------------------------------------------------------------


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


def disk_full_message(error: OSError, where: str | Path) -> str:
    name = error.filename or where
    return f"no space left on the device writing {name}: free some space and rerun (the training resumes)"


def check_database(path: Path) -> None:
    """Refuse a DuckDB file cut short before a training writes into it (DuckDB attaches a
    truncated copy for writing and its reads fail only later)."""
    from josh_core.storage.db import DatabaseDamaged

    problem = truncated_file_problem(path)
    if problem:
        raise DatabaseDamaged(f"{problem}; nothing was written to it")
