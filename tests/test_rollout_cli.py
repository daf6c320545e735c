"""`josh rollout` as a real subprocess: kill it mid-run, resume it, and get the same database
as an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from josh_core.rollout import RolloutConfig, start_run
from josh_core.storage import reads
from josh_core.storage.db import Database
from rollout_fixtures import run_contents, write_scripts

JOSH = [str(Path(sys.executable).parent / "josh")]


def josh(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*JOSH, *args], capture_output=True, text=True, timeout=300, **kwargs)


@pytest.fixture()
def scripts(tmp_path, toolwoz_data):
    from josh_core.envs.toolwoz.scenarios import load_split

    return write_scripts(tmp_path, load_split("train", limit=3))


def rollout_args(scripts, db: Path) -> list[str]:
    scenario_file, agent_file, user_file = scripts
    return [
        "rollout", "--josh", "--scenario-file", str(scenario_file), "--agent", f"script:{agent_file}",
        "--user", f"script:{user_file}", "--max-turns", "7", "--seed", "5", "--db", str(db),
    ]


def wait_until_mid_run(db_path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    """Poll the database (as the app would) until the second conversation is under way."""
    db = Database(db_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the rollout finished before it could be interrupted"
        try:
            frame = reads.conversations_frame(db)
        except FileNotFoundError:  # the rollout has not created the file yet
            time.sleep(0.02)
            continue
        statuses = list(frame["status"])
        # node_count is set once a conversation starts (and grows after every step).
        if statuses[:2] == ["done", "running"] and frame.loc[1, "node_count"] >= 3:
            return
        time.sleep(0.02)
    raise AssertionError("the rollout never reached its second conversation")


@pytest.mark.slow
def test_killed_rollout_resumes_to_the_same_database(tmp_path, scripts):
    scenario_file, agent_file, user_file = scripts
    from josh_core.envs.toolwoz.scenarios import load_scenario_file

    # The uninterrupted reference, through the same function the command calls.
    reference_db = tmp_path / "reference.duckdb"
    config = RolloutConfig(josh=True, agent=f"script:{agent_file}", user=f"script:{user_file}", max_turns=7,
                           seed=5, scenario_file=str(scenario_file))
    reference_run = start_run(reference_db, load_scenario_file(scenario_file), config)

    killed_db = tmp_path / "killed.duckdb"
    process = subprocess.Popen([*JOSH, *rollout_args(scripts, killed_db)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        wait_until_mid_run(killed_db, process)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL

    db = Database(killed_db)
    (run,) = reads.list_runs(db)
    statuses = [c.status for c in reads.list_conversations(db, run_id=run.id)]
    assert statuses[0] == "done" and statuses[1] == "running" and statuses[2] == "pending"
    partial = reads.conversations_frame(db).loc[1, "node_count"]
    finished_before = reads.get_conversation(db, f"{run.id}:0").finished_at

    resumed = josh("rollout", "--resume", run.id, "--db", str(killed_db))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    lines = resumed.stdout.splitlines()
    assert lines[0] == f"run {run.id}: 3 conversations, 1 already done"
    assert not any(line.startswith("synth-train-0000") for line in lines)  # not redone
    assert any(line.startswith("synth-train-0001") and "reward 0.50" in line for line in lines)
    assert any(line.startswith("synth-train-0002") and "reward 0.00" in line for line in lines)
    assert "2 conversations played (1 done before): average reward 0.250, success 0/2" in resumed.stdout
    assert lines[-1] == f"run {run.id} in {killed_db}"
    assert reads.get_conversation(db, f"{run.id}:0").finished_at == finished_before
    assert reads.get_run(db, run.id).status == "done"

    assert partial < reads.get_conversation(db, f"{run.id}:1").node_count
    assert run_contents(killed_db, run.id) == run_contents(reference_db, reference_run.run_id)


@pytest.mark.slow  # plays rollouts in a josh subprocess
def test_a_run_in_play_cannot_be_resumed_by_a_second_process(tmp_path, scripts):
    """While one process plays a run, `--resume` from another is refused (nothing is touched);
    once the first is gone, the resume goes ahead."""
    from josh_core.storage.locks import RunBusy, run_lock

    scenario_file, agent_file, user_file = scripts
    db_path = tmp_path / "busy.duckdb"
    config = RolloutConfig(josh=True, agent=f"script:{agent_file}", user=f"script:{user_file}", max_turns=3,
                           seed=5, scenario_file=str(scenario_file))
    from josh_core.envs.toolwoz.scenarios import load_scenario_file

    run = start_run(db_path, load_scenario_file(scenario_file)[:1], config)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from josh_core.storage.locks import run_lock\n"
         "with run_lock(sys.argv[1], sys.argv[2]):\n    print('held', flush=True); time.sleep(120)",
         str(db_path), run.run_id],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        refused = josh("rollout", "--resume", run.run_id, "--db", str(db_path))
        assert refused.returncode == 1
        assert f"run {run.run_id} is being played by process {holder.pid}" in refused.stderr
        with pytest.raises(RunBusy):
            with run_lock(db_path, run.run_id):
                pass
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert reads.get_run(Database(db_path), run.run_id).status == "done"  # untouched
    resumed = josh("rollout", "--resume", run.run_id, "--db", str(db_path))
    assert resumed.returncode == 0, resumed.stderr
    assert "1 already done" in resumed.stdout
