"""Serving (Algorithm 2), booking (Algorithm 3), goal scoring (appendix A) and bad calls."""

from __future__ import annotations

import pytest

from josh_core.envs.toolwoz.db import entity_id_field
from josh_core.envs.toolwoz.env import ToolWOZEnv, score_calls
from josh_core.envs.toolwoz.build.generate import booking_reference, fill_search_returns
from josh_core.envs.toolwoz.scenarios import load_split
from josh_core.envs.toolwoz.types import DomainGoal, GoalCall, Scenario
from josh_core.types import ApiCallRecord, ToolCall

ITALIAN_CHEAP_CENTRE = {"food": "italian", "pricerange": "cheap", "area": "centre"}


def make_scenario(db, spec: list[tuple[str, dict, dict | None, str | None]], sid: str = "test-scenario") -> Scenario:
    """spec: (domain, info, book params or None, booking entity id or None) per domain."""
    goals, calls = {}, []
    for domain, info, book, entity in spec:
        goals[domain] = DomainGoal(info=info, book=book or {}, reqt=["phone"] if domain != "train" else ["price"])
        calls.append(GoalCall(name=f"search_{domain}", parameters=dict(info)))
        if book is not None:
            id_field = entity_id_field(domain)
            calls.append(
                GoalCall(
                    name=f"book_{domain}",
                    parameters={**book, id_field: entity},
                    returns={id_field: entity, "reference": booking_reference(sid, domain, entity)},
                    unique_id=entity,
                )
            )
    scenario = Scenario(id=sid, domains=[s[0] for s in spec], goal=goals, instructions=["test"], goal_calls=calls)
    fill_search_returns(scenario, db)
    return scenario


def served_name(record: ApiCallRecord) -> str | None:
    assert record.result.ok, record.result.error
    return record.result.content[0]["name"] if record.result.content else None


@pytest.fixture
def booking_env(toolwoz_db):
    """Book zizzi cambridge, one of the cheap italian restaurants in the centre (not the first)."""
    scenario = make_scenario(
        toolwoz_db,
        [("restaurant", ITALIAN_CHEAP_CENTRE, {"time": "18:30", "day": "friday", "people": "3"}, "zizzi cambridge")],
    )
    return ToolWOZEnv(scenario, db=toolwoz_db)


# ---------------------------------------------------------------------------- whole splits
def test_every_official_test_scenario_scores_one_with_its_goal_calls_and_zero_without(toolwoz_db):
    scenarios = load_split("official-test")
    assert len(scenarios) == 450
    for scenario in scenarios:
        env = ToolWOZEnv(scenario, db=toolwoz_db)
        records = [env.execute_call(call.name, call.parameters) for call in scenario.goal_calls]
        for call, record in zip(scenario.goal_calls, records):
            expected = call.returns if call.intent == "search" else {"success": True, "return": call.returns}
            assert record.result.content == expected, (scenario.id, call.name)
        report = env.score(records)
        assert report.reward == 1.0 and report.success, (scenario.id, report.missed)
        assert env.completed_goals(records) == set(env.goal_ids())
        empty = env.score([])
        assert empty.reward == 0.0 and not empty.success
        assert {m.reason for m in empty.missed} == {"never_attempted"}


def test_goal_order_does_not_matter(booking_env):
    calls = list(reversed(booking_env.scenario.goal_calls))
    records = [booking_env.execute_call(c.name, c.parameters) for c in calls]
    assert booking_env.score(records).reward == 1.0


# ---------------------------------------------------------------------------- serving
def test_goal_search_is_served_the_booking_entity(booking_env, toolwoz_db):
    rows = toolwoz_db.query("restaurant", ITALIAN_CHEAP_CENTRE)
    assert toolwoz_db.entity_id("restaurant", rows[0]) != "zizzi cambridge"  # not simply the first row
    record = booking_env.execute_call("search_restaurant", {**ITALIAN_CHEAP_CENTRE, "food": "Italian"})
    assert served_name(record) == "zizzi cambridge"
    assert booking_env.score([record]).completed == ["0:search_restaurant"]


def test_under_specified_search_is_served_a_non_goal_entity(booking_env):
    record = booking_env.execute_call("search_restaurant", {"food": "italian"})
    served = record.result.content[0]
    assert not (served["area"] == "centre" and served["pricerange"] == "cheap")
    report = booking_env.score([record])
    assert report.reward == 0.0
    missed = report.missed[0]
    assert missed.reason == "missing_parameter" and missed.closest_call == 0
    assert {(d.parameter, d.kind) for d in missed.details} == {("pricerange", "missing"), ("area", "missing")}


def test_search_that_excludes_the_booking_entity_gets_another_or_nothing(booking_env, toolwoz_db):
    # All goal parameters plus a name that is another matching restaurant: no correct row, and
    # the only row satisfies the goal (so it is not "wrong" either): nothing is served.
    record = booking_env.execute_call("search_restaurant", {**ITALIAN_CHEAP_CENTRE, "name": "ask restaurant"})
    assert record.result.ok and record.result.content == []
    report = booking_env.score([record])
    assert report.missed[0].goal_id == "0:search_restaurant"
    assert report.missed[0].reason == "wrong_entity"
    assert [(d.parameter, d.kind, d.got) for d in report.missed[0].details] == [("name", "unexpected", "ask restaurant")]


def test_wrong_entity_search_without_goal_parameters(booking_env):
    # Searching another restaurant by name serves it, but it is not the booking entity.
    record = booking_env.execute_call("search_restaurant", {"name": "pizza hut city centre"})
    assert served_name(record) == "pizza hut city centre"
    missed = booking_env.score([record]).missed[0]
    assert missed.reason == "missing_parameter" and missed.served == "pizza hut city centre"


def test_wrong_value_is_reported_with_expected_and_got(booking_env):
    records = [
        booking_env.execute_call("search_restaurant", {"food": "chinese"}),
        booking_env.execute_call("search_restaurant", {"food": "chinese", "area": "centre", "pricerange": "cheap"}),
    ]
    missed = booking_env.score(records).missed[0]
    assert missed.reason == "wrong_value" and missed.closest_call == 1 and missed.attempts == 2
    assert [(d.parameter, d.kind, d.expected, d.got) for d in missed.details] == [("food", "wrong_value", "italian", "chinese")]


def test_under_specified_search_completes_when_no_non_goal_entity_exists(toolwoz_db):
    # ali baba is the only lebanese restaurant: {food: lebanese} can only serve the goal.
    scenario = make_scenario(
        toolwoz_db, [("restaurant", {"food": "lebanese", "area": "centre"}, {"time": "12:00", "day": "monday", "people": "2"}, "ali baba")]
    )
    env = ToolWOZEnv(scenario, db=toolwoz_db)
    record = env.execute_call("search_restaurant", {"food": "lebanese"})
    assert served_name(record) == "ali baba"
    assert env.score([record]).completed == ["0:search_restaurant"]


def test_single_result_equivalence(toolwoz_db):
    # The goal parameters select exactly one restaurant; searching it by name selects the same
    # single row although neither parameter set contains the other.
    goal = {"food": "vietnamese", "pricerange": "cheap"}
    assert len(toolwoz_db.query("restaurant", goal)) == 1
    scenario = make_scenario(toolwoz_db, [("restaurant", goal, None, None)])
    env = ToolWOZEnv(scenario, db=toolwoz_db)
    same = env.execute_call("search_restaurant", {"name": "Thanh Binh"})
    other = env.execute_call("search_restaurant", {"name": "ali baba"})
    assert env.score([other]).reward == 0.0
    assert env.score([other, same]).completed == ["0:search_restaurant"]
    # an equivalent search in a scenario that books must still land on the booking entity
    booked = make_scenario(toolwoz_db, [("restaurant", goal, {"time": "19:00", "day": "sunday", "people": "2"}, "thanh binh")])
    env = ToolWOZEnv(booked, db=toolwoz_db)
    assert env.score([env.execute_call("search_restaurant", {"name": "thanh binh"})]).reward == 0.5


def test_apostrophes_in_names_find_the_entity(toolwoz_db):
    scenario = make_scenario(toolwoz_db, [("attraction", {"name": "king's college"}, None, None)])
    env = ToolWOZEnv(scenario, db=toolwoz_db)
    for name in ["kings college", "King's College", "king’s college"]:
        record = env.execute_call("search_attraction", {"name": name})
        assert served_name(record) == "king's college"
        assert env.score([record]).reward == 1.0


def test_search_without_goal_in_domain_serves_first_row(booking_env, toolwoz_db):
    record = booking_env.execute_call("search_hotel", {"area": "north"})
    assert record.result.content[0]["name"] == toolwoz_db.entity_id("hotel", toolwoz_db.query("hotel", {"area": "north"})[0])
    assert booking_env.execute_call("search_hotel", {"area": "centre", "stars": "1"}).result.content == []


# ---------------------------------------------------------------------------- booking
def test_booking_succeeds_only_for_the_goal_booking(booking_env):
    goal = booking_env.scenario.goal_calls[1]
    ok = booking_env.execute_call("book_restaurant", {"name": "Zizzi Cambridge", "time": "18:30", "day": "friday", "people": 3})
    assert ok.result.content == {"success": True, "return": goal.returns}
    assert len(goal.returns["reference"]) == 8
    for wrong in (
        {"name": "zizzi cambridge", "time": "18:30", "day": "saturday", "people": "3"},
        {"name": "ask restaurant", "time": "18:30", "day": "friday", "people": "3"},
        {"name": "zizzi cambridge", "time": "18:30", "day": "friday"},
    ):
        record = booking_env.execute_call("book_restaurant", wrong)
        assert record.result.ok and record.result.content == {"success": False, "return": None}
    assert booking_env.execute_call("book_hotel", {"name": "acorn guest house", "stay": "2"}).result.content["success"] is False


def test_missed_booking_keeps_the_closest_attempt(booking_env):
    calls = [
        ("book_restaurant", {"name": "ask restaurant", "day": "monday"}),
        ("book_restaurant", {"name": "zizzi cambridge", "time": "18:30", "day": "saturday", "people": "3"}),
        ("book_restaurant", {"name": "zizzi cambridge", "time": "18:30", "people": "3"}),
    ]
    report = booking_env.score([booking_env.execute_call(n, p) for n, p in calls])
    book = next(m for m in report.missed if m.api == "book_restaurant")
    # attempts 1 and 2 are both one parameter away; the latest wins the tie
    assert book.closest_call == 2 and book.reason == "missing_parameter" and book.attempts == 3
    assert [(d.parameter, d.kind, d.expected) for d in book.details] == [("day", "missing", "friday")]
    assert next(m for m in report.missed if m.api == "search_restaurant").reason == "never_attempted"


# ---------------------------------------------------------------------------- trains
def test_train_time_bounds_are_strict(toolwoz_db):
    route = {"departure": "cambridge", "destination": "ely", "day": "monday"}
    rows = [toolwoz_db.row("train", i) for i in toolwoz_db.query("train", route)]
    first = min(rows, key=lambda r: r["leaveAt"])
    after = [toolwoz_db.row("train", i) for i in toolwoz_db.query("train", {**route, "leaveAt": first["leaveAt"]})]
    assert first not in after and all(r["leaveAt"] > first["leaveAt"] for r in after) and len(after) == len(rows) - 1
    last = max(rows, key=lambda r: r["arriveBy"])
    before = [toolwoz_db.row("train", i) for i in toolwoz_db.query("train", {**route, "arriveBy": last["arriveBy"]})]
    assert last not in before and all(r["arriveBy"] < last["arriveBy"] for r in before)


def test_train_booking_goal_is_served_by_time_bound_search(toolwoz_db):
    route = {"departure": "cambridge", "destination": "ely", "day": "monday"}
    rows = sorted((toolwoz_db.row("train", i) for i in toolwoz_db.query("train", route)), key=lambda r: r["leaveAt"])
    target = rows[3]
    leave_bound = rows[2]["leaveAt"]  # strictly after the train before it: target leaves first
    scenario = make_scenario(toolwoz_db, [("train", {**route, "leaveAt": leave_bound}, {"people": "2"}, target["trainID"])])
    env = ToolWOZEnv(scenario, db=toolwoz_db)
    record = env.execute_call("search_train", {**route, "leaveAt": leave_bound})
    assert record.result.content[0]["trainID"] == target["trainID"]
    padded = env.execute_call("search_train", {**route, "leaveAt": leave_bound.lstrip("0")})
    assert padded.result.content == record.result.content
    # an earlier bound is under-specified for this goal: it is served another train
    early = env.execute_call("search_train", {**route})
    assert early.result.content[0]["trainID"] != target["trainID"]
    book = env.execute_call("book_train", {"trainID": target["trainID"].lower(), "people": "2"})
    assert env.score([record, book]).reward == 1.0


# ---------------------------------------------------------------------------- bad calls
@pytest.mark.parametrize(
    "name, parameters, kind",
    [
        ("find_restaurant", {"food": "thai"}, "unknown_api"),
        ("book_attraction", {}, "unknown_api"),
        ("search_restaurant", {"cuisine": "thai"}, "unknown_parameter"),
        ("search_restaurant", {"food": ["thai", "chinese"]}, "invalid_value"),
        ("search_restaurant", {"food": {"type": "thai"}}, "invalid_value"),
        ("search_hotel", {"parking": True}, "invalid_value"),
        ("search_restaurant", {"area": "center"}, "invalid_value"),
        ("search_hotel", {"stars": "five"}, "invalid_value"),
        ("search_train", {"leaveAt": "after lunch"}, "invalid_value"),
    ],
)
def test_bad_calls_return_errors_and_never_raise(booking_env, name, parameters, kind):
    record = booking_env.execute(ToolCall(name=name, parameters=parameters))
    assert not record.result.ok and record.result.error_kind == kind
    assert record.result.as_text().startswith("ERROR: ") and len(record.result.error) > 20
    assert record.call is not None and record.call.name == name


def test_unparseable_call_is_bad_format(booking_env):
    record = booking_env.execute(None, raw='APICALL {"name": "search_restaurant", "parameters": {')
    assert record.call is None and record.raw.startswith("APICALL")
    assert record.result.error_kind == "bad_format" and "JSON" in record.result.error


def test_bad_calls_do_not_complete_goals_but_are_counted(booking_env):
    bad = booking_env.execute_call("search_restaurant", {**ITALIAN_CHEAP_CENTRE, "stars": "4"})
    assert bad.result.error_kind == "unknown_parameter"
    report = booking_env.score([bad])
    assert report.reward == 0.0
    assert report.missed[0].reason == "never_attempted" and report.missed[0].failed_calls == 1


def test_enum_and_empty_values_are_normalised(booking_env):
    record = booking_env.execute_call("search_restaurant", {**ITALIAN_CHEAP_CENTRE, "pricerange": "CHEAP", "name": "dontcare"})
    assert served_name(record) == "zizzi cambridge"


def test_tools_schema_lists_the_seven_apis(booking_env):
    names = [tool["function"]["name"] for tool in booking_env.tools()]
    assert names == ["search_restaurant", "book_restaurant", "search_hotel", "book_hotel", "search_attraction", "search_train", "book_train"]
    hotel = next(t for t in booking_env.tools() if t["function"]["name"] == "search_hotel")["function"]
    assert hotel["parameters"]["properties"]["stars"]["enum"] == ["0", "1", "2", "3", "4"]
    assert hotel["parameters"]["required"] == []


def test_api_examples_are_valid_calls(toolwoz_db):
    from josh_core.envs.toolwoz.apis import API_EXAMPLES, API_PARAMETERS, validate_call

    assert [e["name"] for e in API_EXAMPLES] == list(API_PARAMETERS)
    for example in API_EXAMPLES:
        tool, args = validate_call(example["name"], example["parameters"])
        if tool.name.startswith("search_"):
            assert toolwoz_db.query(tool.domain, args), example
        else:
            id_field = entity_id_field(tool.domain)
            assert toolwoz_db.find(tool.domain, args[id_field]) is not None, example


# ---------------------------------------------------------------------------- fail_info / fail_book
def test_fail_info_constraints_find_nothing_and_info_completes(toolwoz_db):
    scenario = next(s for s in load_split("train", limit=300) if any(g.fail_info for g in s.goal.values()))
    env = ToolWOZEnv(scenario, db=toolwoz_db)
    domain = next(d for d, g in scenario.goal.items() if g.fail_info)
    goal = scenario.goal[domain]
    assert set(goal.fail_info) == set(goal.info) and goal.fail_info != goal.info
    first = env.execute_call(f"search_{domain}", goal.fail_info)
    assert first.result.ok and first.result.content == []
    second = env.execute_call(f"search_{domain}", goal.info)
    assert second.result.content
    report = env.score([first, second])
    assert f"search_{domain}" in {g.split(":")[1] for g in report.completed}


def test_fail_book_values_fail_and_book_values_succeed(toolwoz_db):
    scenario = next(s for s in load_split("train", limit=300) if any(g.fail_book for g in s.goal.values()))
    env = ToolWOZEnv(scenario, db=toolwoz_db)
    domain = next(d for d, g in scenario.goal.items() if g.fail_book)
    goal = scenario.goal[domain]
    book_call = next(c for c in scenario.goal_calls if c.name == f"book_{domain}")
    id_field = entity_id_field(domain)
    first = env.execute_call(book_call.name, {**goal.book, **goal.fail_book, id_field: book_call.unique_id})
    assert first.result.content == {"success": False, "return": None}
    second = env.execute_call(book_call.name, {**goal.book, id_field: book_call.unique_id})
    assert second.result.content["success"] is True
    assert second.result.content["return"]["reference"] == book_call.returns["reference"]
    failed_only = env.score([first])
    missed = next(m for m in failed_only.missed if m.api == book_call.name)
    assert missed.reason == "wrong_value"
    assert {d.parameter for d in missed.details if d.kind == "wrong_value"} == set(goal.fail_book)


def test_score_calls_executes_plain_calls(booking_env, toolwoz_db):
    calls = [{"name": c.name, "parameters": c.parameters} for c in booking_env.scenario.goal_calls]
    assert score_calls(booking_env.scenario, calls, db=toolwoz_db).reward == 1.0
    assert score_calls(booking_env.scenario, calls[:1], db=toolwoz_db).reward == 0.5
