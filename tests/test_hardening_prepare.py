"""Issue item 3: `josh data prepare --from DIR` is atomic. Everything is read, validated,
converted and generated aside; the cache is swapped only when all of it succeeded, so a bad
database file or pickle leaves the prepared data (and the scenario ids' contents) as they
were."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hardening_fixtures import josh, no_traceback
from josh_core.envs.toolwoz.build.fetch import DB_FILES, GOAL_MODEL_FILE


def _raw_inputs() -> dict[str, bytes]:
    from josh_core.envs.toolwoz import store
    from josh_core.envs.toolwoz.build.fetch import SDIST_NAME, read_sdist_members

    sdist = store.downloads_dir() / SDIST_NAME
    if not sdist.exists():
        pytest.skip("the convlab sdist is not cached")
    return read_sdist_members(sdist)


def _write_inputs(folder: Path, raw: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True)
    for name, data in raw.items():
        (folder / name).write_bytes(data)
    return folder


def _snapshot(data_dir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(data_dir)): p.read_bytes()
        for p in sorted(data_dir.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


@pytest.mark.slow
def test_a_bad_input_leaves_the_prepared_data_as_it_was(tmp_path, toolwoz_data):
    raw = _raw_inputs()
    env = {"JOSH_DATA_DIR": str(tmp_path / "data")}
    good = _write_inputs(tmp_path / "good", raw)
    done = josh("data", "prepare", "--from", str(good), env=env)
    assert done.returncode == 0, done.stderr
    before = _snapshot(tmp_path / "data")
    assert any(name.startswith("toolwoz-synth/") for name in before)
    shown = josh("toolwoz", "show", "synth-train-0000", "--json", env=env).stdout

    # A valid but different restaurant table, then a broken train table (read last).
    restaurants = json.loads(raw["restaurant_db.json"])
    changed = {**raw, "restaurant_db.json": json.dumps(restaurants[1:]).encode()}
    bad_train = _write_inputs(tmp_path / "bad-train", {**changed, "train_db.json": b"[{\"trainID\": "})
    # ... and a pickle that is not ConvLab's goal model, after four good tables.
    bad_pickle = _write_inputs(tmp_path / "bad-pickle", {**changed, GOAL_MODEL_FILE: b"\x80\x04K\x01."})
    for folder, complaint in ((bad_train, "train_db.json"), (bad_pickle, GOAL_MODEL_FILE)):
        failed = josh("data", "prepare", "--from", str(folder), env=env)
        assert failed.returncode == 1 and no_traceback(failed), failed.stderr
        assert complaint in failed.stderr
        assert _snapshot(tmp_path / "data") == before, f"the cache changed after a failed prepare from {folder.name}"
        # Nothing is regenerated behind the user's back: the same ids mean the same scenarios.
        assert josh("toolwoz", "show", "synth-train-0000", "--json", env=env).stdout == shown
        assert _snapshot(tmp_path / "data") == before
    leftovers = [p.name for p in (tmp_path / "data").iterdir() if ".new" in p.name or ".old" in p.name]
    assert leftovers == []

    # A good prepare with different inputs does replace everything, together.
    changed_dir = _write_inputs(tmp_path / "changed", changed)
    done = josh("data", "prepare", "--from", str(changed_dir), env=env)
    assert done.returncode == 0, done.stderr
    after = _snapshot(tmp_path / "data")
    assert after["multiwoz/restaurant_db.json"] != before["multiwoz/restaurant_db.json"]
    assert json.loads(after["toolwoz-synth/manifest.json"])["inputs_sha256"] != json.loads(
        before["toolwoz-synth/manifest.json"]
    )["inputs_sha256"]
    assert all(name in after for name in before)
    assert set(DB_FILES) <= {Path(name).name for name in after}
