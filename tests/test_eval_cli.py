"""`josh eval`, `josh metrics`, `josh errors` and `josh leaderboard` on the planted database
(eval_fixtures.py): JSON outputs, the same numbers as the analysis functions, human tables,
resume and bad input."""

from __future__ import annotations

import json

import pytest

from eval_fixtures import planted_database, run_cli
from josh_core.analysis.errors import error_report
from josh_core.analysis.metrics import metrics_report


@pytest.fixture(scope="module")
def planted(toolwoz_data, tmp_path_factory):
    return planted_database(tmp_path_factory)


def _json(*args: str):
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_eval_json_records_the_run(planted):
    _, outputs = planted
    hotel = outputs["hotel"]
    assert (hotel["played"], hotel["failed"], hotel["skipped"]) == (2, 0, 0)
    assert hotel["seconds"] > 0
    assert hotel["config"]["seed"] == 7 and hotel["config"]["josh"] is False
    assert hotel["config"]["agent"].startswith("script:") and hotel["config"]["user"].startswith("script:")
    assert hotel["metrics"]["run_ids"] == [hotel["run_id"]]
    assert hotel["errors"]["rates"]["bad_api_use"] == 1.0
    assert [row["n"] for row in hotel["metrics"]["bootstrap"]] == [2, 2]
    assert hotel["metrics"]["bootstrap"][0]["resamples"] == 50


def test_metrics_json(planted):
    db, _ = planted
    out = _json("metrics", "--db", str(db), "--json", "--bootstrap-sizes", "2,5", "--resamples", "100")
    assert (out["n"], out["average_reward"], out["success_rate"]) == (5, pytest.approx(0.3), pytest.approx(0.2))
    assert (out["goal_calls"], out["goals_completed"]) == (8, 3)
    assert [row["domain"] for row in out["per_domain"]] == ["attraction", "hotel", "restaurant", "train"]
    assert {row["api"] for row in out["per_api"]} >= {"search_hotel", "book_train"}
    assert [(row["metric"], row["n"]) for row in out["bootstrap"]] == [
        ("average_reward", 2), ("success_rate", 2), ("average_reward", 5), ("success_rate", 5)
    ]
    # The command prints what the function returns: the app draws the same numbers.
    same = metrics_report(db, bootstrap_sizes=[2, 5], resamples=100).model_dump(mode="json")
    assert out == json.loads(json.dumps(same))


def test_metrics_of_one_run(planted):
    db, outputs = planted
    out = _json("metrics", "--db", str(db), "--run", outputs["mixed"]["run_id"], "--json")
    assert (out["n"], out["average_reward"], out["goals_completed"]) == (1, 0.5, 1)


def test_errors_json(planted):
    db, _ = planted
    out = _json("errors", "--db", str(db), "--json")
    assert out["nodes"] == "ideal"
    assert out["rates"]["bad_api_use"] == pytest.approx(0.6)
    assert out["rates"]["incorrect_format"] == pytest.approx(0.4)
    assert out["parameter_errors_total"] == 5
    assert [(r["label"], r["count"], r["percent"]) for r in out["parameter_errors"]][:2] == [
        ("search_hotel: pricerange=moderate (wrong value)", 2, 40.0),
        ("search_restaurant: food=chinese (wrong value)", 1, 20.0),
    ]
    assert out["per_api"][0]["api"] == "search_hotel" and out["per_api"][0]["errors"] == 4
    assert out == json.loads(json.dumps(error_report(db).model_dump(mode="json")))
    top = _json("errors", "--db", str(db), "--json", "--top", "1")
    assert len(top["parameter_errors"]) == 1 and top["parameter_errors_total"] == 5


def test_leaderboard_json(planted):
    db, outputs = planted
    rows = _json("leaderboard", "--db", str(db), "--json")
    ids = {out["run_id"]: name for name, out in outputs.items()}
    # Best Average Reward first; equal scores keep the older run first.
    assert [ids[row["run_id"]] for row in rows] == ["perfect", "mixed", "hotel", "train"]
    best = rows[0]
    assert (best["n"], best["average_reward"], best["success_rate"], best["seed"]) == (1, 1.0, 1.0, 7)
    assert best["kind"] == "plain" and best["agent_spec"].startswith("script:")
    assert best["decoding"] == "auto"  # no --decoding given
    assert best["user_spec"].startswith("script:") and best["split"].endswith("perfect.scenarios.json")
    hotel = rows[2]
    assert (hotel["n"], hotel["bad_api_use"], hotel["incorrect_format"]) == (2, 1.0, 0.0)


def test_human_tables(planted):
    db, _ = planted
    metrics = run_cli("metrics", "--db", str(db), "--resamples", "20")
    assert metrics.exit_code == 0
    for text in ("Average Reward", "0.300", "20.0%", "Per domain", "Per goal API", "Bootstrap std"):
        assert text in metrics.stdout
    errors = run_cli("errors", "--db", str(db))
    assert errors.exit_code == 0
    for text in ("Bad API Use", "60.0%", "Errors per API", "search_hotel: pricerange=moderate"):
        assert text in errors.stdout
    board = run_cli("leaderboard", "--db", str(db))
    assert board.exit_code == 0 and "Leaderboard" in board.stdout


def test_resuming_a_finished_evaluation_plays_nothing(planted):
    db, outputs = planted
    out = _json("eval", "--db", str(db), "--resume", outputs["train"]["run_id"], "--json", "--resamples", "10")
    assert (out["played"], out["skipped"]) == (0, 1)
    assert out["metrics"]["n"] == 1 and out["errors"]["rates"]["incorrect_format"] == 1.0


def test_bad_input_fails_with_a_message(planted, tmp_path):
    db, _ = planted
    unknown = run_cli("metrics", "--db", str(db), "--run", "no-such-run", "--json")
    assert unknown.exit_code == 1 and "no run" in unknown.output
    missing = run_cli("errors", "--db", str(tmp_path / "absent.duckdb"), "--json")
    assert missing.exit_code == 1 and "no database" in missing.output
    sizes = run_cli("metrics", "--db", str(db), "--bootstrap-sizes", "0,3")
    assert sizes.exit_code == 1
    decoding = run_cli("eval", "--db", str(db), "--limit", "1", "--decoding", "fancy")
    assert decoding.exit_code == 1 and "unknown decoding mode 'fancy'" in decoding.output
    rollout = run_cli("rollout", "--db", str(db), "--limit", "1", "--decoding", "fancy")
    assert rollout.exit_code == 1 and "--decoding" in rollout.output and "grounded" in rollout.output
