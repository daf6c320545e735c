"""`josh selftrain` end to end on a tiny configuration with the embedded model: every stage is
stored, and a run killed in the middle finishes the same when the command is run again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from josh_core.storage import reads
from josh_core.storage import stages as stage_store
from josh_core.storage.db import Database

pytestmark = pytest.mark.slow

TINY = ["--warm-start", "3", "--train-limit", "2", "--eval-limit", "2", "--beam", "2", "--branching", "2",
        "--max-turns", "2", "--eval-max-turns", "2", "--max-steps", "1", "--concurrency", "2"]
EXPECTED_STAGES = [
    (0, "warmstart-rollout"), (0, "warmstart-export"), (0, "warmstart-train"), (0, "eval"),
    (1, "rollout"), (1, "export-sft"), (1, "train-sft"), (1, "eval-sft"),
]


def josh(*args: str) -> list[str]:
    return [sys.executable, "-m", "josh_core", *args]


def selftrain_args(db: Path, experiment: str) -> list[str]:
    return josh("selftrain", "--experiment", experiment, "--db", str(db), *TINY)


def stages_of(db: Path, experiment: str) -> dict:
    return stage_store.get_stages(Database(db, read_only=True), experiment)


def test_selftrain_runs_every_stage_and_a_killed_run_finishes_the_same(tmp_path):
    db = tmp_path / "st.duckdb"
    env = {**os.environ, "JOSH_TORCH_THREADS": "1"}

    # An uninterrupted run.
    done = subprocess.run(selftrain_args(db, "clean") + ["--json"], capture_output=True, text=True, env=env,
                          timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    clean = stages_of(db, "clean")
    assert [key for key in EXPECTED_STAGES if clean.get(key, {}).get("status") == "done"] == EXPECTED_STAGES
    warm = clean[(0, "warmstart-rollout")]["result"]
    assert warm["conversations"] == 3 and warm["with_goal"] >= 1  # the oracle reaches goals
    assert clean[(0, "warmstart-export")]["result"]["rows"] >= 1
    adapter = Path(clean[(0, "warmstart-train")]["result"]["adapter"])
    assert (adapter / "adapter_config.json").exists()
    assert clean[(0, "eval")]["result"]["agent"] == f"embedded@{adapter}"
    assert clean[(1, "rollout")]["result"]["conversations"] == 2
    assert clean[(0, "eval")]["result"]["conversations"] == clean[(1, "eval-sft")]["result"]["conversations"] == 2
    # The trained agent continues from the warm start and is evaluated on the same scenarios.
    evals = [clean[(0, "eval")]["result"]["run_id"], clean[(1, "eval-sft")]["result"]["run_id"]]
    database = Database(db, read_only=True)
    scenario_sets = [sorted(c.scenario_id for c in reads.list_conversations(database, run_id=r)) for r in evals]
    assert scenario_sets[0] == scenario_sets[1]
    assert [r["round"] for r in result["rounds"]] == [0, 1] and result["comparisons"][0]["n"] == 2
    trainings = {t["id"] if isinstance(t, dict) else t for t in [clean[(1, "train-sft")]["result"]["training_id"]]}
    assert trainings

    # The same experiment killed once its round-1 rollout has started, then run again.
    proc = subprocess.Popen(selftrain_args(db, "killed"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env)
    deadline = time.monotonic() + 1200
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:
                if stages_of(db, "killed").get((1, "rollout"), {}).get("status") == "running":
                    break
            except Exception:  # the file is being written; try again
                pass
            time.sleep(0.5)
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    interrupted = stages_of(db, "killed")
    assert interrupted[(1, "rollout")]["status"] == "running"
    run_id = interrupted[(1, "rollout")]["result"]["run_id"]
    finished_before = {key for key, s in interrupted.items() if s["status"] == "done"}

    again = subprocess.run(selftrain_args(db, "killed"), capture_output=True, text=True, env=env, timeout=1800)
    assert again.returncode == 0, again.stderr[-3000:]
    for key in finished_before - {(0, "config")}:
        assert f"round {key[0]} {key[1]}: skipped" in again.stdout  # finished stages are not redone
    resumed = stages_of(db, "killed")
    assert [key for key in EXPECTED_STAGES if resumed.get(key, {}).get("status") == "done"] == EXPECTED_STAGES
    assert resumed[(1, "rollout")]["result"]["run_id"] == run_id  # the stored run was resumed
    for key in EXPECTED_STAGES:
        a, b = clean[key]["result"], resumed[key]["result"]
        for field in ("conversations", "rows"):
            assert a.get(field) == b.get(field), (key, field)


def test_selftrain_refuses_other_settings_for_an_existing_experiment(tmp_path):
    db = tmp_path / "st.duckdb"
    from josh_core.train.selftrain import Selftrain, SelftrainConfig

    Selftrain(SelftrainConfig(experiment="e", train_limit=2), db)._check_config()
    with pytest.raises(ValueError, match="train_limit"):
        Selftrain(SelftrainConfig(experiment="e", train_limit=3), db)._check_config()
    Selftrain(SelftrainConfig(experiment="other", train_limit=3), db)._check_config()  # a new name is fine
