"""Paired comparison of two runs (`josh_core.analysis.compare`, `josh compare`): the oracle
agent given one turn (base) vs many turns (trained) on the same scenarios."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from josh_core.analysis.compare import compare_pooled, compare_runs, conversation_metrics
from josh_core.cli import app
from josh_core.envs import get_env
from josh_core.rollout import RolloutConfig, start_run
from josh_core.storage import reads
from josh_core.storage.db import Database


@pytest.fixture(scope="module")
def runs(tmp_path_factory, toolwoz_data):
    """(db path, base run, trained run, second db path, its base run, its trained run)."""
    folder = tmp_path_factory.mktemp("compare")
    scenarios = [s for s in get_env("toolwoz").load_split("val", None) if len(s.domains) == 1]
    out = []
    for path, chosen in ((folder / "first.duckdb", scenarios[:6]), (folder / "second.duckdb", scenarios[6:10])):
        ids = []
        for turns in (1, 20):  # one agent turn reaches fewer goals than enough turns
            config = RolloutConfig(agent="oracle", user="agenda", max_turns=turns, seed=0)
            ids.append(start_run(path, chosen, config).run_id)
        out += [path, *ids]
    return tuple(out)


def test_paired_means_and_difference(runs):
    path, base, trained, *_ = runs
    db = Database(path, read_only=True)
    comparison = compare_runs(db, base, trained)
    assert comparison.n == 6 and (comparison.base_run, comparison.trained_run) == (base, trained)
    stored = {run: {c.scenario_id: c.reward for c in reads.list_conversations(db, run_id=run)}
              for run in (base, trained)}  # fmt: skip
    reward = comparison.metric("reward")
    assert reward.base.mean == pytest.approx(sum(stored[base].values()) / 6)
    assert reward.trained.mean == pytest.approx(1.0)  # the oracle with enough turns reaches every goal
    assert reward.difference.mean == pytest.approx(reward.trained.mean - reward.base.mean)
    assert reward.difference.low <= reward.difference.mean <= reward.difference.high
    assert reward.base.mean < 1.0  # one turn is not enough for every scenario: there is a difference


def test_pooling_adds_the_second_pairs_scenarios(runs):
    path, base, trained, path2, base2, trained2 = runs
    db, db2 = Database(path, read_only=True), Database(path2, read_only=True)
    pooled = compare_pooled([(db, base, trained), (db2, base2, trained2)])
    assert pooled.n == 10
    values = [m["reward"] for m in conversation_metrics(db, base).values()]
    values += [m["reward"] for m in conversation_metrics(db2, base2).values()]
    assert pooled.metric("reward").base.mean == pytest.approx(sum(values) / 10)
    with pytest.raises(ValueError, match="twice"):
        compare_pooled([(db, base, trained), (db, base, trained)])
    with pytest.raises(KeyError, match="no-such-run"):
        compare_pooled([(db, base, "no-such-run")])


def test_cli_prints_the_table_json_and_plain_errors(runs):
    path, base, trained, path2, base2, trained2 = runs
    runner = CliRunner()
    shown = runner.invoke(app, ["compare", base, trained, "--db", str(path)], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    assert "6 paired scenarios" in shown.output and "reward" in shown.output and "bad_api_rate" in shown.output
    as_json = runner.invoke(app, ["compare", base, trained, "--db", str(path), "--pool",
                                  f"{path2}:{base2}:{trained2}", "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout)["n"] == 10
    for args, message in (([base, "no-such-run", "--db", str(path)], "no run 'no-such-run'"),
                          ([base, trained, "--db", str(path), "--pool", "nonsense"], "--pool wants"),
                          ([base, trained, "--db", str(path.parent / "missing.duckdb")], "no database")):
        refused = runner.invoke(app, ["compare", *args])
        assert refused.exit_code == 1 and message in refused.output and "Traceback" not in refused.output
