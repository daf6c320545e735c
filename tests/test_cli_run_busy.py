"""A run another process is playing (RunBusy) ends `josh selftrain` with a one-line error and
exit code 1, not a traceback (`josh rollout --resume`: test_rollout_cli)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from josh_core.storage import stages as stage_store
from josh_core.storage.db import Database
from josh_core.storage.locks import run_lock


@pytest.mark.slow  # plays rollouts in a josh subprocess
def test_selftrain_on_a_run_in_play_fails_cleanly(tmp_path, toolwoz_data):
    db_path = tmp_path / "busy.duckdb"
    # The experiment's warm-start rollout was started as run-busy; this process plays it now.
    stage_store.start_stage(Database(db_path), "busy", 0, "warmstart-rollout", {"run_id": "run-busy"})
    args = [sys.executable, "-m", "josh_core", "selftrain", "--experiment", "busy", "--db", str(db_path),
            "--warm-start", "1", "--train-limit", "1", "--eval-limit", "1", "--max-turns", "2",
            "--eval-max-turns", "2", "--max-steps", "1"]
    with run_lock(db_path, "run-busy"):
        done = subprocess.run(args, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "JOSH_TORCH_THREADS": "1"})
    assert done.returncode == 1, done.stderr[-2000:]
    assert f"error: run run-busy is being played by process {os.getpid()}" in done.stderr
    assert "Traceback" not in done.stderr and "RunBusy" not in done.stderr
