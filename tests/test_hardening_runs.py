"""Issue item 9: a dead endpoint stops the run early (resumably), an unknown `--run` is an
error, interrupted runs are marked, and secrets are never stored."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time

import pytest

from hardening_fixtures import (
    JOSH, ErrorServer, default_signals, invoke, josh, no_traceback, scenario_dicts, simple_scripts, stored_run,
)
from josh_core.rollout import RolloutConfig, resume_run, start_run
from josh_core.storage import reads
from josh_core.storage.db import Database
from josh_core.envs.toolwoz.types import Scenario

SECRET = "sk-hardening-0123456789abcdef"


def _scenarios(n: int) -> list[Scenario]:
    return [Scenario.model_validate(s) for s in scenario_dicts(n)]


def _dead_url() -> str:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def test_a_dead_endpoint_stops_the_run_after_consecutive_connection_failures(tmp_path, monkeypatch, toolwoz_data):
    from josh_core.policies.factory import AgentOptions, build_agent

    monkeypatch.setenv("JOSH_MAX_CONNECTION_FAILURES", "2")
    scenarios = _scenarios(5)
    _, agent_file, user_file = simple_scripts(tmp_path, [s.model_dump(mode="json") for s in scenarios])
    dead = build_agent("openai:m", AgentOptions(base_url=_dead_url(), backends={"openai": {"max_retries": 0}}))
    config = RolloutConfig(agent="openai:m", user=f"script:{user_file}", max_turns=2)
    db_path = tmp_path / "dead.duckdb"
    from josh_core.policies.script import ScriptAgent, ScriptUser

    result = start_run(db_path, scenarios, config, agent=dead, user=ScriptUser.from_file(user_file))

    db = Database(db_path)
    statuses = [c.status for c in reads.list_conversations(db, run_id=result.run_id)]
    assert statuses == ["failed", "failed", "pending", "pending", "pending"]
    assert result.stopped and "2 conversations in a row" in result.stopped
    assert reads.get_run(db, result.run_id).status == "stopped"

    # The endpoint is back (here: a script agent): the run resumes where it stopped.
    resumed = resume_run(db_path, result.run_id, agent=ScriptAgent.from_file(agent_file),
                         user=ScriptUser.from_file(user_file))
    assert [c.status for c in resumed.conversations] == ["done"] * 5
    assert reads.get_run(db, result.run_id).status == "done"


def test_an_unknown_run_is_an_error(tmp_path, toolwoz_data):
    db_path, _ = stored_run(tmp_path)
    out = tmp_path / "x.jsonl"
    result = invoke("export", "--db", str(db_path), "--kind", "sft", "--out", str(out), "--run", "no-such-run")
    assert result.exit_code == 1 and no_traceback(result), result.output
    assert "no-such-run" in result.output and not out.exists()
    for command in ("metrics", "errors"):
        result = invoke(command, "--db", str(db_path), "--run", "no-such-run")
        assert result.exit_code == 1 and "no-such-run" in result.output


def _wait_for_running(db_path, process, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the rollout ended before it could be interrupted"
        try:
            frame = reads.conversations_frame(Database(db_path))
        except Exception:  # not created yet
            time.sleep(0.02)
            continue
        if "running" in list(frame["status"]) and frame["node_count"].max() >= 3:
            return
        time.sleep(0.02)
    raise AssertionError("the rollout never got going")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_run_is_marked_and_resumes(signum, tmp_path, toolwoz_data):
    from rollout_fixtures import write_scripts

    scenario_file, agent_file, user_file = write_scripts(tmp_path, _scenarios(3))
    # Agent turns that take a while (as a model's would), so the signal lands inside a
    # conversation rather than in the gap between two fast ones.
    script = json.loads(agent_file.read_text())
    agent_file.write_text(json.dumps({**script, "latency": 0.3}))
    db_path = tmp_path / "int.duckdb"
    args = ["rollout", "--josh", "--scenario-file", str(scenario_file), "--agent", f"script:{agent_file}",
            "--user", f"script:{user_file}", "--max-turns", "7", "--db", str(db_path)]
    process = subprocess.Popen([*JOSH, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=default_signals)
    try:
        _wait_for_running(db_path, process)
        os.kill(process.pid, signum)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 128 + signum, (process.returncode, stdout, stderr)
    assert "Traceback" not in stderr
    db = Database(db_path)
    (run,) = reads.list_runs(db)
    assert run.status == "interrupted"
    assert "interrupted" in stderr and f"--resume {run.id}" in stderr
    statuses = [c.status for c in reads.list_conversations(db, run_id=run.id)]
    assert "running" not in statuses and "interrupted" in statuses

    resumed = josh("rollout", "--resume", run.id, "--db", str(db_path))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert reads.get_run(db, run.id).status == "done"


@pytest.mark.slow  # plays rollouts in a josh subprocess
def test_a_key_echoed_by_the_server_is_not_stored(tmp_path, toolwoz_data):
    scenario_file, _, user = simple_scripts(tmp_path, scenario_dicts(1))
    db_path = tmp_path / "k.duckdb"
    with ErrorServer(401, "invalid key", echo_key=True) as server:
        done = josh("rollout", "--scenario-file", str(scenario_file), "--agent", "openai:m",
                    "--base-url", server.base_url, "--user", f"script:{user}", "--max-turns", "1",
                    "--db", str(db_path), env={"OPENAI_API_KEY": SECRET})
    assert done.returncode == 1 and no_traceback(done), done.stdout + done.stderr
    assert SECRET not in done.stdout + done.stderr
    (conversation,) = reads.list_conversations(Database(db_path))
    assert conversation.status == "failed" and "invalid key" in conversation.error
    assert SECRET not in conversation.error and "Bearer" in conversation.error  # the rest is kept


@pytest.mark.slow  # plays rollouts in a josh subprocess
def test_a_base_url_with_credentials_is_not_stored(tmp_path, toolwoz_data):
    scenario_file, _, user = simple_scripts(tmp_path, scenario_dicts(1))
    db_path = tmp_path / "u.duckdb"
    with ErrorServer(400, "no") as server:
        url = server.base_url.replace("http://", "http://alice:pa55word@") + "?api-key=" + SECRET
        done = josh("rollout", "--scenario-file", str(scenario_file), "--agent", "openai:m",
                    "--base-url", url, "--user", f"script:{user}", "--max-turns", "1", "--db", str(db_path))
        assert done.returncode == 1 and no_traceback(done), done.stdout + done.stderr
        assert server.requests >= 1  # the credentials were used for the requests
        (run,) = reads.list_runs(Database(db_path))
        stored = json.dumps(run.config) + json.dumps([c.error for c in reads.list_conversations(Database(db_path))])
        assert "pa55word" not in stored and SECRET not in stored
        assert "127.0.0.1" in run.config["base_url"]
        # Resuming needs the credentials again, and says so.
        resumed = josh("rollout", "--resume", run.id, "--db", str(db_path))
        assert resumed.returncode == 1 and "--base-url" in resumed.stderr
        resumed = josh("rollout", "--resume", run.id, "--db", str(db_path), "--base-url", url)
        assert resumed.returncode == 1 and no_traceback(resumed)  # the server still refuses, but it was asked
        assert server.requests >= 2


@pytest.fixture
def sigint_delivered():
    """SIGINT raises KeyboardInterrupt in this process during the test, as in a terminal, even
    when the suite was started in the background with SIGINT ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_sigint_whose_cancellation_is_absorbed_still_interrupts(sigint_delivered):
    # asyncio.run turns a SIGINT into KeyboardInterrupt only if the cancelled main task ends
    # cancelled; a task tree that absorbs the cancellation must not make the run end normally.
    from josh_core.rollout import run_interruptibly

    async def absorbing() -> str:
        os.kill(os.getpid(), signal.SIGINT)
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            pass  # swallowed: the task returns normally
        return "finished"

    with pytest.raises(KeyboardInterrupt):
        run_interruptibly(absorbing())
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert run_interruptibly(asyncio.sleep(0, "plain")) == "plain"  # no signal: the result


def test_a_run_whose_agent_absorbs_the_sigint_is_marked_interrupted(tmp_path, toolwoz_data, sigint_delivered):
    from josh_core.policies.script import ScriptAgent, ScriptUser

    # One conversation: with others queued, their cancellation would end the run anyway.
    scenarios = _scenarios(1)
    _, agent_file, user_file = simple_scripts(tmp_path, [s.model_dump(mode="json") for s in scenarios])

    class AbsorbingAgent(ScriptAgent):
        """Receives the SIGINT mid-turn and finishes the turn anyway (as a client library
        that catches CancelledError would)."""

        sent = False

        async def act(self, ctx):
            if not AbsorbingAgent.sent:
                AbsorbingAgent.sent = True
                os.kill(os.getpid(), signal.SIGINT)
                try:
                    await asyncio.sleep(5)
                except asyncio.CancelledError:
                    pass
            return await super().act(ctx)

    agent = AbsorbingAgent(ScriptAgent.from_file(agent_file).turns)
    config = RolloutConfig(agent=f"script:{agent_file}", user=f"script:{user_file}", max_turns=2)
    db_path = tmp_path / "absorbed.duckdb"
    with pytest.raises(KeyboardInterrupt):
        start_run(db_path, scenarios, config, agent=agent, user=ScriptUser.from_file(user_file))
    db = Database(db_path)
    (run,) = reads.list_runs(db)
    assert run.status == "interrupted"
    assert "running" not in [c.status for c in reads.list_conversations(db, run_id=run.id)]

    resumed = resume_run(db_path, run.id, agent=ScriptAgent.from_file(agent_file),
                         user=ScriptUser.from_file(user_file))
    assert [c.status for c in resumed.conversations if c.status != "done"] == []
    assert reads.get_run(db, run.id).status == "done"
