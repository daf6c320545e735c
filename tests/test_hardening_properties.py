"""Property-based tests (hypothesis): the ReACT parser, the ToolWOZ API executor and scoring
take any input without raising, and the goal calls of any scenario score 1.0."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from josh_core.policies.parse import ParsedAction, parse_call, parse_react
from josh_core.envs.toolwoz.apis import API_NAMES, API_PARAMETERS, CallError, validate_call
from josh_core.types import ApiCallRecord, ToolCall

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def nested(depth: int, leaf: object = "x", kind: str = "list") -> object:
    value = leaf
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=16,
) | st.builds(nested, st.integers(0, 3000), st.just("x"), st.sampled_from(["list", "dict"]))

ALL_PARAMETERS = sorted({p for params in API_PARAMETERS.values() for p in params})
api_names = st.sampled_from(list(API_NAMES)) | st.text(max_size=20) | st.sampled_from(["book_attraction", ""])
parameter_names = st.sampled_from(ALL_PARAMETERS) | st.text(max_size=12)
parameters = st.dictionaries(parameter_names, json_values | st.sampled_from(["centre", "cheap", "dontcare", "18:30"]),
                             max_size=6)
tool_calls = st.builds(ToolCall, name=api_names, parameters=parameters)

# ReACT-ish text: the parser's own vocabulary mixed with arbitrary text and JSON fragments.
REACT_PIECES = ["PLAN", "APICALL", "SPEAK", "<COMMAND_END>", "**APICALL**", "SPEAK:", "\n", " ", "{", "}", "[", "]",
                '"name"', '"parameters"', '"arguments"', ":", ",", '"search_hotel"', '{"area": "north"}', "null",
                "APIRETURN", "1e999", '"\\ud800"']
react_text = st.text() | st.lists(st.sampled_from(REACT_PIECES) | st.text(max_size=10), max_size=40).map("".join)
deep_calls = st.builds(
    lambda n, kind, plan: (f"PLAN {plan} <COMMAND_END> " if plan else "") + "APICALL "
    + '{"name": "search_hotel", "parameters": {"area": ' + ("[" * n if kind == "list" else '{"a": ' * n) + "1"
    + ("]" * n if kind == "list" else "}" * n) + "}} <COMMAND_END>",
    st.integers(0, 20_000), st.sampled_from(["list", "dict"]), st.text(max_size=10),
)


@SETTINGS
@given(react_text | deep_calls)
def test_the_react_parser_takes_any_text(text):
    parsed = parse_react(text)
    assert isinstance(parsed, ParsedAction)
    assert parsed.kind in ("apicall", "speak", "format_error")
    if parsed.kind == "apicall" and parsed.call is not None:
        assert isinstance(parsed.call.name, str) and isinstance(parsed.call.parameters, dict)
    if parsed.kind == "speak":
        assert parsed.speak
    assert isinstance(parsed.text, str)
    call = parse_call(text)
    assert call is None or isinstance(call, ToolCall)


@SETTINGS
@given(st.builds(lambda name, params: json.dumps({"name": name, "parameters": params}), st.sampled_from(API_NAMES),
                 st.dictionaries(st.sampled_from(ALL_PARAMETERS), st.text(max_size=20), max_size=4)))
def test_a_well_formed_apicall_round_trips(body):
    parsed = parse_react(f"PLAN look it up <COMMAND_END> APICALL {body} <COMMAND_END>")
    assert parsed.kind == "apicall" and parsed.call is not None
    assert parsed.call.model_dump(exclude={"id"}) == json.loads(body)
    assert parse_react(parsed.text).call == parsed.call  # the kept text reads back the same


@pytest.fixture(scope="module")
def scenarios(toolwoz_data):
    from josh_core.envs.toolwoz.scenarios import load_split

    return [s for split in ("train", "val", "test") for s in load_split(split)]


@pytest.fixture(scope="module")
def envs(scenarios, toolwoz_db):
    from josh_core.envs.toolwoz.env import ToolWOZEnv

    from josh_core.envs.toolwoz.reference_scoring import SCORING_MODES

    # A spread of scenarios (one domain and several, booking and not), in every scoring mode.
    return [ToolWOZEnv(s, db=toolwoz_db, scoring=mode) for s in scenarios[::400] for mode in SCORING_MODES]


@SETTINGS
@given(data=st.data())
def test_validate_call_raises_only_call_errors(data):
    name = data.draw(api_names)
    params = data.draw(parameters | json_values)
    try:
        tool, args = validate_call(name, params)
    except CallError as error:
        assert error.kind in ("unknown_api", "unknown_parameter", "invalid_value", "bad_format")
        assert len(error.message) < 2000
    else:
        assert tool.name == name and all(isinstance(v, str) for v in args.values())


@SETTINGS
@given(data=st.data())
def test_the_executor_and_scoring_take_any_calls(envs, data):
    env = data.draw(st.sampled_from(envs))
    records: list[ApiCallRecord] = []
    for item in data.draw(st.lists(tool_calls | st.none() | st.text(max_size=40), max_size=8)):
        if isinstance(item, ToolCall):
            record = env.execute(item)
        else:
            record = env.execute(None, item)
        assert isinstance(record, ApiCallRecord)
        assert record.result.ok or record.result.error_kind is not None
        record.result.as_text()  # what the agent is shown
        records.append(record)
    report = env.score(records)
    assert 0.0 <= report.reward <= 1.0
    assert len(report.completed) + len(report.missed) == len(env.goal_ids())
    assert env.completed_goals(records) == set(report.completed)


@SETTINGS
@given(data=st.data())
def test_the_goal_calls_of_any_scenario_score_one(scenarios, toolwoz_db, data):
    from josh_core.envs.toolwoz.env import score_calls

    scenario = data.draw(st.sampled_from(scenarios))
    calls = [{"name": g.name, "parameters": dict(g.parameters)} for g in scenario.goal_calls]
    order = data.draw(st.permutations(calls))
    report = score_calls(scenario, order, db=toolwoz_db)
    assert report.reward == 1.0 and report.success, (scenario.id, report.missed)
    noise = data.draw(st.lists(tool_calls, max_size=3))
    assume(all(isinstance(c.parameters, dict) for c in noise))
    assert score_calls(scenario, [*noise, *order], db=toolwoz_db).reward == 1.0


@SETTINGS
@given(data=st.data())
def test_score_calls_takes_any_json_calls(scenarios, toolwoz_db, data):
    from josh_core.envs.toolwoz.env import score_calls

    scenario = data.draw(st.sampled_from(scenarios))
    calls = data.draw(st.lists(
        st.fixed_dictionaries({"name": api_names | json_values}, optional={"parameters": json_values | parameters}),
        max_size=5,
    ))
    report = score_calls(scenario, calls, db=toolwoz_db)
    assert 0.0 <= report.reward <= 1.0
