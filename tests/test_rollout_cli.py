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

from josh_core.storage import reads
from josh_core.storage.db import Database
from rollout_fixtures import run_contents, write_scripts

JOSH = [str(Path(sys.executable).parent / "josh")]


def josh(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*JOSH, *args], capture_output=True, text=True, timeout=300, **kwargs)


@pytest.fixture()
def scripts(tmp_path, toolwoz_data):
    from josh_core.toolwoz.scenarios import load_split

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
        if len(frame) == 3 and frame.loc[0, "status"] == "done" and frame.loc[1, "status"] == "running" \
                and (frame.loc[1, "node_count"] or 0) >= 3:
            return
        time.sleep(0.02)
    raise AssertionError("the rollout never reached its second conversation")


@pytest.mark.slow
def test_killed_rollout_resumes_to_the_same_database(tmp_path, scripts):
    reference_db = tmp_path / "reference.duckdb"
    done = josh(*rollout_args(scripts, reference_db))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("synth-train-0000") and "reward 1.00" in line for line in lines)
    assert any(line.startswith("synth-train-0001") and "reward 0.50" in line for line in lines)
    assert "average reward 0.500" in done.stdout
    (reference_run,) = reads.list_runs(Database(reference_db))
    assert f"run {reference_run.id} in {reference_db}" in done.stdout

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
    assert "3 conversations, 1 already done" in resumed.stdout
    assert "synth-train-0000" not in resumed.stdout.split("already done", 1)[1]  # not redone
    assert reads.get_conversation(db, f"{run.id}:0").finished_at == finished_before
    assert reads.get_run(db, run.id).status == "done"

    assert partial < reads.get_conversation(db, f"{run.id}:1").node_count
    assert run_contents(killed_db, run.id) == run_contents(reference_db, reference_run.id)
