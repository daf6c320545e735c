"""Distributed rollouts on a real Ray cluster (`josh rollout --ray ADDRESS`).

The cluster is two `ray start --block` processes on this machine, a head and a second node, one
CPU each, so the run's two workers sit on different nodes. Ray 2.60 advertises the machine's
interface address even for `--node-ip-address=127.0.0.1`, so `scripts/test.sh` runs this module
in a network namespace of its own with only loopback (`unshare --net`), where the cluster lives
on 127.0.0.1 alone. The rollouts are
script-policy JOSH conversations whose script files wait 0.1 s per turn, so a worker can be
killed in the middle of one. What is checked is what a user sees: the database of the
distributed run, with a worker killed mid-conversation, or with its driver killed and the run
resumed, equals the database of a single-process run with the same seed.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import ray  # noqa: F401 - the [ray] extra is part of the test install: never skipped

from josh_core.cli import with_optional_values
from josh_core.rollout import RolloutConfig, start_run
from josh_core.storage import reads
from josh_core.storage.db import Database
from rollout_fixtures import run_contents, write_scripts

BIN = Path(sys.executable).parent
JOSH = [str(BIN / "josh")]
RAY = str(BIN / "ray")
LATENCY = 0.1  # seconds per policy turn: a conversation lasts a few seconds
SCENARIOS = 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(log: Path, text: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text(errors="replace"):
            return
        if process.poll() is not None:
            raise AssertionError(f"ray start ended early:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.25)
    raise AssertionError(f"ray start did not finish in {timeout} s:\n{log.read_text(errors='replace')[-3000:]}")


def _processes_under(folder: str) -> list[int]:
    """Processes of this cluster (their command lines name its temporary folder)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if folder in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


@pytest.fixture(scope="module")
def ray_cluster():
    """A head and a second node on this machine; yields (address, environment for drivers)."""
    folder = tempfile.mkdtemp(prefix="josh-ray-", dir="/tmp")  # short: Ray's socket paths live here
    port = _free_port()
    address = f"127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16), RAY_USAGE_STATS_ENABLED="0")
    common = ["--block", "--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
    head_log, node_log = Path(folder) / "head.log", Path(folder) / "node.log"
    started: list[subprocess.Popen] = []
    try:
        head = subprocess.Popen(
            [RAY, "start", "--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={folder}", *common],
            stdout=head_log.open("w"), stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        started.append(head)
        _wait_for(head_log, "Ray runtime started", head)
        node = subprocess.Popen([RAY, "start", f"--address={address}", *common],
                                stdout=node_log.open("w"), stderr=subprocess.STDOUT, env=env)  # fmt: skip
        started.append(node)
        _wait_for(node_log, "Ray runtime started", node)
        yield address, env
    finally:
        for process in reversed(started):  # the node first, then the head
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=45)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        for pid in _processes_under(folder):  # anything of this cluster that outlived its node
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def scripts(tmp_path_factory, toolwoz_data):
    from josh_core.envs.toolwoz.scenarios import load_split

    folder = tmp_path_factory.mktemp("ray-scripts")
    scenario_file, agent_file, user_file = write_scripts(folder, load_split("train", limit=SCENARIOS))
    for path in (agent_file, user_file):
        path.write_text(json.dumps({**json.loads(path.read_text()), "latency": LATENCY}))
    return scenario_file, agent_file, user_file


@pytest.fixture(scope="module")
def reference(tmp_path_factory, scripts):
    """The single-process run the distributed runs must equal."""
    from josh_core.envs.toolwoz.scenarios import load_scenario_file

    scenario_file, agent_file, user_file = scripts
    db_path = tmp_path_factory.mktemp("ray-reference") / "reference.duckdb"
    config = RolloutConfig(josh=True, agent=f"script:{agent_file}", user=f"script:{user_file}", max_turns=7,
                           seed=5, scenario_file=str(scenario_file))  # fmt: skip
    run = start_run(db_path, load_scenario_file(scenario_file), config)
    assert all(c.status == "done" for c in run.conversations)
    return run_contents(db_path, run.run_id)


def rollout_args(scripts, db: Path, address: str) -> list[str]:
    scenario_file, agent_file, user_file = scripts
    return [
        "rollout", "--josh", "--scenario-file", str(scenario_file), "--agent", f"script:{agent_file}",
        "--user", f"script:{user_file}", "--max-turns", "7", "--seed", "5", "--db", str(db),
        "--ray", address, "--ray-workers", "2",
    ]  # fmt: skip


def only_run(db_path: Path) -> str:
    (run,) = reads.list_runs(Database(db_path))
    return run.id


def wait_for_conversation(db_path: Path, driver: subprocess.Popen, *, position: int, seen: set[str],
                          timeout: float = 120):  # fmt: skip
    """Poll the database (as the app does) until the conversation at `position` is under way on a
    worker; the worker labels met on the way go into `seen`."""
    db = Database(db_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert driver.poll() is None, f"the run ended first: {driver.communicate()[1][-3000:]}"
        try:
            conversations = reads.list_conversations(db)
        except Exception:  # noqa: BLE001 - the driver has not created the file or the run yet
            time.sleep(0.05)
            continue
        seen.update(c.worker for c in conversations if c.worker)
        target = next((c for c in conversations if c.position == position), None)
        if target is not None and target.status == "running" and target.worker and (target.node_count or 0) >= 3:
            return target
        time.sleep(0.05)
    raise AssertionError(f"conversation {position} never got under way")


@pytest.mark.slow
def test_a_killed_worker_costs_only_a_replay_and_the_database_equals_a_single_process_run(
    tmp_path, ray_cluster, scripts, reference
):
    address, env = ray_cluster
    db_path = tmp_path / "ray.duckdb"
    driver = subprocess.Popen([*JOSH, *rollout_args(scripts, db_path, address)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    seen: set[str] = set()
    try:
        victim = wait_for_conversation(db_path, driver, position=2, seen=seen)
        pid = int(re.search(r"pid (\d+)", victim.worker).group(1))
        os.kill(pid, signal.SIGKILL)  # the worker process dies in the middle of the conversation
        out, err = driver.communicate(timeout=180)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.communicate()
    assert driver.returncode == 0, err[-3000:]
    killed = victim.worker.split(" ", 1)[0]
    assert f"worker {victim.worker}: lost while playing {victim.scenario_id}; it restarts on another worker" in out

    db = Database(db_path)
    run_id = only_run(db_path)
    replayed = reads.get_conversation(db, victim.id)
    assert replayed.status == "done" and replayed.worker and not replayed.worker.startswith(killed + " ")
    nodes = {re.search(r"node (\w+)", label).group(1) for label in seen | {replayed.worker}}
    assert len(nodes) == 2, seen  # the workers ran on both nodes of the cluster
    assert run_contents(db_path, run_id) == reference
    assert reads.get_run(db, run_id).status == "done"
    progress = reads.worker_progress(db, run_id)
    assert int(progress["done"].sum()) == SCENARIOS and int(progress["running"].sum()) == 0


@pytest.mark.slow
def test_a_killed_driver_resumes_on_ray_to_the_same_database(tmp_path, ray_cluster, scripts, reference):
    address, env = ray_cluster
    db_path = tmp_path / "ray.duckdb"
    driver = subprocess.Popen([*JOSH, *rollout_args(scripts, db_path, address)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        wait_for_conversation(db_path, driver, position=2, seen=set())
        os.kill(driver.pid, signal.SIGKILL)
    finally:
        driver.wait(timeout=60)
    assert driver.returncode == -signal.SIGKILL
    run_id = only_run(db_path)
    statuses = [c.status for c in reads.list_conversations(Database(db_path), run_id=run_id)]
    assert "running" in statuses and statuses.count("done") < SCENARIOS  # killed mid-run

    resumed = subprocess.run([*JOSH, "rollout", "--resume", run_id, "--db", str(db_path), "--ray", address],
                             capture_output=True, text=True, timeout=180, env=env)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{statuses.count('done')} already done" in resumed.stdout
    assert run_contents(db_path, run_id) == reference


@pytest.mark.slow
def test_the_launch_page_starts_a_run_on_ray_and_shows_each_worker(tmp_path, ray_cluster, scripts, monkeypatch):
    """The Launch page (Streamlit's AppTest: the real page without a browser) starts a rollout on
    the cluster and follows it by worker, from the database, as it does a local run."""
    from streamlit.testing.v1 import AppTest

    address, env = ray_cluster
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):  # the launched process joins the cluster
        monkeypatch.setenv(name, env[name])
    _, agent_file, user_file = scripts
    db_path = tmp_path / "app.duckdb"
    app = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=120)
    app.query_params["db"] = str(db_path)
    app.run()
    app.switch_page("app_pages/launch.py")
    app.run()

    def field(kind: str, label: str):
        return next(widget for widget in getattr(app, kind) if widget.label == label)

    field("text_input", "Agent SPEC").input(f"script:{agent_file}")
    field("text_input", "User SPEC").input(f"script:{user_file}")
    field("number_input", "Scenarios").set_value(4)
    field("number_input", "Max turns").set_value(3)
    field("text_input", "Ray cluster (optional)").input(address)
    field("number_input", "Ray workers").set_value(2)
    next(button for button in app.button if button.label == "Start").click()
    app.run()
    launched = app.session_state["launched"]
    assert launched["args"][-4:] == ["--ray", address, "--ray-workers", "2"]
    assert launched["process"].wait(timeout=180) == 0, Path(launched["log"]).read_text()[-3000:]
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    assert "2 Ray workers" in [caption.value for caption in app.caption]
    workers = app.dataframe[0].value
    assert len(workers) == 2 and int(workers["done"].sum()) == 4 and int(workers["running"].sum()) == 0
    assert all(re.match(r"w\d+ on .* \(node \w+, pid \d+\)$", label) for label in workers["worker"])


@pytest.mark.slow
def test_the_selftrain_rollout_stage_plays_on_ray(tmp_path, ray_cluster, scripts, reference, monkeypatch):
    """`SelftrainConfig.ray_address` sends the JOSH rollout stage to the cluster (this process is
    the driver here); the address is where, not what: a rerun may change it."""
    from josh_core.envs.toolwoz.scenarios import load_scenario_file
    from josh_core.train.selftrain import Selftrain, SelftrainConfig

    address, env = ray_cluster
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
        monkeypatch.setenv(name, env[name])
    scenario_file, agent_file, user_file = scripts
    db_path = tmp_path / "selftrain.duckdb"
    loop = Selftrain(SelftrainConfig(experiment="ray", ray_address=address), db_path)
    loop._check_config()
    Selftrain(SelftrainConfig(experiment="ray"), db_path)._check_config()  # the same experiment, run here
    config = RolloutConfig(josh=True, agent=f"script:{agent_file}", user=f"script:{user_file}", max_turns=7,
                           seed=5, scenario_file=str(scenario_file))  # fmt: skip
    result = loop._play(load_scenario_file(scenario_file), config, loop.config.ray_address)({"run_id": "run-ray"})
    assert result["conversations"] == SCENARIOS and result["failed"] == 0
    conversations = reads.list_conversations(Database(db_path), run_id="run-ray")
    assert all(c.worker and c.worker.startswith("w") for c in conversations)
    assert run_contents(db_path, "run-ray") == reference


def test_a_bare_ray_flag_means_a_local_ray_instance():
    assert with_optional_values(["rollout", "--ray"]) == ["rollout", "--ray", "local"]
    assert with_optional_values(["rollout", "--ray", "--limit", "3"]) == ["rollout", "--ray", "local", "--limit", "3"]
    assert with_optional_values(["eval", "--ray", "10.0.0.5:6379"]) == ["eval", "--ray", "10.0.0.5:6379"]
    assert with_optional_values(["rollout", "--", "--ray"]) == ["rollout", "--", "--ray"]


@pytest.mark.slow  # plays rollouts in a josh subprocess
def test_ray_options_are_checked_before_anything_starts(tmp_path):
    result = subprocess.run([*JOSH, "rollout", "--ray-workers", "2", "--db", str(tmp_path / "x.duckdb")],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode != 0 and "--ray-workers and --ray-endpoints need --ray" in result.stderr
    result = subprocess.run([*JOSH, "rollout", "--ray", "--ray-workers", "0", "--db", str(tmp_path / "x.duckdb")],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode != 0 and "--ray-workers: at least 1" in result.stderr
    assert not (tmp_path / "x.duckdb").exists()
