"""`josh data prepare` and `josh toolwoz list | show | score | schema | stats`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from josh_core.cli import app
from josh_core.envs.toolwoz.scenarios import get_scenario, load_split

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_list_prints_one_id_per_line(toolwoz_data):
    assert invoke("toolwoz", "list", "--split", "official-test", "--limit", "3").split() == [
        "synth-test-0000",
        "synth-test-0001",
        "synth-test-0002",
    ]
    assert len(invoke("toolwoz", "list", "--split", "official-test").split()) == 450
    assert len(invoke("toolwoz", "list", "--split", "val").split()) == 793


def test_show_json_is_the_scenario(toolwoz_data):
    shown = json.loads(invoke("toolwoz", "show", "synth-val-0007", "--json"))
    assert shown == get_scenario("synth-val-0007").model_dump(mode="json")
    assert {"id", "domains", "goal", "instructions", "goal_calls"} <= set(shown)
    assert all({"name", "parameters"} <= set(call) for call in shown["goal_calls"])
    text = invoke("toolwoz", "show", "synth-val-0007")
    assert "synth-val-0007" in text and "search_" in text
    missing = runner.invoke(app, ["toolwoz", "show", "synth-val-9999", "--json"])
    assert missing.exit_code == 1


def test_score_prints_reward_json(toolwoz_data, tmp_path):
    scenario = next(s for s in load_split("test", limit=50) if len(s.goal_calls) >= 2)
    scenario_file = tmp_path / "s.json"
    scenario_file.write_text(scenario.model_dump_json())
    calls_file = tmp_path / "c.json"
    calls_file.write_text(json.dumps([{"name": c.name, "parameters": c.parameters} for c in scenario.goal_calls]))
    report = json.loads(invoke("toolwoz", "score", "--scenario", str(scenario_file), "--calls", str(calls_file)))
    assert report["reward"] == 1.0 and report["missed"] == []
    assert report["completed"] == scenario.goal_call_ids()

    calls_file.write_text(json.dumps([{"name": scenario.goal_calls[0].name, "parameters": scenario.goal_calls[0].parameters}]))
    report = json.loads(invoke("toolwoz", "score", "--scenario", scenario.id, "--calls", str(calls_file)))
    assert report["reward"] == 1 / len(scenario.goal_calls)
    assert [m["reason"] for m in report["missed"]] == ["never_attempted"] * (len(scenario.goal_calls) - 1)

    calls_file.write_text('{"not": "a list"}')
    assert runner.invoke(app, ["toolwoz", "score", "--scenario", str(scenario_file), "--calls", str(calls_file)]).exit_code == 1


def test_schema_is_the_scenario_json_schema():
    schema = json.loads(invoke("toolwoz", "schema"))
    assert schema["title"] == "Scenario"
    assert {"id", "domains", "goal", "instructions", "goal_calls"} <= set(schema["properties"])


def test_stats_json_and_tables(toolwoz_data):
    stats = json.loads(invoke("toolwoz", "stats", "--json"))
    splits = stats["splits"]
    assert [splits[s]["scenarios"] for s in ("train", "val", "test", "official-test", "all")] == [6251, 793, 805, 450, 7849]
    assert splits["all"]["single_domain"] + splits["all"]["multi_domain"] == 7849
    assert "restaurant > train" in stats["expected"]["combinations"]
    one = json.loads(invoke("toolwoz", "stats", "--split", "val", "--json"))
    assert list(one["splits"]) == ["val"]
    tables = invoke("toolwoz", "stats", "--split", "test")
    assert "Domain combinations" in tables and "805" in tables


def _josh_command() -> list[str]:
    script = Path(sys.executable).parent / "josh"
    return [str(script)] if script.exists() else [sys.executable, "-c", "from josh_core.cli import main; main()"]


def test_data_prepare_prints_split_counts(toolwoz_data):
    env = {**os.environ, "COLUMNS": "100"}
    done = subprocess.run([*_josh_command(), "data", "prepare"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    for split, count in {"train": 6251, "val": 793, "test": 805, "official-test": 450}.items():
        line = next(line for line in done.stdout.splitlines() if f" {split} " in line)
        assert str(count) in line


def test_data_prepare_without_inputs_fails_clearly(tmp_path):
    env = {**os.environ, "JOSH_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}
    done = subprocess.run([*_josh_command(), "data", "prepare", "--from", str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1
    assert "_db.json was not found" in done.stderr and "--from" in done.stderr
