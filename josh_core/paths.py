"""Where fetched data, converted model weights and default databases live.

Everything fetched at run time is cached under one per-user directory, overridable with
environment variables so CI and tests can point elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_cache_dir


def cache_root() -> Path:
    """Root of every cache (`JOSH_CACHE_DIR`, default the per-user cache dir)."""
    return Path(os.environ.get("JOSH_CACHE_DIR") or user_cache_dir("josh-workbench"))


def data_dir() -> Path:
    """MultiWOZ databases, goal statistics and generated scenarios (`JOSH_DATA_DIR`)."""
    return Path(os.environ.get("JOSH_DATA_DIR") or cache_root() / "data")


def models_dir() -> Path:
    """Fetched model files and converted weights (`JOSH_MODELS_DIR`)."""
    return Path(os.environ.get("JOSH_MODELS_DIR") or cache_root() / "models")


def default_db_path() -> Path:
    """The DuckDB file used when a command gets no `--db` (`JOSH_DB`)."""
    return Path(os.environ.get("JOSH_DB") or "josh.duckdb")
