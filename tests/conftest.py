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


# -- the fast tier --------------------------------------------------------------------------
#
# `pytest -m "not slow"` (CONTRIBUTING.md, "Tests") leaves out every test marked `slow`: those
# that load a model, drive a browser, start Ray or play rollouts in a `josh` subprocess. In that
# run a test that loads a model in this process anyway fails, naming what it loaded, so the tier
# stays fast as tests are added: mark such a test `slow`. A test that uses a fixture starting
# Ray is slow by itself. The full run (`bash scripts/test.sh`) runs both.

# What loading a model means, by the function that does it (module, attribute). A test may
# call them to see them fail (a missing library, a bad path): only a load that succeeds counts.
_MODEL_LOADS = [
    ("josh_core.llm.hf_backend", "HFBackend.load"),
    ("josh_core.llm.vllm_backend", "VLLMBackend.load"),
    ("josh_core.llm.llamacpp_backend", "LlamaCppBackend.__init__"),
    ("josh_core.llm.llamacpp_batched", "LlamaCppBatchedBackend.__init__"),
    ("josh_core.train.model", "load_model"),
]


def _fast_tier(config: pytest.Config) -> bool:
    expression = (config.getoption("markexpr", "") or "").replace(" ", "")
    return "notslow" in expression


def _noted_when_it_loads(what: str, load, loads: list[str]):
    # Noted, and the test failed when it ends: a load often runs in a backend's worker thread,
    # where failing at once would not reach the test.
    def guarded(*args, **kwargs):
        result = load(*args, **kwargs)
        loads.append(what)
        return result

    return guarded


@pytest.fixture(autouse=True)
def _fast_tier_guard(request, monkeypatch):
    if not _fast_tier(request.config) or request.node.get_closest_marker("slow"):
        yield
        return
    import importlib

    loads: list[str] = []
    for module_name, attribute in _MODEL_LOADS:
        module = importlib.import_module(module_name)
        owner, _, name = attribute.rpartition(".")
        target = getattr(module, owner) if owner else module
        monkeypatch.setattr(target, name, _noted_when_it_loads(f"{module_name}.{attribute}", getattr(target, name),
                                                               loads))  # fmt: skip
    yield
    if loads:
        pytest.fail(f"loaded a model ({', '.join(sorted(set(loads)))}) in the fast tier (-m 'not slow'): "
                    "mark this test slow", pytrace=False)


# Fixtures that start what the fast tier leaves out: a test that uses one is `slow` by itself.
_SLOW_FIXTURES = {"ray_cluster"}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        if _SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
