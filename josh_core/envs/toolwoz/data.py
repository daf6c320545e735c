"""The prepared ToolWOZ data as the runtime reads it, and the one door to making it.

    load_database() / load_db()        the databases (indexed / plain rows), cached in memory
    load_goal_model()                  the goal statistics
    ensure_prepared()                  prepare only what is missing (no-op once complete)
    prepare(...), prepare_official(...)  `josh data prepare` (see build/prepare.py, build/official.py)

Making the data (fetching, converting, generating toolwoz-synth, reading official files) is
build-time code in `build/`, which imports the runtime modules and never the other way round.
This module is the one place the runtime reaches it, with imports inside the three functions
that make data, so reading prepared data never loads the build code
(`tests/test_env_imports.py` checks both).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from josh_core.envs.base import DataUnavailable, Progress
from josh_core.envs.toolwoz import store
from josh_core.envs.toolwoz.db import Database
from josh_core.envs.toolwoz.goal_model import GoalModel
from josh_core.envs.toolwoz.types import DOMAINS
from josh_core.paths import data_dir

__all__ = [
    "DataUnavailableError",
    "ensure_prepared",
    "inputs_ready",
    "load_database",
    "load_db",
    "load_goal_model",
    "prepare",
    "prepare_official",
]


class DataUnavailableError(DataUnavailable):
    """The inputs could be neither found in the cache, nor fetched, nor read from --from."""


# ---------------------------------------------------------------------------- reading
def inputs_ready() -> bool:
    """The converted databases and goal model are in the data dir."""
    folder = store.multiwoz_dir()
    return all((folder / name).exists() for name in (*store.DB_FILES, store.GOAL_MODEL_JSON))


@lru_cache(maxsize=4)
def database_at(folder: str) -> Database:
    """The indexed databases stored in `folder` (the data dir's, or a build's staging folder)."""
    tables: dict[str, list[dict[str, Any]]] = {}
    for domain, name in zip(DOMAINS, store.DB_FILES):
        tables[domain] = json.loads((Path(folder) / name).read_text())
    return Database(tables)


@lru_cache(maxsize=4)
def goal_model_at(folder: str) -> GoalModel:
    return GoalModel.model_validate_json((Path(folder) / store.GOAL_MODEL_JSON).read_text())


def clear_memory_caches() -> None:
    """Forget the databases and goal models read so far (after the files were replaced)."""
    database_at.cache_clear()
    goal_model_at.cache_clear()


def _require_inputs() -> str:
    if not inputs_ready():
        ensure_prepared()
    return str(store.multiwoz_dir())


def load_database() -> Database:
    """The indexed databases (prepares the data first if needed)."""
    return database_at(_require_inputs())


def load_db() -> dict[str, list[dict[str, Any]]]:
    """domain -> rows, cleaned (shared; do not mutate)."""
    return load_database().tables


def load_goal_model() -> GoalModel:
    return goal_model_at(_require_inputs())


# ---------------------------------------------------------------------------- making (build/)
_READY: set[str] = set()  # data dirs found complete in this process


def ensure_prepared() -> None:
    """Prepare whatever is missing (no-op, and no network, once the cache is complete).
    The first call in a process imports the build code to check the stored splits are
    current (same generator version, seed and inputs)."""
    key = str(data_dir())
    if key in _READY:
        return
    from josh_core.envs.toolwoz.build.prepare import prepare_missing

    prepare_missing()
    _READY.add(key)


def prepare(from_path: Path | None = None, progress: Progress | None = None, force: bool = False) -> dict[str, int]:
    """Fetch/verify/convert the inputs if needed, generate toolwoz-synth if missing or stale;
    the split counts (build/prepare.py)."""
    from josh_core.envs.toolwoz.build import prepare as build

    return build.prepare(from_path=from_path, progress=progress, force=force)


def prepare_official(folder: Path, db: Database | None = None) -> dict[str, int]:
    """Store the official splits read from `folder`; the split counts (build/official.py)."""
    from josh_core.envs.toolwoz.build import official

    return official.prepare_official(folder, db)
