"""Grounded values: what a conversation offers, the grammar built from it, the agents' use of
it per generation, and the `--decoding` modes that select it."""

from __future__ import annotations

import asyncio
import json

import pytest
from model_fixtures import ScriptedBackend, tool_choice

from josh_core.llm.base import OutputConstraint
from josh_core.llm.structured import format_react, gbnf_for, matches_constraint, react_constraint
from josh_core.policies.factory import DECODING_MODES, AgentOptions, decoding_flags, decoding_mode
from josh_core.policies.grounding import (
    MAX_VALUES,
    conversation_values,
    grounded_tools,
    result_values,
    word_ngrams,
)
from josh_core.policies.prompts import APIRETURN, react_format_feedback
from josh_core.policies.react_agent import ReactAgent
from josh_core.envs.toolwoz.apis import TOOLS
from josh_core.types import Message

USER = Message(role="user", content="Hi! A train to Stansted Airport, arriving by 10:45, for 2 people.")


def _call(**params: str) -> str:
    return format_react("search", call={"name": "search_train", "parameters": params})


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from josh_core.llm.embedded import embedded_model_dir

    return AutoTokenizer.from_pretrained(embedded_model_dir())


# ------------------------------------------------------------------------ values offered


def test_word_ngrams_lowercase_and_trim_punctuation_but_keep_times():
    grams = word_ngrams("Arriving by 10:45, please!", max_n=2)
    assert grams == ["arriving", "arriving by", "by", "by 10:45", "10:45", "10:45 please", "please"]


def test_result_values_walk_rows_and_booking_replies():
    rows = [{"trainID": "TR1234", "price": 10.1, "departure": "cambridge", "extra": None, "ok": True}]
    assert result_values(rows) == ["TR1234", "10.1", "cambridge"]
    assert result_values({"success": True, "return": {"reference": "ABC12"}}) == ["ABC12"]


def test_conversation_values_come_from_customer_and_api_results_only():
    messages = [
        USER,
        Message(role="assistant", content="PLAN made up <COMMAND_END>\nSPEAK the invented lodge <COMMAND_END>"),
        Message(role="user", content=f'{APIRETURN} [{{"trainID": "TR9999", "leaveAt": "08:11"}}]'),
        Message(role="user", content=react_format_feedback("no SPEAK")),
        Message(role="tool", content='[{"name": "kettles yard"}]', tool_call_id="t1"),
        Message(role="user", content=f"{APIRETURN} ERROR unknown parameter: colour"),
        Message(role="user", content='He said "quoted" words'),
    ]
    values = conversation_values(messages)
    for expected in ("stansted airport", "10:45", "2", "TR9999", "08:11", "kettles yard", "colour"):
        assert expected in values
    assert not any("invented" in v for v in values)  # the agent's own words are not grounds
    assert not any(v.startswith("error:") or "your last output" in v for v in values)  # feedback
    assert not any('"' in v for v in values)  # unwritable without escapes
    assert len(values) == len(set(values))


def test_conversation_values_keep_the_newest_when_there_are_too_many():
    long = Message(role="user", content=" ".join(f"w{i}" for i in range(MAX_VALUES)))
    values = conversation_values([long, Message(role="user", content=f'{APIRETURN} [{{"name": "newest"}}]')])
    assert len(values) == MAX_VALUES and values[-1] == "newest"


def test_grounded_tools_restrict_free_strings_and_keep_enums():
    tools = grounded_tools(TOOLS, ["north", "kettles yard"])
    by_name = {t["function"]["name"]: t["function"]["parameters"]["properties"] for t in tools}
    assert by_name["search_attraction"]["name"]["enum"] == ["north", "kettles yard"]
    original_area = next(t for t in TOOLS if t["function"]["name"] == "search_hotel")
    assert by_name["search_hotel"]["area"]["enum"] == original_area["function"]["parameters"]["properties"]["area"]["enum"]
    assert "enum" not in next(t for t in TOOLS if t["function"]["name"] == "search_attraction")[
        "function"]["parameters"]["properties"]["name"]  # the input is not modified
    assert grounded_tools(TOOLS, []) == list(TOOLS)


def test_grounded_grammar_accepts_conversation_values_and_rejects_invented_ones(tokenizer):
    constraint = react_constraint(grounded_tools(TOOLS, conversation_values([USER])))
    assert matches_constraint(_call(destination="stansted airport", arriveBy="10:45"), constraint, tokenizer)
    assert not matches_constraint(_call(destination="london kings cross"), constraint, tokenizer)
    assert not matches_constraint(_call(destination="Stansted Airport"), constraint, tokenizer)  # lower-cased
    speak = format_react("greet", speak="Anything I like, even london kings cross.")
    assert matches_constraint(speak, constraint, tokenizer)  # SPEAK text stays free
    # The GBNF twin (llama.cpp) has the same values.
    twin = OutputConstraint(kind="gbnf", grammar=gbnf_for(constraint))
    assert matches_constraint(_call(destination="stansted airport"), twin, tokenizer)
    assert not matches_constraint(_call(destination="london kings cross"), twin, tokenizer)


# ----------------------------------------------------------------------------- the agents


@pytest.fixture
def env(toolwoz_db):
    from josh_core.envs.toolwoz.env import ToolWOZEnv
    from josh_core.envs.toolwoz.scenarios import get_scenario

    return ToolWOZEnv(get_scenario("synth-train-0000"), toolwoz_db)


def _ctx(env):
    from josh_core.policies.base import TurnContext

    first = Message(role="user", content="I want italian food in the south, moderate prices.")
    return TurnContext(history=[first], agent_memory=[first], env=env, scenario=env.scenario, seed=3)


def test_react_agent_grounds_each_generation_in_what_it_has_seen(env, tokenizer):
    call = {"name": "search_restaurant", "parameters": {"food": "italian", "area": "south"}}
    backend = ScriptedBackend([format_react("search", call=call), format_react("tell", speak="Found one.")])
    turn = asyncio.run(ReactAgent(backend).act(_ctx(env)))  # local backend: grounded by default
    assert [g.action for g in turn.generations] == ["apicall", "speak"]
    first, second = (r.constraint for r in backend.requests)
    found = json.loads(turn.internal[1].content[len(APIRETURN):])[0]["name"]  # a restaurant the search served

    def book(name: str) -> str:
        return format_react("book", call={"name": "book_restaurant", "parameters": {"name": name}})

    assert matches_constraint(book("italian"), first, tokenizer)
    assert not matches_constraint(book(found), first, tokenizer)  # not seen yet
    assert matches_constraint(book(found), second, tokenizer)  # seen in the APIRETURN since


@pytest.mark.parametrize("grounded", [False, True])
def test_grounding_can_be_turned_off(env, tokenizer, grounded):
    call = {"name": "search_restaurant", "parameters": {"food": "italian"}}
    backend = ScriptedBackend([format_react("search", call=call), format_react("tell", speak="ok")])
    asyncio.run(ReactAgent(backend, grounded=grounded).act(_ctx(env)))
    invented = format_react("x", call={"name": "search_restaurant", "parameters": {"food": "martian"}})
    assert matches_constraint(invented, backend.requests[0].constraint, tokenizer) is (not grounded)
    if not grounded:
        assert backend.requests[0].constraint == react_constraint(env.tools())


def test_function_calling_agent_is_grounded_too(env):
    from josh_core.policies.fc_agent import FunctionCallingAgent

    backend = ScriptedBackend([tool_choice("search_restaurant", food="italian"), "Found it."])
    asyncio.run(FunctionCallingAgent(backend).act(_ctx(env)))
    schema = json.dumps(backend.requests[0].constraint.json_schema)
    assert '"italian"' in schema and '"south"' in schema and '"martian"' not in schema


def test_api_models_stay_free_by_default(env):
    backend = ScriptedBackend(["PLAN x <COMMAND_END>\nSPEAK hi <COMMAND_END>"], is_local=False)
    asyncio.run(ReactAgent(backend).act(_ctx(env)))
    assert backend.requests[0].constraint is None


# --------------------------------------------------------------------------- decoding modes


@pytest.mark.parametrize("mode", list(DECODING_MODES))
def test_decoding_modes_round_trip_through_the_launch_arguments(mode):
    from josh_core.launch import rollout_args
    from josh_core.rollout import RolloutConfig

    constrained, grounded = decoding_flags(mode)
    assert decoding_mode(constrained, grounded) == mode
    config = RolloutConfig(constrained=constrained, grounded=grounded, split="train", limit=1)
    args = rollout_args(config, "x.duckdb")
    assert (("--decoding" in args) and args[args.index("--decoding") + 1] == mode) is (mode != "auto")
    options = config.agent_options()
    assert isinstance(options, AgentOptions) and (options.constrained, options.grounded) == (constrained, grounded)


def test_unknown_decoding_mode_is_refused():
    with pytest.raises(ValueError, match="grounded, grammar, free"):
        decoding_flags("fancy")
