"""Issue item 1: text from outside (a server's error message, a scenario id, an API name an
agent made up, a path) is printed as plain text, never read as Rich markup."""

from __future__ import annotations

import json

import pytest

from engine_fixtures import call, speak
from hardening_fixtures import ErrorServer, invoke, josh, no_traceback, scenario_dicts, simple_scripts, write_json
from josh_core.rollout import RolloutConfig, start_run
from josh_core.storage import reads
from josh_core.storage.db import Database

MARKUP = "[/INST] [bold]"


@pytest.mark.slow  # plays rollouts in a josh subprocess
def test_a_server_error_with_markup_fails_its_conversation_not_the_run(tmp_path, toolwoz_data):
    scenario_file, _, user = simple_scripts(tmp_path, scenario_dicts(2))
    db_path = tmp_path / "r.duckdb"
    with ErrorServer(400, f"prompt too long {MARKUP}") as server:
        done = josh(
            "rollout", "--scenario-file", str(scenario_file), "--agent", "openai:m", "--base-url", server.base_url,
            "--user", f"script:{user}", "--max-turns", "2", "--db", str(db_path),
            env={"OPENAI_API_KEY": "sk-test-0000000000"},
        )
    assert done.returncode == 1 and no_traceback(done), done.stdout + done.stderr
    assert MARKUP in done.stdout  # printed as it came
    db = Database(db_path)
    (run,) = reads.list_runs(db)
    conversations = reads.list_conversations(db, run_id=run.id)
    assert [c.status for c in conversations] == ["failed", "failed"]  # both played, neither abandoned
    assert all(MARKUP in (c.error or "") for c in conversations)
    assert run.status == "incomplete"


@pytest.mark.slow  # plays rollouts in a josh subprocess
def test_a_scenario_id_with_markup_is_shown_as_it_is(tmp_path, toolwoz_data):
    scenarios = scenario_dicts(1)
    scenarios[0]["id"] = "[/bold]"
    scenario_file, agent, user = simple_scripts(tmp_path, scenarios)
    done = josh("rollout", "--scenario-file", str(scenario_file), "--agent", f"script:{agent}",
                "--user", f"script:{user}", "--max-turns", "2", "--db", str(tmp_path / "r.duckdb"))
    assert done.returncode == 0 and no_traceback(done), done.stdout + done.stderr
    assert any(line.startswith("[/bold]") and "reward" in line for line in done.stdout.splitlines())

    shown = josh("toolwoz", "show", "[/bold]")
    assert shown.returncode == 1 and no_traceback(shown), shown.stderr
    assert "[/bold]" in shown.stderr


def test_an_api_name_with_markup_in_errors_and_metrics_tables(tmp_path, toolwoz_data):
    from josh_core.envs.toolwoz.scenarios import load_split

    scenario = load_split("train", limit=1)[0]
    agent = write_json(tmp_path / "agent.json", {"turns": [[[call("[/x]", area="[red]"), speak("Sorry [/y].")]]]})
    user = write_json(tmp_path / "user.json", {"turns": ["Hi [/z]", "bye"]})
    db_path = tmp_path / "e.duckdb"
    config = RolloutConfig(agent=f"script:{agent}", user=f"script:{user}", max_turns=1)
    start_run(db_path, [scenario], config)
    for command in ("errors", "metrics", "leaderboard"):
        result = invoke(command, "--db", str(db_path))
        assert result.exit_code == 0 and no_traceback(result), (command, result.output, result.exception)
    result = invoke("errors", "--db", str(db_path))
    assert "[/x]" in result.output
    assert json.loads(invoke("errors", "--db", str(db_path), "--json").stdout)["rates"]["calls"] == 1


@pytest.mark.slow  # plays rollouts in a josh subprocess
def test_a_path_with_markup_in_an_error_message(tmp_path):
    missing = tmp_path / "[/x]"
    done = josh("data", "prepare", "--from", str(missing), env={"JOSH_DATA_DIR": str(tmp_path / "data")})
    assert done.returncode == 1 and no_traceback(done), done.stderr
    assert "[/x]" in done.stderr and "does not exist" in done.stderr
