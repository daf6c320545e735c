"""Shared pytest fixtures.

Data: the MultiWOZ inputs and toolwoz-synth splits are prepared once into the data dir
(`JOSH_DATA_DIR`, else the per-user cache) and reused by every later run; the first run
fetches the convlab sdist from PyPI with pip.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def toolwoz_data() -> Path:
    """The prepared data dir (inputs converted, toolwoz-synth splits generated)."""
    from josh_core.paths import data_dir
    from josh_core.envs.toolwoz.data import ensure_prepared

    ensure_prepared()
    return data_dir()


@pytest.fixture(scope="session")
def toolwoz_db(toolwoz_data):
    """The indexed MultiWOZ databases."""
    from josh_core.envs.toolwoz.data import load_database

    return load_database()
