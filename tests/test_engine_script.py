"""Script policies (DESIGN.md "Script files"), also through the factory SPECs."""

from __future__ import annotations

import asyncio
import json

import pytest

from engine_fixtures import ToyEnv, call, speak
from josh_core.policies.base import TurnContext
from josh_core.policies.factory import build_agent, build_user
from josh_core.policies.prompts import react_format_feedback
from josh_core.policies.script import ScriptAgent, ScriptUser


def act(agent, turn_index=0, child_index=0, env=None):
    ctx = TurnContext(history=[], env=env or ToyEnv([("search_hotel", {})]), turn_index=turn_index,
                      child_index=child_index)
    return asyncio.run(agent.act(ctx))


def test_generations_are_read_like_model_output():
    loose = 'PLAN look <COMMAND_END> APICALL {"name": "search_hotel", "parameters": {"area": "north"}}'
    turn = act(ScriptAgent([[[loose, "PLAN  say hi <COMMAND_END>SPEAK  Hello!"]]]))
    assert [g.action for g in turn.generations] == ["apicall", "speak"]
    assert turn.generations[0].text == loose  # raw text on the generation
    assert turn.internal[0].content == call("search_hotel", area="north").replace("call search_hotel", "look")
    assert turn.speak == "Hello!"


def test_agent_plays_alternative_child_modulo_and_calls_the_environment():
    agent = ScriptAgent(
        [
            [[speak("zero")], [call("search_hotel", area="north"), speak("one")], [speak("two")]],
        ]
    )
    assert act(agent, child_index=0).speak == "zero"
    turn = act(agent, child_index=1)
    assert turn.speak == "one" and [g.action for g in turn.generations] == ["apicall", "speak"]
    assert turn.api_calls[0].call.name == "search_hotel"
    assert turn.api_calls[0].call.parameters == {"area": "north"}
    assert turn.api_calls[0].result.ok
    assert turn.internal[1].content == 'APIRETURN [{"api": "search_hotel", "area": "north"}]'
    assert act(agent, child_index=4).speak == "one"  # 4 % 3
    assert act(agent, turn_index=7, child_index=2).speak == "two"  # past the end: last turn


def test_agent_records_format_errors_and_bad_calls():
    agent = ScriptAgent(
        [[["PLAN forgot the command <COMMAND_END>", "PLAN x <COMMAND_END> APICALL {not json <COMMAND_END>",
           call("no_such_api"), speak("sorry"), speak("never said")]]]
    )
    turn = act(agent)
    assert [g.action for g in turn.generations] == ["format_error", "apicall", "apicall", "speak"]
    assert turn.format_errors == 1 and turn.generations[0].format_error
    assert turn.internal[1].content == react_format_feedback("PLAN was not followed by APICALL or SPEAK")
    bad_format, unknown = turn.api_calls
    assert bad_format.call is None and bad_format.raw == "{not json"
    assert bad_format.result.error_kind == "bad_format"
    assert unknown.result.error_kind == "unknown_api"
    assert turn.speak == "sorry"  # a turn ends at the first SPEAK


def test_user_says_its_lines_then_hangs_up():
    user = ScriptUser(["hi", "north"])
    replies = [asyncio.run(user.reply(TurnContext(history=[], turn_index=i))) for i in range(3)]
    assert [(r.text, r.ended) for r in replies] == [("hi", False), ("north", False), ("END_CONVERSATION", True)]


def test_script_specs_through_the_factory(tmp_path):
    agent_file = tmp_path / "agent.json"
    agent_file.write_text(json.dumps({"turns": [[[speak("hello")]]]}))
    user_file = tmp_path / "user.json"
    user_file.write_text(json.dumps({"turns": ["hi"]}))
    agent = build_agent(f"script:{agent_file}")
    user = build_user(f"script:{user_file}")
    assert isinstance(agent, ScriptAgent) and isinstance(user, ScriptUser)
    assert act(agent).speak == "hello"
    assert "search_hotel" in agent.system_prompt(ToyEnv([("search_hotel", {})]))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"lines": []}))
    with pytest.raises(ValueError):
        ScriptAgent.from_file(bad)
    with pytest.raises(ValueError):
        ScriptAgent([[]])
