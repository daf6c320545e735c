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
    assert clean[(0, "eval")]["result"]["conversations"] == 2
    if clean[(1, "export-sft")]["result"]["rows"] == 0:
        # A barely warm-started model rarely reaches a goal in two turns: nothing to train on is
        # recorded, and the round's agent stays the warm start (test_trained_round_* covers training).
        assert clean[(1, "train-sft")]["result"] == clean[(1, "eval-sft")]["result"] == {
            "skipped": "the export has no rows"}
        assert [r["round"] for r in result["rounds"]] == [0]
    else:
        assert clean[(1, "eval-sft")]["result"]["conversations"] == 2
    # The stored result reads back the same without running anything (what the app shows).
    summary = subprocess.run(josh("selftrain", "--experiment", "clean", "--db", str(db), "--summary", "--json"),
                             capture_output=True, text=True, env=env, timeout=600)
    assert summary.returncode == 0, summary.stderr[-2000:]
    stored = json.loads(summary.stdout)
    assert stored["rounds"] == result["rounds"] and stored["comparisons"] == result["comparisons"]

    # The same experiment stopped by SIGTERM once its round-1 rollout has started, then run again.
    proc = subprocess.Popen(selftrain_args(db, "killed"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=env)
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
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    # One line saying how to go on, no traceback (it used to end in `RunInterrupted` raised).
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "Traceback" not in stderr and "interrupted by SIGTERM" in stderr and "resume" in stderr, stderr[-3000:]
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


def test_trained_round_continues_the_warm_start_and_is_evaluated_on_the_same_scenarios(tmp_path):
    """The training branch of a round, made certain: JOSH rollouts by the oracle (so the export
    has rows), SFT continuing the warm-start adapter, and the trained agent evaluated on the
    starting agent's scenarios and seeds."""
    from josh_core.train.selftrain import Selftrain, SelftrainConfig

    class OracleRollouts(Selftrain):
        def _rollout_config(self, agent, *, josh):
            config = super()._rollout_config(agent, josh=josh)
            return config.model_copy(update={"agent": "oracle", "style": "compact"}) if josh else config

    config = SelftrainConfig(experiment="t", warm_start=2, train_limit=2, eval_limit=2, beam=2, max_turns=3,
                             eval_max_turns=2, kinds=["sft"], concurrency=2,
                             train_overrides={"sft": {"max_steps": 1}}, warm_start_overrides={"max_steps": 1})
    result = OracleRollouts(config, tmp_path / "st.duckdb").run()
    stages = stage_store.get_stages(Database(tmp_path / "st.duckdb", read_only=True), "t")
    assert stages[(1, "rollout")]["result"]["with_goal"] >= 1
    assert stages[(1, "export-sft")]["result"]["rows"] >= 1
    warm = stages[(0, "warmstart-train")]["result"]["adapter"]
    trained = stages[(1, "train-sft")]["result"]["adapter"]
    assert Path(trained, "adapter_config.json").exists() and trained != warm
    training = json.loads(Path(trained, "josh_training.json").read_text())
    assert training["base"] == f"embedded@{warm}"  # round 1 continued the warm-start adapter
    assert stages[(1, "eval-sft")]["result"]["agent"] == f"embedded@{trained}"
    database = Database(tmp_path / "st.duckdb", read_only=True)
    runs = [stages[(0, "eval")]["result"]["run_id"], stages[(1, "eval-sft")]["result"]["run_id"]]
    scenario_sets = [sorted(c.scenario_id for c in reads.list_conversations(database, run_id=r)) for r in runs]
    assert scenario_sets[0] == scenario_sets[1] and len(scenario_sets[0]) == 2
    assert [r.round for r in result.rounds] == [0, 1] and result.comparisons[0]["n"] == 2
