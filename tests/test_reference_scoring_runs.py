"""`--scoring` is chosen per run: stored with it, kept on resume, shown and filtered by the
metrics, refused for environments without a choice."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from engine_fixtures import speak
from josh_core.analysis.metrics import metrics_report
from josh_core.launch import rollout_args
from josh_core.rollout import RolloutConfig, environment_factory, resume_run, start_run
from josh_core.storage import reads
from josh_core.storage.db import Database
from rollout_fixtures import goal_call

JOSH = [str(Path(sys.executable).parent / "josh")]


@pytest.fixture()
def kettles_yard(tmp_path, toolwoz_data):
    """A restaurant-and-kettle's-yard scenario and scripts that make its exact goal calls."""
    from josh_core.envs.toolwoz.scenarios import get_scenario

    scenario = get_scenario("synth-test-0236")
    assert [c.name for c in scenario.goal_calls] == ["search_restaurant", "search_attraction"]
    scenario_file = tmp_path / "scenario.json"
    scenario_file.write_text(json.dumps([scenario.model_dump(mode="json")]))
    agent_file = tmp_path / "agent.json"
    agent_file.write_text(json.dumps({"turns": [[[goal_call(scenario, 0), goal_call(scenario, 1), speak("Done.")]]]}))
    user_file = tmp_path / "user.json"
    user_file.write_text(json.dumps({"turns": ["I want food and kettle's yard.", "Thanks."]}))
    return scenario, scenario_file, agent_file, user_file


def config(kettles_yard, **overrides) -> RolloutConfig:
    _, scenario_file, agent_file, user_file = kettles_yard
    return RolloutConfig(agent=f"script:{agent_file}", user=f"script:{user_file}", max_turns=2,
                         scenario_file=str(scenario_file), **overrides)


@pytest.mark.slow  # plays rollouts in a josh subprocess
def test_a_run_plays_stores_and_resumes_with_its_scoring(tmp_path, kettles_yard):
    scenario = kettles_yard[0]
    db_path = tmp_path / "scoring.duckdb"
    ours = start_run(db_path, [scenario], config(kettles_yard))
    reference = start_run(db_path, [scenario], config(kettles_yard, scoring="reference"))
    assert [c.reward for c in ours.conversations] == [1.0]
    assert [c.reward for c in reference.conversations] == [0.5]  # "kettle's yard" never matches (rule A)
    db = Database(db_path)
    assert reads.get_run(db, ours.run_id).config["scoring"] == "toolwoz"  # the default, named
    assert reads.get_run(db, reference.run_id).config["scoring"] == "reference"
    assert resume_run(db_path, reference.run_id).skipped == 1
    assert RolloutConfig.model_validate(reads.get_run(db, reference.run_id).config).scoring == "reference"

    both = metrics_report(db)
    assert both.scorings == ["reference", "toolwoz"] and both.n == 2
    only = metrics_report(db, scoring="reference")
    assert (only.n, only.average_reward, only.scorings) == (1, 0.5, ["reference"])
    metrics = subprocess.run([*JOSH, "metrics", "--db", str(db_path), "--scoring", "toolwoz", "--json"],
                             capture_output=True, text=True, timeout=300)
    assert metrics.returncode == 0, metrics.stderr
    assert json.loads(metrics.stdout)["average_reward"] == 1.0
    mixed = subprocess.run([*JOSH, "metrics", "--db", str(db_path)], capture_output=True, text=True, timeout=300)
    assert "runs with different reward semantics are mixed here" in mixed.stdout


def test_runs_stored_before_the_choice_read_as_toolwoz(kettles_yard):
    stored = config(kettles_yard).stored()
    del stored["scoring"]
    assert RolloutConfig.model_validate(stored).scoring == "toolwoz"


def test_scoring_is_checked_against_the_environment(kettles_yard):
    with pytest.raises(ValidationError, match="toolwoz has no scoring 'paper'"):
        config(kettles_yard, scoring="paper")
    with pytest.raises(ValidationError, match="tau2-retail has no scoring 'reference'"):
        RolloutConfig(env="tau2-retail", scoring="reference")
    assert RolloutConfig(env="tau2-retail").scoring is None


def test_the_factory_and_the_launch_arguments_carry_the_scoring(kettles_yard):
    scenario = kettles_yard[0]
    assert environment_factory(config(kettles_yard, scoring="reference"))(scenario).scoring == "reference"
    assert environment_factory(config(kettles_yard))(scenario).scoring == "toolwoz"
    args = rollout_args(config(kettles_yard, scoring="reference"), "x.duckdb")
    assert args[args.index("--scoring") + 1] == "reference"
    assert "--scoring" not in rollout_args(config(kettles_yard), "x.duckdb")


@pytest.mark.slow  # plays rollouts in a josh subprocess
def test_cli_flags(tmp_path, kettles_yard):
    scenario, scenario_file, agent_file, user_file = kettles_yard
    refused = subprocess.run(
        [*JOSH, "rollout", "--scenario-file", str(scenario_file), "--agent", f"script:{agent_file}",
         "--user", f"script:{user_file}", "--scoring", "paper", "--db", str(tmp_path / "x.duckdb")],
        capture_output=True, text=True, timeout=300,
    )
    assert refused.returncode == 1
    assert "--scoring: toolwoz has no scoring 'paper'" in refused.stderr and "Traceback" not in refused.stderr
    calls = tmp_path / "calls.json"
    calls.write_text(json.dumps([{"name": c.name, "parameters": c.parameters} for c in scenario.goal_calls]))
    rewards = {}
    for mode in ("toolwoz", "reference"):
        scored = subprocess.run([*JOSH, "toolwoz", "score", "--scenario", str(scenario_file), "--calls", str(calls),
                                 "--scoring", mode], capture_output=True, text=True, timeout=300)
        assert scored.returncode == 0, scored.stderr
        rewards[mode] = json.loads(scored.stdout)["reward"]
    assert rewards == {"toolwoz": 1.0, "reference": 0.5}
    bad = subprocess.run([*JOSH, "metrics", "--db", str(tmp_path / "x.duckdb"), "--scoring", "paper"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "--scoring: no scoring 'paper'; use one of toolwoz, reference" in bad.stderr
