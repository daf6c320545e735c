"""`--scoring reference` reproduces the original ToolWOZ code's rules: one test per difference
class of issue 14 (A-I and the smaller ones), each showing our scoring and the reference
disagreeing as the original code does, and a replay of every goal call of two splits."""

from __future__ import annotations

import pytest
from test_toolwoz_env import ITALIAN_CHEAP_CENTRE, make_scenario

from josh_core.envs.toolwoz.env import ToolWOZEnv, score_calls
from josh_core.envs.toolwoz.reference_scoring import REFERENCE, clean
from josh_core.envs.toolwoz.scenarios import load_split

ZIZZI_BOOKING = {"time": "18:30", "day": "friday", "people": "3"}
CAMBRIDGE_ELY_FRIDAY = {"departure": "cambridge", "destination": "ely", "day": "friday"}  # 10 trains, 05:50-23:50


def both(scenario, calls, db):
    """(our reward, the reference reward) of the same calls."""
    return (score_calls(scenario, calls, db=db).reward, score_calls(scenario, calls, db=db, scoring=REFERENCE).reward)


def call(api, **parameters):
    return {"name": api, "parameters": parameters}


@pytest.fixture
def zizzi(toolwoz_db):
    """Search cheap italian in the centre, book zizzi cambridge (not the first such row)."""
    return make_scenario(toolwoz_db, [("restaurant", ITALIAN_CHEAP_CENTRE, ZIZZI_BOOKING, "zizzi cambridge")])


def served(env, name, parameters):
    record = env.execute_call(name, parameters)
    assert record.result.ok, record.result.error
    return record.result.content


def test_unknown_scoring_is_refused(zizzi, toolwoz_db):
    with pytest.raises(ValueError, match="unknown ToolWOZ scoring 'paper'"):
        ToolWOZEnv(zizzi, db=toolwoz_db, scoring="paper")


def test_a_apostrophes_and_capitals_never_match_the_database(toolwoz_db):
    """A: the call's value is lower-cased and loses its apostrophes, the database's does not,
    so even the exact goal call for "kettle's yard" finds nothing."""
    scenario = make_scenario(toolwoz_db, [("attraction", {"name": "kettle's yard"}, None, None)])
    exact = [call("search_attraction", name="kettle's yard")]
    assert both(scenario, exact, toolwoz_db) == (1.0, 0.0)
    reference = ToolWOZEnv(scenario, db=toolwoz_db, scoring=REFERENCE)
    assert served(reference, "search_attraction", {"name": "kettle's yard"}) == []
    assert served(reference, "search_attraction", {"name": "Kettles Yard"}) == []
    # Capitals in the database: the cleaned call value can never equal them.
    fen_ditton = make_scenario(toolwoz_db, [("restaurant", {"name": "pizza express Fen Ditton"}, None, None)])
    assert both(fen_ditton, [call("search_restaurant", name="pizza express Fen Ditton")], toolwoz_db) == (1.0, 0.0)


def test_b_whitespace_is_compared_literally(toolwoz_db):
    scenario = make_scenario(toolwoz_db, [("attraction", {"name": "all saints church"}, None, None)])
    assert both(scenario, [call("search_attraction", name="all saints  church ")], toolwoz_db) == (1.0, 0.0)
    assert both(scenario, [call("search_attraction", name="all saints church")], toolwoz_db) == (1.0, 1.0)


def test_c_do_nt_care_filters_in_a_query(zizzi, toolwoz_db):
    """C: "do n't care" loses its apostrophe before the query's empty-value check, so it
    filters (nothing is named "do nt care"); "don't care" does not."""
    exact = dict(ITALIAN_CHEAP_CENTRE)
    assert both(zizzi, [call("search_restaurant", **exact, name="do n't care")], toolwoz_db) == (0.5, 0.0)
    assert both(zizzi, [call("search_restaurant", **exact, name="don't care")], toolwoz_db) == (0.5, 0.5)
    reference = ToolWOZEnv(zizzi, db=toolwoz_db, scoring=REFERENCE)
    assert served(reference, "search_restaurant", {**exact, "name": "do n't care"}) == []
    # The scorer tests the raw value: a goal's "do n't care" constrains nothing.
    goal = make_scenario(toolwoz_db, [("attraction", {"type": "museum", "area": "do n't care"}, None, None)])
    assert both(goal, [call("search_attraction", type="museum")], toolwoz_db) == (1.0, 1.0)


def test_d_non_string_values(zizzi, toolwoz_db):
    """D: an int where the goal has a string fails (2 is not "2"); a bool or int in an extra
    parameter filters nothing and passes the subset test (ours refuses a bool)."""
    search = call("search_restaurant", **ITALIAN_CHEAP_CENTRE)
    assert both(zizzi, [search, call("book_restaurant", **{**ZIZZI_BOOKING, "people": 3}, name="zizzi cambridge")],
                toolwoz_db) == (1.0, 0.5)
    extra_bool = call("search_restaurant", **ITALIAN_CHEAP_CENTRE, name=True)
    assert both(zizzi, [extra_bool], toolwoz_db) == (0.0, 0.5)
    reference = ToolWOZEnv(zizzi, db=toolwoz_db, scoring=REFERENCE)
    assert served(reference, "search_restaurant", {**ITALIAN_CHEAP_CENTRE, "name": 7})[0]["name"] == "zizzi cambridge"


def test_e_a_booking_that_got_an_error_still_counts(zizzi, toolwoz_db):
    booking = call("book_restaurant", **ZIZZI_BOOKING, name="zizzi cambridge", phone="01223")
    reference = ToolWOZEnv(zizzi, db=toolwoz_db, scoring=REFERENCE)
    record = reference.execute_call(booking["name"], booking["parameters"])
    assert not record.result.ok and record.result.error_kind == "unknown_parameter"
    assert both(zizzi, [booking], toolwoz_db) == (0.0, 0.5)


def test_f1_under_specified_train_search_must_be_served_the_goal_times(toolwoz_db):
    """F1: without a booking, an under-specified search counts only when the served row
    equals the goal's values as strings, leaveAt included; ours reads leaveAt as a bound."""
    goal = {**CAMBRIDGE_ELY_FRIDAY, "leaveAt": "05:00"}  # every cambridge-ely friday train leaves later
    scenario = make_scenario(toolwoz_db, [("train", goal, None, None)])
    under = [call("search_train", **CAMBRIDGE_ELY_FRIDAY)]
    assert both(scenario, under, toolwoz_db) == (1.0, 0.0)
    assert both(scenario, [call("search_train", **goal)], toolwoz_db) == (1.0, 1.0)


def test_f2_under_specified_search_can_be_served_the_booking_entity(toolwoz_db):
    """F2: the "wrong answer" is the last row that fails the goal's subset test, which for
    trains (leaveAt compared as a string) is usually any row, the booking entity included."""
    goal = {**CAMBRIDGE_ELY_FRIDAY, "leaveAt": "10:00"}
    scenario = make_scenario(toolwoz_db, [("train", goal, {"people": "2"}, "TR2894")])  # the 23:50, the last row
    under = [call("search_train", **CAMBRIDGE_ELY_FRIDAY)]
    ours = ToolWOZEnv(scenario, db=toolwoz_db)
    reference = ToolWOZEnv(scenario, db=toolwoz_db, scoring=REFERENCE)
    assert served(reference, "search_train", CAMBRIDGE_ELY_FRIDAY)[0]["trainID"] == "TR2894"
    assert served(ours, "search_train", CAMBRIDGE_ELY_FRIDAY)[0]["trainID"] != "TR2894"
    assert both(scenario, under, toolwoz_db) == (0.0, 0.5)


def test_g_no_single_result_equivalence(toolwoz_db):
    goal = {"food": "vietnamese", "pricerange": "cheap"}  # selects thanh binh alone
    scenario = make_scenario(toolwoz_db, [("restaurant", goal, None, None)])
    assert both(scenario, [call("search_restaurant", name="thanh binh")], toolwoz_db) == (1.0, 0.0)


def test_h_times_are_compared_as_strings(zizzi, toolwoz_db):
    """H: "9:30" is later than every "HH:MM" as a string, so leaveAt 9:30 finds nothing; a
    word filters by its place among strings ("any": leaveAt nothing left, arriveBy nothing
    removed)."""
    ours = ToolWOZEnv(zizzi, db=toolwoz_db)
    reference = ToolWOZEnv(zizzi, db=toolwoz_db, scoring=REFERENCE)
    asked = {**CAMBRIDGE_ELY_FRIDAY, "leaveAt": "9:30"}
    assert served(ours, "search_train", asked)[0]["leaveAt"] == "09:50"
    assert served(reference, "search_train", asked) == []
    assert served(reference, "search_train", {**CAMBRIDGE_ELY_FRIDAY, "leaveAt": "09:30"})[0]["leaveAt"] == "09:50"
    assert served(reference, "search_train", {**CAMBRIDGE_ELY_FRIDAY, "leaveAt": "any"}) == []
    assert served(reference, "search_train", {**CAMBRIDGE_ELY_FRIDAY, "arriveBy": "any"})[0]["leaveAt"] == "05:50"
    assert ours.execute_call("search_train", {**CAMBRIDGE_ELY_FRIDAY, "arriveBy": "any"}).result.error_kind == "invalid_value"


def test_i_invalid_enum_or_time_values_find_nothing(zizzi, toolwoz_db):
    ours = ToolWOZEnv(zizzi, db=toolwoz_db)
    reference = ToolWOZEnv(zizzi, db=toolwoz_db, scoring=REFERENCE)
    for name, parameters in [("search_hotel", {"area": "downtown"}), ("search_train", {"leaveAt": "noon"})]:
        assert ours.execute_call(name, parameters).result.error_kind == "invalid_value"
        assert served(reference, name, parameters) == []


def test_failed_booking_returns_an_empty_object(zizzi, toolwoz_db):
    wrong_day = {**ZIZZI_BOOKING, "day": "monday", "name": "zizzi cambridge"}
    assert served(ToolWOZEnv(zizzi, db=toolwoz_db), "book_restaurant", wrong_day) == {"success": False, "return": None}
    reference = ToolWOZEnv(zizzi, db=toolwoz_db, scoring=REFERENCE)
    assert served(reference, "book_restaurant", wrong_day) == {"success": False, "return": {}}


def test_book_attraction_taxi_and_hospital_apis_are_accepted(zizzi, toolwoz_db):
    ours = ToolWOZEnv(zizzi, db=toolwoz_db)
    reference = ToolWOZEnv(zizzi, db=toolwoz_db, scoring=REFERENCE)
    for name in ("book_attraction", "book_taxi", "book_hospital"):
        assert ours.execute_call(name, {}).result.error_kind == "unknown_api"
        assert served(reference, name, {}) == {"success": False, "return": {}}
    for name, parameters in [("search_taxi", {"destination": "ely"}), ("search_hospital", {"department": "neurology"})]:
        assert ours.execute_call(name, parameters).result.error_kind == "unknown_api"
        assert served(reference, name, parameters) == []
    # Parameters outside the original's definitions are still refused.
    assert reference.execute_call("book_attraction", {"name": "x"}).result.error_kind == "unknown_parameter"
    assert reference.execute_call("search_hotel", {"area": ["north"]}).result.error_kind == "invalid_value"


def test_the_last_of_several_rows_sharing_a_train_id_is_served(toolwoz_db):
    # TR6110 runs cambridge-london kings cross on monday and cambridge-kings lynn on tuesday.
    scenario = make_scenario(toolwoz_db, [("train", {"departure": "cambridge"}, {"people": "1"}, "TR6110")])
    ours = ToolWOZEnv(scenario, db=toolwoz_db)
    reference = ToolWOZEnv(scenario, db=toolwoz_db, scoring=REFERENCE)
    assert served(ours, "search_train", {"departure": "cambridge"})[0]["destination"] == "london kings cross"
    assert served(reference, "search_train", {"departure": "cambridge"})[0]["destination"] == "kings lynn"
    assert both(scenario, [call("search_train", departure="cambridge")], toolwoz_db) == (0.5, 0.5)


def test_reference_score_report_explains_misses_with_our_diff(toolwoz_db):
    scenario = make_scenario(toolwoz_db, [("attraction", {"name": "kettle's yard"}, None, None)])
    report = score_calls(scenario, [call("search_attraction", name="kettle's yard")], db=toolwoz_db, scoring=REFERENCE)
    assert report.completed == [] and [m.goal_id for m in report.missed] == ["0:search_attraction"]
    env = ToolWOZEnv(scenario, db=toolwoz_db, scoring=REFERENCE)
    assert env.completed_goals([env.execute_call("search_attraction", {"name": "kettle's yard"})]) == set()


def _rule_a_applies(call) -> bool:
    """Whether a goal call holds a value that the original's cleaning changes (rule A)."""
    return any(isinstance(v, str) and clean(v) != v for v in call.parameters.values())


def test_replaying_the_goal_calls_disagrees_only_where_rule_a_applies(toolwoz_db):
    """Exact goal calls of every official-test and test scenario: ours always scores 1.0; the
    reference mostly does too (the issue measured 98.8% agreement over all 7,849 original
    scenarios), and every goal it misses is a search whose value has capitals or an
    apostrophe: rule A, nothing else."""
    scenarios = load_split("test")  # official-test is its first 450
    agree = 0
    for scenario in scenarios:
        ours = ToolWOZEnv(scenario, db=toolwoz_db)
        reference = ToolWOZEnv(scenario, db=toolwoz_db, scoring=REFERENCE)
        our_report = ours.score([ours.execute_call(c.name, c.parameters) for c in scenario.goal_calls])
        records = [reference.execute_call(c.name, c.parameters) for c in scenario.goal_calls]
        ref_report = reference.score(records)
        assert our_report.reward == 1.0, scenario.id
        assert all(r.result.ok for r in records), scenario.id
        agree += ref_report.reward == our_report.reward
        goals = dict(zip(scenario.goal_call_ids(), scenario.goal_calls))
        for missed in ref_report.missed:
            goal = goals[missed.goal_id]
            assert goal.intent == "search" and _rule_a_applies(goal), (scenario.id, missed.goal_id, goal.parameters)
        for goal_id, goal in goals.items():  # and rule A always bites a search goal
            if goal.intent == "search" and _rule_a_applies(goal):
                assert goal_id not in ref_report.completed, (scenario.id, goal_id)
    assert 0.95 * len(scenarios) < agree < len(scenarios)
