"""Error analysis (section 5.2) of stored conversations with planted mistakes (see
eval_fixtures.py), and of JOSH trees, whose ideal path is what counts."""

from __future__ import annotations

import pytest

from engine_fixtures import call, speak
from eval_fixtures import HOTEL, RESTAURANT, USER_TURNS, planted_database, write_json
from josh_core.analysis.conversations import load_conversations
from josh_core.analysis.errors import (
    conversation_errors,
    error_rates,
    error_report,
    errors_per_api,
    parameter_error_rows,
    parameter_errors,
)
from josh_core.analysis.metrics import records, summarize
from josh_core.rollout import RolloutConfig, start_run
from josh_core.search.labels import compute_labels
from josh_core.storage import reads
from josh_core.storage.db import Database


@pytest.fixture(scope="module")
def planted(toolwoz_data, tmp_path_factory):
    return planted_database(tmp_path_factory)


@pytest.fixture(scope="module")
def conversations(planted):
    return load_conversations(planted[0]).conversations


def test_table_4a_rates(conversations):
    rates = error_rates(conversations)
    # bad API use: both hotel conversations (unknown parameter) and eval-mixed (invalid value);
    # incorrect format: eval-train (a generation with no command) and eval-mixed (not JSON).
    assert (rates.n, rates.conversations_with_bad_api_use, rates.conversations_with_incorrect_format) == (5, 3, 2)
    assert rates.bad_api_use == pytest.approx(0.6)
    assert rates.incorrect_format == pytest.approx(0.4)
    assert (rates.calls, rates.failed_calls, rates.format_error_generations) == (11, 4, 1)
    assert rates.error_kinds == {"unknown_api": 0, "unknown_parameter": 2, "invalid_value": 1, "bad_format": 1}


def test_per_conversation_flags(conversations):
    rows = {r["scenario_id"]: r for r in conversation_errors(conversations).to_dict(orient="records")}
    assert [rows[s]["bad_api_use"] for s in ("eval-restaurant", "eval-hotel", "eval-train", "eval-mixed")] == [
        False, True, False, True
    ]
    assert [rows[s]["incorrect_format"] for s in ("eval-restaurant", "eval-hotel", "eval-train", "eval-mixed")] == [
        False, False, True, True
    ]
    assert rows["eval-train"]["format_error_generations"] == 1 and rows["eval-train"]["bad_format"] == 0
    assert (rows["eval-mixed"]["invalid_value"], rows["eval-mixed"]["bad_format"]) == (1, 1)


def test_figure_4c_errors_per_api(conversations):
    frame = errors_per_api(conversations)
    assert list(frame["api"]) == [
        "search_hotel", "search_restaurant", "(unparsed)", "search_train",
        "book_restaurant", "book_train", "search_attraction",
    ]  # fmt: skip
    rows = {r["api"]: r for r in frame.to_dict(orient="records")}
    assert rows["search_hotel"] == {
        "api": "search_hotel", "calls": 4, "failed_calls": 2, "unknown_api": 0, "unknown_parameter": 2,
        "invalid_value": 0, "bad_format": 0, "goal_calls": 2, "missed_goals": 2, "missed_attempted": 2,
        "never_attempted": 0, "errors": 4,
    }  # fmt: skip
    assert (rows["search_restaurant"]["calls"], rows["search_restaurant"]["invalid_value"],
            rows["search_restaurant"]["errors"]) == (3, 1, 2)  # fmt: skip
    assert (rows["(unparsed)"]["bad_format"], rows["(unparsed)"]["errors"]) == (1, 1)
    assert (rows["book_train"]["never_attempted"], rows["book_train"]["errors"]) == (1, 0)


def test_figure_5_parameter_errors(conversations):
    # records(): the JSON rows `josh errors --json` prints (pandas keeps None as NaN).
    assert records(parameter_errors(conversations)) == [
        {"label": "search_hotel: pricerange=moderate (wrong value)", "error": "wrong_value",
         "api": "search_hotel", "parameter": "pricerange", "expected": "moderate", "count": 2,
         "percent": 40.0, "most_common_got": "expensive"},
        {"label": "search_restaurant: food=chinese (wrong value)", "error": "wrong_value",
         "api": "search_restaurant", "parameter": "food", "expected": "chinese", "count": 1,
         "percent": 20.0, "most_common_got": "modern chinese"},
        {"label": "search_train: departure (missing)", "error": "missing_parameter",
         "api": "search_train", "parameter": "departure", "expected": None, "count": 1,
         "percent": 20.0, "most_common_got": None},
        {"label": "search_train: leaveAt (missing)", "error": "missing_parameter",
         "api": "search_train", "parameter": "leaveAt", "expected": None, "count": 1,
         "percent": 20.0, "most_common_got": None},
    ]  # fmt: skip
    assert len(parameter_errors(conversations, top=2)) == 2
    # One search_train call carried both missing parameters; book_train, never attempted,
    # adds none.
    detail = parameter_error_rows(conversations)
    train = detail[detail["api"] == "search_train"]
    assert sorted(train["parameter"]) == ["departure", "leaveAt"]
    assert train["call_index"].nunique() == 1
    assert "book_train" not in set(detail["api"])


# -- JOSH trees: the ideal path counts -----------------------------------------------------


def _josh_run(tmp_path, scenario, agent_turns) -> tuple[Database, str]:
    scenarios = write_json(tmp_path / "scenario.json", scenario.model_dump(mode="json"))
    agent = write_json(tmp_path / "agent.json", {"turns": agent_turns})
    user = write_json(tmp_path / "user.json", {"turns": USER_TURNS})
    from josh_core.evaluate import load_scenarios

    config = RolloutConfig(josh=True, agent=f"script:{agent}", user=f"script:{user}", beam=2, branching=2,
                           scenario_file=str(scenarios))  # fmt: skip
    result = start_run(tmp_path / "josh.duckdb", load_scenarios(scenario_file=scenarios), config)
    return Database(tmp_path / "josh.duckdb"), result.run_id


def test_josh_tree_counts_its_ideal_path(toolwoz_data, tmp_path):
    book = dict(time="12:15", day="saturday", name="da vinci pizzeria")
    db, run_id = _josh_run(
        tmp_path,
        RESTAURANT,
        [
            [[call("find_restaurant", food="italian"), speak("hmm")],  # unknown API, pruned
             [call("search_restaurant", food="italian", pricerange="cheap", area="north"), speak("found")]],
            [[call("book_restaurant", people="6", **book), speak("booked")],
             [call("book_restaurant", people="5", **book), speak("booked?")]],
        ],
    )  # fmt: skip
    [record] = reads.list_conversations(db, run_id=run_id)
    labels = compute_labels(reads.load_tree(db, record.id))
    assert labels[f"{record.id}:0.0"] == "negative" and labels[f"{record.id}:0.1.0.0"] == "ideal"

    ideal = load_conversations(db, run_id).conversations
    assert summarize(ideal).average_reward == 1.0 and summarize(ideal).success_rate == 1.0
    assert [c.call.name for c in ideal[0].calls] == ["search_restaurant", "book_restaurant"]
    assert error_rates(ideal).bad_api_use == 0.0

    every = load_conversations(db, run_id, nodes="all").conversations
    assert [c.call.name for c in every[0].calls] == [
        "find_restaurant", "search_restaurant", "book_restaurant", "book_restaurant"
    ]
    assert summarize(every).average_reward == 1.0  # goal outcomes stay the ideal path's
    report = error_report(db, run_id, nodes="all")
    assert report.rates.bad_api_use == 1.0
    rows = {r["api"]: r for r in report.per_api}
    assert rows["find_restaurant"]["unknown_api"] == 1 and rows["find_restaurant"]["goal_calls"] == 0


def test_josh_tree_without_a_goal_has_only_the_opener_on_its_ideal_path(toolwoz_data, tmp_path):
    db, run_id = _josh_run(
        tmp_path,
        HOTEL,
        [[[call("search_hotel", type="hotel", wifi="yes"), speak("hmm")], [speak("what do you need?")]]],
    )
    [conversation] = load_conversations(db, run_id).conversations
    assert conversation.reward == 0.0 and conversation.calls == []
    assert [g.reason for g in conversation.goals] == ["never_attempted"]
    assert error_report(db, run_id).rates.bad_api_use == 0.0
    assert error_report(db, run_id, nodes="all").rates.bad_api_use == 1.0
