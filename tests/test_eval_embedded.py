"""`josh eval` end to end on the embedded model (SmolLM2-135M) with the rule-based agenda
user: two official-test scenarios, one agent turn each, then the stored run read back.

Slow (it loads and runs the model on CPU), so the conversations are kept short. The
numbers the model earns are not asserted (a weak model may reach nothing); what is checked is
that the evaluation ran, was stored with its configuration, and that the reported numbers
agree with the stored nodes they are computed from.
"""

from __future__ import annotations

import json

import pytest

from eval_fixtures import run_cli
from josh_core.storage import reads
from josh_core.storage.db import Database

pytestmark = pytest.mark.slow


def test_josh_eval_on_the_embedded_model(toolwoz_data, tmp_path):
    db_path = tmp_path / "eval.duckdb"
    result = run_cli("eval", "--limit", "2", "--max-turns", "1", "--db", str(db_path), "--resamples", "20",
                     "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    evaluation = json.loads(result.stdout)
    assert (evaluation["played"], evaluation["failed"]) == (2, 0)
    metrics, errors = evaluation["metrics"], evaluation["errors"]
    assert metrics["n"] == 2 and 0.0 <= metrics["average_reward"] <= 1.0

    db = Database(db_path)
    [run] = reads.list_runs(db)
    assert (run.kind, run.agent_spec, run.user_spec, run.seed) == ("plain", "embedded", "agenda", 0)
    assert run.config["split"] == "official-test" and run.config["limit"] == 2
    conversations = reads.list_conversations(db, run_id=run.id)
    assert [c.scenario_id for c in conversations] == ["synth-test-0000", "synth-test-0001"]
    assert metrics["average_reward"] == pytest.approx(sum(c.reward for c in conversations) / 2)

    # A plain rollout is one path: every stored node is on it, so the error counts must add
    # up to the nodes' own counters.
    nodes = reads.nodes_frame(db, run_id=run.id)
    assert errors["rates"]["format_error_generations"] == int(nodes["format_errors"].fillna(0).sum())
    assert errors["rates"]["failed_calls"] == int(nodes["api_errors"].fillna(0).sum())

    board = run_cli("leaderboard", "--db", str(db_path), "--json")
    assert [row["run_id"] for row in json.loads(board.stdout)] == [run.id]
