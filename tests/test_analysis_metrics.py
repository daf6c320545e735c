"""Metrics (section 4.1) of stored conversations with planted mistakes, checked by hand
(see eval_fixtures.py for what each run does), and the bootstrap of Figure 3c."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eval_fixtures import planted_database
from josh_core.analysis.bootstrap import bootstrap_std, default_sizes
from josh_core.analysis.conversations import load_conversations
from josh_core.analysis.metrics import bootstrap, metrics_report, per_api, per_domain, summarize


@pytest.fixture(scope="module")
def planted(toolwoz_data, tmp_path_factory):
    return planted_database(tmp_path_factory)


def _rows(frame, key):
    return {row[key]: row for row in frame.to_dict(orient="records")}


def test_every_conversation_counts_by_its_reward(planted):
    db, _ = planted
    loaded = load_conversations(db)
    rewards = {c.scenario_id: c.reward for c in loaded.conversations}
    assert rewards == {"eval-restaurant": 1.0, "eval-hotel": 0.0, "eval-hotel-2": 0.0,
                       "eval-train": 0.0, "eval-mixed": 0.5}  # fmt: skip
    assert len(loaded.run_ids) == 4 and loaded.not_done == {}
    summary = summarize(loaded.conversations)
    assert summary.n == 5
    assert summary.average_reward == pytest.approx(1.5 / 5)
    assert summary.success_rate == pytest.approx(1 / 5)
    assert (summary.goal_calls, summary.goals_completed) == (8, 3)
    assert summary.goal_completion_rate == pytest.approx(3 / 8)


def test_per_domain_breakdown(planted):
    db, _ = planted
    frame = per_domain(load_conversations(db).conversations)
    rows = _rows(frame, "domain")
    assert list(frame["domain"]) == ["attraction", "hotel", "restaurant", "train"]
    # restaurant: eval-restaurant (1.0, both goals) and eval-mixed (0.5, its restaurant goal missed)
    assert rows["restaurant"] == {
        "domain": "restaurant", "conversations": 2, "average_reward": 0.75, "success_rate": 0.5,
        "goal_calls": 3, "completed": 2, "completion_rate": pytest.approx(2 / 3),
        "domain_success_rate": 0.5,
    }  # fmt: skip
    assert rows["attraction"]["completion_rate"] == 1.0
    assert rows["attraction"]["domain_success_rate"] == 1.0
    assert rows["attraction"]["average_reward"] == 0.5
    assert (rows["hotel"]["conversations"], rows["hotel"]["goal_calls"], rows["hotel"]["completed"]) == (2, 2, 0)
    assert (rows["train"]["goal_calls"], rows["train"]["completion_rate"]) == (2, 0.0)


def test_per_api_breakdown_says_how_goals_were_missed(planted):
    db, _ = planted
    rows = _rows(per_api(load_conversations(db).conversations), "api")
    assert set(rows) == {"search_restaurant", "book_restaurant", "search_hotel", "search_train",
                         "book_train", "search_attraction"}  # fmt: skip
    assert rows["search_restaurant"] | {"completion_rate": None} == {
        "api": "search_restaurant", "domain": "restaurant", "goal_calls": 2, "completed": 1,
        "completion_rate": None, "missed": 1, "never_attempted": 0, "missing_parameter": 0,
        "wrong_value": 1, "wrong_entity": 0,
    }  # fmt: skip
    assert rows["search_hotel"]["wrong_value"] == 2 and rows["search_hotel"]["completed"] == 0
    assert rows["search_train"]["missing_parameter"] == 1
    assert rows["book_train"]["never_attempted"] == 1
    assert rows["book_restaurant"]["completion_rate"] == 1.0
    assert rows["search_attraction"]["completion_rate"] == 1.0


def test_one_run_only(planted):
    db, outputs = planted
    hotel_run = outputs["hotel"]["run_id"]
    report = metrics_report(db, hotel_run, resamples=10)
    assert report.run_ids == [hotel_run]
    assert (report.n, report.average_reward, report.success_rate) == (2, 0.0, 0.0)
    with pytest.raises(KeyError):
        metrics_report(db, "no-such-run")


def test_eval_reports_the_metrics_of_its_own_run(planted):
    _, outputs = planted
    perfect = outputs["perfect"]["metrics"]
    assert (perfect["n"], perfect["average_reward"], perfect["success_rate"]) == (1, 1.0, 1.0)
    mixed = outputs["mixed"]["metrics"]
    assert (mixed["average_reward"], mixed["goal_calls"], mixed["goals_completed"]) == (0.5, 2, 1)


# -- bootstrap ---------------------------------------------------------------------------------


def test_bootstrap_is_seeded_and_shares_draws_across_metrics(planted):
    db, _ = planted
    conversations = load_conversations(db).conversations
    first = bootstrap(conversations, sizes=[2, 5], resamples=200, seed=3)
    again = bootstrap(conversations, sizes=[2, 5], resamples=200, seed=3)
    other = bootstrap(conversations, sizes=[2, 5], resamples=200, seed=4)
    assert first.equals(again)
    assert not first.equals(other)
    assert list(first.columns) == ["metric", "n", "mean", "std", "resamples"]
    assert list(zip(first["metric"], first["n"])) == [
        ("average_reward", 2), ("success_rate", 2), ("average_reward", 5), ("success_rate", 5)
    ]


def test_bootstrap_std_matches_the_standard_error():
    # 0/1 scores with p = 0.25: the std of a mean of n draws is sqrt(p (1 - p) / n).
    scores = [1.0, 0.0, 0.0, 0.0] * 25
    frame = bootstrap_std({"success_rate": scores}, sizes=[4, 16, 64], resamples=20000, seed=0)
    for row in frame.to_dict(orient="records"):
        expected = math.sqrt(0.25 * 0.75 / row["n"])
        assert row["std"] == pytest.approx(expected, rel=0.03)
        assert row["mean"] == pytest.approx(0.25, abs=0.01)
    stds = list(frame["std"])
    assert stds == sorted(stds, reverse=True)  # more conversations, less spread


def test_bootstrap_edge_cases():
    assert bootstrap_std({"average_reward": [0.5] * 7}, sizes=[3])["std"].tolist() == [0.0]
    assert bootstrap_std({"average_reward": []}).empty
    assert default_sizes(60) == [5, 10, 25, 50, 60]
    assert default_sizes(450)[-2:] == [300, 450]
    with pytest.raises(ValueError):
        bootstrap_std({"a": [1.0], "b": [1.0, 0.0]})
    with pytest.raises(ValueError):
        bootstrap_std({"a": [1.0]}, sizes=[0])
    # The resampled means are means of real draws: never outside the scores' range.
    frame = bootstrap_std({"a": np.linspace(0, 1, 11)}, sizes=[1], resamples=500, seed=1)
    assert 0.0 <= frame["mean"][0] <= 1.0
