"""Issue item 4: a database lock held by another process for longer than
`JOSH_DB_LOCK_TIMEOUT` costs one conversation an attempt (it is retried), or fails that
conversation alone; it never ends the whole run."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

from josh_core.policies.script import ScriptAgent
from josh_core.rollout import RolloutConfig, start_run
from josh_core.storage import reads
from josh_core.storage.db import Database
from hardening_fixtures import scenario_dicts, simple_scripts

HOLDER = textwrap.dedent(
    """
    import sys, time, duckdb
    while True:  # the rollout may hold the file for a moment: try until we have it
        try:
            con = duckdb.connect(sys.argv[1])
            break
        except duckdb.Error:
            time.sleep(0.001)
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
    con.close()
    """
)


class LockingAgent:
    """A script agent that, at its first turn, has another process take the database file
    for `hold` seconds (and waits until it has it)."""

    def __init__(self, inner: ScriptAgent, db_path, hold: float):
        self.inner = inner
        self.name = "locking-script"
        self.db_path = db_path
        self.hold = hold
        self.holder: subprocess.Popen | None = None

    def system_prompt(self, env):
        return self.inner.system_prompt(env)

    async def act(self, ctx):
        if self.holder is None:
            self.holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(self.db_path), str(self.hold)],
                                           stdout=subprocess.PIPE, text=True)
            line = await asyncio.to_thread(self.holder.stdout.readline)
            assert line.strip() == "holding"
        return await self.inner.act(ctx)


def _play(tmp_path, monkeypatch, hold: float, retries: str):
    from josh_core.envs.toolwoz.types import Scenario

    monkeypatch.setenv("JOSH_DB_LOCK_TIMEOUT", "0.3")
    monkeypatch.setenv("JOSH_DB_BUSY_RETRIES", retries)
    scenarios = scenario_dicts(2)
    _, agent_file, user_file = simple_scripts(tmp_path, scenarios)
    db_path = tmp_path / "locked.duckdb"
    agent = LockingAgent(ScriptAgent.from_file(agent_file), db_path, hold)
    config = RolloutConfig(agent=f"script:{agent_file}", user=f"script:{user_file}", max_turns=2)
    try:
        result = start_run(db_path, [Scenario.model_validate(s) for s in scenarios], config, agent=agent)
    finally:
        if agent.holder is not None:
            agent.holder.kill()
            agent.holder.wait(timeout=30)
    db = Database(db_path)
    return result, reads.list_conversations(db, run_id=result.run_id), reads.get_run(db, result.run_id)


def test_a_lock_held_past_the_timeout_retries_the_conversation(tmp_path, monkeypatch, toolwoz_data):
    result, conversations, run = _play(tmp_path, monkeypatch, hold=0.8, retries="2")
    assert [c.status for c in conversations] == ["done", "done"]
    assert [c.status for c in result.conversations] == ["done", "done"]
    assert run.status == "done"


def test_a_lock_held_past_the_retries_fails_one_conversation_only(tmp_path, monkeypatch, toolwoz_data):
    result, conversations, run = _play(tmp_path, monkeypatch, hold=1.0, retries="0")
    assert [c.status for c in result.conversations] == ["failed", "done"]
    assert [c.status for c in conversations] == ["failed", "done"]
    assert "locked" in conversations[0].error
    assert run.status == "incomplete"
