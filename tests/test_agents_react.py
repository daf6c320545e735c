"""ReACT and function-calling agents over a scripted backend double and the real ToolWOZ
environment; the ReACT parser on hand-written generations; one turn of the embedded model."""

from __future__ import annotations

import asyncio
import json

import pytest
from model_fixtures import ScriptedBackend, tool_choice

from josh_core.llm.base import ConstraintUnsupported, ChatResponse, Choice, SamplingParams
from josh_core.llm.structured import check_react, format_react
from josh_core.policies.agents import build_model_agent
from josh_core.policies.base import TurnContext
from josh_core.policies.factory import AgentOptions
from josh_core.policies.fc_agent import FunctionCallingAgent
from josh_core.policies.parse import parse_react
from josh_core.policies.prompts import APIRETURN, react_demonstration, react_prompt_messages
from josh_core.policies.react_agent import ReactAgent, generation_seed
from josh_core.envs.toolwoz.apis import API_EXAMPLES, TOOLS
from josh_core.types import Message

SEARCH = '{"name": "search_restaurant", "parameters": {"food": "italian", "area": "south"}}'


# -------------------------------------------------------------------------------- parser


@pytest.mark.parametrize("text,kind,expect", [
    (f"PLAN look it up <COMMAND_END>\nAPICALL {SEARCH} <COMMAND_END>", "apicall", ("search_restaurant", {"food": "italian", "area": "south"})),
    (f"PLAN look it up <COMMAND_END> APICALL {SEARCH} <COMMAND_END>", "apicall", ("search_restaurant", {"food": "italian", "area": "south"})),
    (f"PLAN: look <COMMAND_END>\nAPICALL: {SEARCH}", "apicall", ("search_restaurant", {"food": "italian", "area": "south"})),
    ('PLAN x <COMMAND_END>APICALL {"name": "book_train", "arguments": {"people": "2"}} <COMMAND_END>', "apicall", ("book_train", {"people": "2"})),
    ("PLAN greet <COMMAND_END>\nSPEAK Hello! How can I help? <COMMAND_END>", "speak", "Hello! How can I help?"),
    ("SPEAK Hi there <COMMAND_END>", "speak", "Hi there"),
    ("PLAN greet <COMMAND_END>\nSPEAK Hello", "speak", "Hello"),  # stopped before the end marker
    ("**PLAN** think <COMMAND_END>\n**SPEAK** ok <COMMAND_END>", "speak", "ok"),
    ("PLAN a <COMMAND_END>\nSPEAK first <COMMAND_END>\nAPICALL {} <COMMAND_END>", "speak", "first"),
])
def test_parse_valid(text, kind, expect):
    parsed = parse_react(text)
    assert parsed.kind == kind
    if kind == "apicall":
        assert (parsed.call.name, parsed.call.parameters) == expect
        assert check_react(parsed.text if parsed.plan else "PLAN x <COMMAND_END>\n" + parsed.text, TOOLS).ok
    else:
        assert parsed.speak == expect


@pytest.mark.parametrize("text,error", [
    ("Sure, I can help you with that.", "no PLAN, APICALL or SPEAK"),
    ("PLAN I will search <COMMAND_END>", "PLAN was not followed"),
    ("PLAN x <COMMAND_END>\nSPEAK <COMMAND_END>", "SPEAK without a message"),
    ("", "no PLAN"),
    ("I will SPEAK to the user later", "no PLAN"),  # a command word inside prose is not a command
])
def test_parse_format_errors(text, error):
    parsed = parse_react(text)
    assert parsed.kind == "format_error" and error in parsed.error


def test_unreadable_apicall_is_an_api_call_without_a_call():
    parsed = parse_react("PLAN go <COMMAND_END>\nAPICALL search_hotel(area=north) <COMMAND_END>")
    assert parsed.kind == "apicall" and parsed.call is None and parsed.call_text == "search_hotel(area=north)"


def test_history_keeps_only_the_first_action_in_canonical_form():
    text = (f"PLAN look <COMMAND_END>\nAPICALL {SEARCH} <COMMAND_END>\nAPIRETURN [{{\"name\": \"made up\"}}]\n"
            "PLAN tell <COMMAND_END>\nSPEAK done <COMMAND_END>")
    parsed = parse_react(text)
    assert parsed.text == format_react("look", call=json.loads(SEARCH))
    assert APIRETURN not in parsed.text


# -------------------------------------------------------------------------------- prompts


def test_prompt_lists_every_api_and_a_demonstration_in_the_action_format():
    messages = react_prompt_messages(TOOLS, API_EXAMPLES)
    system = messages[0].content
    for tool in TOOLS:
        assert tool["function"]["name"] + "(" in system
    assert "area: centre|north|south|east|west" in system and "APICALL {\"name\": \"book_train\"" in system
    demo = react_demonstration()
    for msg in demo:
        if msg.role == "assistant":
            assert check_react(msg.content, TOOLS).canonical  # byte-identical to the grammar
    assert messages[-1].role == "system" and "new customer" in messages[-1].content
    assert messages[1:-1] == demo
    assert len(react_prompt_messages(TOOLS, API_EXAMPLES, demonstrate=False)) == 1


def test_demonstration_values_are_not_database_entities(toolwoz_db):
    """Sample names in the demonstration must never be mistaken for a real answer."""
    for domain in ("hotel", "restaurant", "attraction"):
        assert not toolwoz_db.query(domain, {"name": "the example lodge"})


# ------------------------------------------------------------------------------ ReACT agent


@pytest.fixture
def env(toolwoz_db):
    from josh_core.envs.toolwoz.env import ToolWOZEnv
    from josh_core.envs.toolwoz.scenarios import get_scenario

    scenario = get_scenario("synth-train-0000")
    return ToolWOZEnv(scenario, toolwoz_db)


def ctx_for(env, seed=5, memory=None):
    first = Message(role="user", content="I want italian food in the south, moderate prices.")
    return TurnContext(history=[first], agent_memory=memory or [first], env=env, scenario=env.scenario, seed=seed)


def test_react_turn_apicall_then_speak(env):
    backend = ScriptedBackend([
        "PLAN search <COMMAND_END>\nAPICALL " + json.dumps({"name": "search_restaurant", "parameters": {"food": "italian", "pricerange": "moderate", "area": "south"}}) + " <COMMAND_END>",
        "PLAN tell <COMMAND_END>\nSPEAK I found pizza hut cherry hinton. <COMMAND_END>",
    ])
    agent = ReactAgent(backend, constrained=False)
    turn = asyncio.run(agent.act(ctx_for(env)))
    assert [g.action for g in turn.generations] == ["apicall", "speak"]
    assert turn.speak == "I found pizza hut cherry hinton." and turn.format_errors == 0
    assert len(turn.api_calls) == 1 and turn.api_calls[0].result.ok
    assert [m.role for m in turn.internal] == ["assistant", "user", "assistant"]
    assert turn.internal[1].content.startswith(APIRETURN + " [{") and "pizza hut cherry hinton" in turn.internal[1].content
    # The second generation saw the first one and its API return after the memory.
    second = backend.requests[1].messages
    assert second[-2].role == "assistant" and second[-1].content.startswith(APIRETURN)
    assert second[0].role == "system" and "search_restaurant(" in second[0].content
    assert backend.requests[0].sampling.seed == generation_seed(5, 0) != backend.requests[1].sampling.seed
    assert backend.requests[0].sampling.stop == [APIRETURN]


def test_react_format_error_gets_feedback_and_the_turn_goes_on(env):
    backend = ScriptedBackend(["I think you would like pizza.", "PLAN ok <COMMAND_END>\nSPEAK What area? <COMMAND_END>"])
    turn = asyncio.run(ReactAgent(backend, constrained=False).act(ctx_for(env)))
    assert [g.action for g in turn.generations] == ["format_error", "speak"]
    assert turn.format_errors == 1 and turn.generations[0].format_error
    assert turn.internal[1].role == "user" and turn.internal[1].content.startswith("ERROR:")
    assert turn.speak == "What area?"


def test_react_bad_call_is_recorded_with_the_environment_error(env):
    backend = ScriptedBackend([
        'PLAN x <COMMAND_END>\nAPICALL {"name": "search_pizza", "parameters": {}} <COMMAND_END>',
        "PLAN x <COMMAND_END>\nAPICALL not json at all <COMMAND_END>",
        "PLAN x <COMMAND_END>\nSPEAK Sorry. <COMMAND_END>",
    ])
    turn = asyncio.run(ReactAgent(backend, constrained=False).act(ctx_for(env)))
    kinds = [r.result.error_kind for r in turn.api_calls]
    assert kinds == ["unknown_api", "bad_format"] and turn.format_errors == 0
    assert turn.internal[1].content.startswith(f"{APIRETURN} ERROR:")
    assert turn.api_calls[1].call is None and turn.api_calls[1].raw == "not json at all"


def test_react_action_cap_ends_the_turn_without_speak(env):
    calls = [f"PLAN again <COMMAND_END>\nAPICALL {SEARCH} <COMMAND_END>"] * 5
    turn = asyncio.run(ReactAgent(ScriptedBackend(calls), constrained=False, max_actions_per_turn=3).act(ctx_for(env)))
    assert len(turn.generations) == 3 and turn.speak == "" and len(turn.api_calls) == 3


def test_react_defaults_follow_appendix_b_and_constrain_local_models(env):
    local = ScriptedBackend(["PLAN a <COMMAND_END>\nSPEAK b <COMMAND_END>"], is_local=True)
    agent = build_model_agent(local, AgentOptions())
    asyncio.run(agent.act(ctx_for(env)))
    req = local.requests[0]
    assert (req.sampling.temperature, req.sampling.top_k, req.sampling.top_p) == (1.5, 50, 0.75)
    assert req.constraint is not None and req.constraint.kind == "lark" and "APICALL" in req.constraint.grammar
    api = ScriptedBackend(["PLAN a <COMMAND_END>\nSPEAK b <COMMAND_END>"], is_local=False)
    asyncio.run(build_model_agent(api, AgentOptions(temperature=None)).act(ctx_for(env)))
    assert api.requests[0].sampling.temperature == 1.0 and api.requests[0].constraint is None
    forced = ScriptedBackend(["PLAN a <COMMAND_END>\nSPEAK b <COMMAND_END>"], is_local=True)
    asyncio.run(build_model_agent(forced, AgentOptions(temperature=0.3, constrained=False)).act(ctx_for(env)))
    assert forced.requests[0].sampling.temperature == 0.3 and forced.requests[0].constraint is None


def test_react_drops_a_constraint_the_backend_refuses(env):
    backend = ScriptedBackend(["PLAN a <COMMAND_END>\nSPEAK b <COMMAND_END>"] * 2, refuse_constraints=True)
    agent = ReactAgent(backend, constrained=True)
    turn = asyncio.run(agent.act(ctx_for(env)))
    assert turn.speak == "b" and backend.requests[-1].constraint is None
    assert [g.unconstrained for g in turn.generations] == [True]


def test_a_refused_constraint_is_dropped_for_that_generation_only(env):
    """One refusal (a grammar the backend could not compile once) leaves the shared agent
    constrained: the next generation asks for the constraint again, and only the refused one
    is recorded as unconstrained (it once turned the constraint off for the rest of the run
    while the run's configuration still said constrained)."""
    speak = "PLAN a <COMMAND_END>\nSPEAK b <COMMAND_END>"
    backend = ScriptedBackend([ConstraintUnsupported("not this one"), speak, speak])
    agent = ReactAgent(backend, constrained=True)
    first = asyncio.run(agent.act(ctx_for(env)))
    second = asyncio.run(agent.act(ctx_for(env)))
    assert agent.constrained is True
    assert [r.constraint is not None for r in backend.requests] == [True, False, True]
    assert [g.unconstrained for g in first.generations] == [True]
    assert [g.unconstrained for g in second.generations] == [False]


def test_unknown_style_is_refused():
    with pytest.raises(ValueError, match="style"):
        build_model_agent(ScriptedBackend([]), AgentOptions(style="act"))


# ------------------------------------------------------------------------- function calling


def test_fc_turn_runs_tool_calls_then_speaks(env):
    backend = ScriptedBackend([
        tool_choice("search_restaurant", food="italian", pricerange="moderate", area="south"),
        Choice(text="Pizza hut cherry hinton is a moderate italian place in the south."),
    ], is_local=False)
    agent = FunctionCallingAgent(backend)
    assert agent.system_prompt(env) and agent.name == "fc:scripted"
    turn = asyncio.run(agent.act(ctx_for(env)))
    assert [g.action for g in turn.generations] == ["apicall", "speak"]
    assert turn.internal[0].tool_calls[0].id == turn.internal[1].tool_call_id
    assert turn.internal[1].role == "tool" and "pizza hut cherry hinton" in turn.internal[1].content
    assert turn.speak.startswith("Pizza hut") and backend.requests[0].tools == env.tools()
    assert backend.requests[1].messages[-1].role == "tool"


def test_fc_format_error_and_constraint_for_local_models(env):
    backend = ScriptedBackend([Choice(text=""), Choice(text="Hello!")], is_local=True)
    turn = asyncio.run(build_model_agent(backend, AgentOptions(style="fc")).act(ctx_for(env)))
    assert turn.format_errors == 1 and turn.speak == "Hello!"
    assert backend.requests[0].constraint.kind == "json_schema"


# ------------------------------------------------------------------------------ embedded model


@pytest.mark.slow
def test_embedded_react_turn_is_well_formed(env):
    """One constrained ReACT generation of the embedded model parses as a valid action."""
    from josh_core.llm.specs import build_backend

    agent = build_model_agent(build_backend("embedded"), AgentOptions(style="react", max_actions_per_turn=1))
    turn = asyncio.run(agent.act(ctx_for(env, seed=1)))
    [generation] = turn.generations
    assert generation.action in ("apicall", "speak") and turn.format_errors == 0
    assert check_react(generation.text, env.tools()).ok
    assert generation.prompt_tokens > 500 and generation.completion_tokens > 0


@pytest.mark.slow
def test_embedded_default_is_the_compact_style_and_its_turns_are_well_formed(env):
    """The embedded model plays the compact style by default: no PLAN, a short prompt, every
    generation a valid action, and a turn always ends with SPEAK (its last generation is
    constrained to it)."""
    from josh_core.llm.specs import build_backend
    from josh_core.policies.compact_agent import CompactAgent

    agent = build_model_agent(build_backend("embedded"), AgentOptions())
    assert isinstance(agent, CompactAgent) and agent.max_actions_per_turn == 3
    for seed in (1, 2, 3):
        turn = asyncio.run(agent.act(ctx_for(env, seed=seed)))
        assert turn.format_errors == 0 and turn.speak
        assert turn.generations[-1].action == "speak"
        for generation in turn.generations:
            check = check_react(generation.text, env.tools(), plan=False)
            assert check.ok, (generation.text, check.error)
            assert "PLAN" not in generation.text
        assert turn.generations[0].prompt_tokens < 450
