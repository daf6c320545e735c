"""Issue item 7: bad input ends a command with a one-line error naming what was wrong (exit
1, or 2 for a flag typer rejects), never a traceback: scenario and script files, SPECs,
files that are not databases, bad calls in `josh toolwoz score`, a read-only database, a seed
out of range."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hardening_fixtures import JOSH, invoke, josh, no_traceback, scenario_dicts, simple_scripts, stored_run, write_json


def _rollout(scenario_file, agent, user, db, *extra: str):
    return invoke("rollout", "--scenario-file", str(scenario_file), "--agent", agent, "--user", user,
                  "--max-turns", "1", "--db", str(db), *extra)


def _clean_failure(result, *words: str, code: int = 1) -> None:
    assert result.exit_code == code and no_traceback(result), (result.output, result.exception)
    for word in words:
        assert word in result.output, (word, result.output)


@pytest.fixture()
def files(tmp_path, toolwoz_data):
    return simple_scripts(tmp_path, scenario_dicts(1))


@pytest.mark.parametrize("content", ["{not json", '{"id": "x"}', '[{"id": 1, "domains": "hotel"}]', "42"],
                         ids=["not-json", "missing-fields", "wrong-types", "not-an-object"])
def test_invalid_scenario_files(content, files, tmp_path):
    _, agent, user = files
    bad = tmp_path / "bad-scenarios.json"
    bad.write_text(content)
    _clean_failure(_rollout(bad, f"script:{agent}", f"script:{user}", tmp_path / "a.duckdb"), "bad-scenarios.json")
    _clean_failure(invoke("eval", "--scenario-file", str(bad), "--agent", f"script:{agent}", "--user",
                          f"script:{user}", "--db", str(tmp_path / "b.duckdb")), "bad-scenarios.json")
    calls = write_json(tmp_path / "calls.json", [])
    _clean_failure(invoke("toolwoz", "score", "--scenario", str(bad), "--calls", str(calls)), "bad-scenarios.json")
    assert not (tmp_path / "a.duckdb").exists()


@pytest.mark.parametrize(
    "flag,content",
    [
        ("--agent", None),
        ("--agent", "{not json"),
        ("--agent", {"turns": [[["PLAN x <COMMAND_END> SPEAK hi <COMMAND_END>", 5]]]}),
        ("--agent", {"turns": [[]]}),
        ("--agent", {"turns": "hello"}),
        ("--user", {"turns": ["hi", {"x": 1}]}),
        ("--user", ["hi"]),
    ],
    ids=["missing", "not-json", "non-string-generation", "no-alternatives", "turns-not-a-list",
         "user-non-string", "user-not-an-object"],
)
def test_invalid_script_policy_files(flag, content, files, tmp_path):
    scenario_file, agent, user = files
    script = tmp_path / "bad-script.json"
    if content is not None:
        script.write_text(content if isinstance(content, str) else json.dumps(content))
    specs = {"--agent": f"script:{agent}", "--user": f"script:{user}", flag: f"script:{script}"}
    result = _rollout(scenario_file, specs["--agent"], specs["--user"], tmp_path / "s.duckdb")
    _clean_failure(result, flag, "bad-script.json")


@pytest.mark.parametrize(
    "flag,spec",
    [("--agent", "nonsense"), ("--agent", "foo:bar"), ("--agent", ""), ("--user", "nonsense"),
     ("--user", "llm:nonsense"), ("--agent", "script:"), ("--user", "script:/no/such/user.json")],
)
def test_bad_specs(flag, spec, files, tmp_path):
    scenario_file, agent, user = files
    specs = {"--agent": f"script:{agent}", "--user": f"script:{user}", flag: spec}
    _clean_failure(_rollout(scenario_file, specs["--agent"], specs["--user"], tmp_path / "x.duckdb"), flag)
    assert not (tmp_path / "x.duckdb").exists()


@pytest.mark.parametrize("content", [b"", b"this is a text file, not a database\n"], ids=["empty", "text"])
def test_files_that_are_not_databases(content, files, tmp_path):
    scenario_file, agent, user = files
    db = tmp_path / "not.duckdb"
    db.write_bytes(content)
    for args in (("metrics", "--db", str(db)), ("errors", "--db", str(db)), ("leaderboard", "--db", str(db)),
                 ("export", "--db", str(db), "--kind", "sft", "--out", str(tmp_path / "o.jsonl"))):
        _clean_failure(invoke(*args), "not.duckdb", "not a JOSH database")
    _clean_failure(_rollout(scenario_file, f"script:{agent}", f"script:{user}", db), "not a JOSH database")
    assert db.read_bytes() == content


def test_score_takes_any_calls_without_a_traceback(tmp_path, toolwoz_data):
    from josh_core.envs.toolwoz.scenarios import load_split

    scenario = load_split("train", limit=1)[0]
    scenario_file = write_json(tmp_path / "s.json", scenario.model_dump(mode="json"))
    goal = scenario.goal_calls[0]
    deep = "[" * 500 + '"x"' + "]" * 500  # deep, but within what JSON readers take
    right = json.dumps({"name": goal.name, "parameters": goal.parameters})
    cases = {
        "non-dict parameters": '[{"name": "%s", "parameters": [1, 2]}, {"name": "%s", "parameters": "area"}, '
                               % (goal.name, goal.name),
        "non-string name": '[{"name": 5, "parameters": {}}, ',
        "nested values": '[{"name": "%s", "parameters": {"area": %s}}, ' % (goal.name, deep),
        "nested name": '[{"name": "x", "parameters": {"%s": %s}}, ' % ("k", deep),
        "huge number": '[{"name": "%s", "parameters": {"area": 1e999, "name": 123456789012345678901234567890}}, '
                       % goal.name,
    }
    for label, calls in cases.items():
        calls_file = tmp_path / "calls.json"
        calls_file.write_text(calls + right + "]")
        result = invoke("toolwoz", "score", "--scenario", str(scenario_file), "--calls", str(calls_file))
        assert result.exit_code == 0 and no_traceback(result), (label, result.output, result.exception)
        assert json.loads(result.stdout)["completed"][:1] == ["0:" + goal.name], label

    too_deep = tmp_path / "deep.json"
    too_deep.write_text("[" * 100_000 + "]" * 100_000)
    result = invoke("toolwoz", "score", "--scenario", str(scenario_file), "--calls", str(too_deep))
    _clean_failure(result, "deep.json")


def _without_write_permission(args: list[str]) -> subprocess.CompletedProcess:
    """Run `josh ARGS` unable to write files whose mode forbids it (root drops the
    capabilities that let it ignore file modes)."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: file modes cannot be enforced")
        prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner"]
    return subprocess.run([*prefix, *JOSH, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})


@pytest.mark.slow
def test_a_read_only_database(tmp_path, toolwoz_data):
    db_path, run_id = stored_run(tmp_path, name="ro.duckdb", limit=1)
    scenario_file, agent, user = simple_scripts(tmp_path / "s", scenario_dicts(1))
    db_path.chmod(0o444)
    before = db_path.read_bytes()

    metrics = _without_write_permission(["metrics", "--db", str(db_path), "--json"])
    assert metrics.returncode == 0, metrics.stderr
    export = _without_write_permission(["export", "--db", str(db_path), "--kind", "kto", "--all-rewards",
                                        "--out", str(tmp_path / "kto.jsonl")])
    assert export.returncode == 0 and no_traceback(export), export.stderr
    assert "not recorded" in export.stderr and (tmp_path / "kto.jsonl").exists()
    rollout = _without_write_permission(["rollout", "--scenario-file", str(scenario_file), "--agent",
                                         f"script:{agent}", "--user", f"script:{user}", "--max-turns", "1",
                                         "--db", str(db_path)])
    assert rollout.returncode == 1 and no_traceback(rollout), rollout.stderr
    assert "cannot be written" in rollout.stderr
    resumed = _without_write_permission(["rollout", "--resume", run_id, "--db", str(db_path)])
    assert resumed.returncode == 1 and no_traceback(resumed), resumed.stderr
    assert "cannot be written" in resumed.stderr
    assert db_path.read_bytes() == before


@pytest.mark.parametrize("seed", ["1e23", str(10**23), str(-(10**23))])
def test_a_seed_out_of_range(seed, files, tmp_path):
    scenario_file, agent, user = files
    result = _rollout(scenario_file, f"script:{agent}", f"script:{user}", tmp_path / "seed.duckdb", "--seed", seed)
    assert result.exit_code in (1, 2) and no_traceback(result), (result.output, result.exception)
    assert "--seed" in result.output
    done = josh("rollout", "--scenario-file", str(scenario_file), "--agent", f"script:{agent}",
                "--user", f"script:{user}", "--max-turns", "1", "--db", str(tmp_path / "seed2.duckdb"), "--seed", seed)
    assert done.returncode in (1, 2) and no_traceback(done), done.stderr
