"""`josh_core.rollout` in process: runs of ToolWOZ scenarios with script policies."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from josh_core.policies.script import ScriptAgent, ScriptUser
from josh_core.rollout import RolloutConfig, RolloutObserver, resume_run, start_run
from josh_core.search.labels import is_single_path
from josh_core.storage import reads
from josh_core.storage.db import Database
from rollout_fixtures import run_contents, write_scripts


@pytest.fixture(scope="module")
def scenarios(toolwoz_data):
    from josh_core.envs.toolwoz.scenarios import load_split

    return load_split("train", limit=3)


@pytest.fixture(scope="module")
def config(tmp_path_factory, scenarios) -> RolloutConfig:
    _, agent_file, user_file = write_scripts(tmp_path_factory.mktemp("scripts"), scenarios)
    return RolloutConfig(josh=True, agent=f"script:{agent_file}", user=f"script:{user_file}", max_turns=5, seed=5)


class Recorder(RolloutObserver):
    def __init__(self):
        self.calls = []

    def run_started(self, run_id, total, already_done):
        self.calls.append(("run", total, already_done))

    def conversation_started(self, conversation_id, scenario_id, max_steps):
        self.calls.append(("start", scenario_id, max_steps))

    def step(self, conversation_id, event):
        self.calls.append(("step", event.step))

    def conversation_finished(self, result):
        self.calls.append(("finish", result.scenario_id, result.status))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, scenarios, config):
    """One uninterrupted run, shared: (database path, result, observer calls)."""
    recorder = Recorder()
    db_path = tmp_path_factory.mktemp("reference") / "r.duckdb"
    return db_path, start_run(db_path, scenarios, config, observer=recorder), recorder


def test_josh_run_is_stored_with_everything_export_and_resume_need(reference, scenarios, config):
    db_path, result, recorder = reference
    assert [c.reward for c in result.conversations] == [1.0, 0.5, 0.0]
    assert [c.stop_reason for c in result.conversations] == ["goals_done", "max_depth", "max_depth"]
    assert result.average_reward == 0.5 and result.skipped == 0
    assert recorder.calls[0] == ("run", 3, 0)
    assert recorder.calls[1] == ("start", "synth-train-0000", 5)
    assert [c for c in recorder.calls if c[0] == "finish"] == [
        ("finish", s.id, "done") for s in scenarios
    ]

    db = Database(db_path)
    run = reads.get_run(db, result.run_id)
    assert run.kind == "josh" and run.status == "done" and run.seed == 5
    assert run.agent_spec == config.agent and run.agent_name == f"script:{config.agent[7:]}"
    assert run.config["beam"] == 8 and run.config["agent_options"]["max_actions_per_turn"] == 5
    assert run.code_revision is None or len(run.code_revision) >= 12
    first = reads.list_conversations(db, run_id=run.id)[0]
    agent = ScriptAgent.from_file(config.agent[7:])
    from josh_core.envs.toolwoz.env import ToolWOZEnv

    env = ToolWOZEnv(scenarios[0])
    assert first.system_prompt == agent.system_prompt(env) and first.tools == env.tools()
    assert first.scenario == scenarios[0].model_dump(mode="json")
    assert first.score["reward"] == first.reward == 1.0 and first.score["missed"] == []
    assert first.seed == config.search_config(scenarios[0].id).seed
    second = reads.list_conversations(db, run_id=run.id)[1]
    assert second.score["reward"] == 0.5 and len(second.score["missed"]) == 1


def test_plain_run(tmp_path, scenarios, config):
    plain = config.model_copy(update={"josh": False})
    result = start_run(tmp_path / "p.duckdb", scenarios, plain)
    db = Database(tmp_path / "p.duckdb")
    assert reads.get_run(db, result.run_id).kind == "plain"
    trees = reads.load_trees(db, [c.conversation_id for c in result.conversations])
    assert all(is_single_path(tree) for tree in trees.values())
    # The opener, 5 agent turns and the 4 user turns between them (all of them ideal).
    assert [c.nodes for c in result.conversations] == [10, 10, 10]


class FlakyAgent(ScriptAgent):
    """Fails on the second scenario the first time round (a backend outage)."""

    def __init__(self, turns, fail_on: str | None):
        super().__init__(turns)
        self.fail_on = fail_on

    async def act(self, ctx):
        if ctx.scenario.id == self.fail_on and ctx.turn_index == 1:
            raise ConnectionError("backend unreachable")
        return await super().act(ctx)


def test_failed_conversations_are_redone_on_resume(tmp_path, scenarios, config, reference):
    db_path = tmp_path / "f.duckdb"
    turns = ScriptAgent.from_file(config.agent[7:]).turns
    user = ScriptUser.from_file(config.user[7:])
    first = start_run(db_path, scenarios, config, agent=FlakyAgent(turns, scenarios[1].id), user=user)
    assert [c.status for c in first.conversations] == ["done", "failed", "done"]
    assert first.conversations[1].error == "ConnectionError: backend unreachable"
    db = Database(db_path)
    assert reads.get_run(db, first.run_id).status == "incomplete"
    assert "backend unreachable" in reads.get_conversation(db, f"{first.run_id}:1").error

    recorder = Recorder()
    second = resume_run(db_path, first.run_id, observer=recorder)  # policies rebuilt from the run
    assert [c.scenario_id for c in second.conversations] == [scenarios[1].id]
    assert second.skipped == 2 and recorder.calls[0] == ("run", 3, 2)
    assert reads.get_run(db, first.run_id).status == "done"

    reference_db, reference_result, _ = reference
    assert run_contents(db_path, first.run_id) == run_contents(reference_db, reference_result.run_id)


def test_conversations_in_parallel_give_the_same_trees(tmp_path, scenarios, config, reference):
    reference_db, one, _ = reference
    three = start_run(tmp_path / "b.duckdb", scenarios, config.model_copy(update={"concurrency": 3}))
    assert run_contents(reference_db, one.run_id) == run_contents(tmp_path / "b.duckdb", three.run_id)


def test_rollout_command_reports_bad_input(tmp_path):
    from josh_core.cli import app

    missing = CliRunner().invoke(app, ["rollout", "--resume", "run-x", "--db", str(tmp_path / "none.duckdb")])
    assert missing.exit_code == 1 and "no database" in missing.output
    bad = CliRunner().invoke(app, ["rollout", "--josh", "--beam", "0", "--db", str(tmp_path / "b.duckdb")])
    assert bad.exit_code == 1 and "--beam: Input should be greater than or equal to 1" in bad.output
    assert not (tmp_path / "b.duckdb").exists()
    with pytest.raises(ValueError):
        start_run(tmp_path / "x.duckdb", [], RolloutConfig())
