"""LLMUser: the request it builds, how it reads the model's line, and one real turn of the
embedded model as the customer."""

from __future__ import annotations

import asyncio

import pytest
from model_fixtures import ScriptedBackend

from josh_core.policies.base import TurnContext
from josh_core.policies.factory import build_user
from josh_core.policies.llm_user import LLMUser, parse_user_text
from josh_core.policies.prompts import END_CONVERSATION, USER_OPENER_CUE, user_goal_lines
from josh_core.envs.toolwoz.types import DomainGoal, Scenario
from josh_core.types import Message

SCENARIO = Scenario(
    id="hand-3", domains=["restaurant"],
    goal={"restaurant": DomainGoal(info={"food": "italian", "area": "south"}, fail_info={"food": "korean", "area": "south"},
                                   book={"people": "4", "day": "friday", "time": "12:00"}, reqt=["phone"])},
    instructions=["You want a korean restaurant in the south.", "If there is none, italian will do.",
                  "Book a table for 4 people at 12:00 on friday."],
    goal_calls=[],
)


def ctx(history, seed=3):
    return TurnContext(history=history, scenario=SCENARIO, seed=seed)


def test_goal_lines_use_instructions_or_the_structured_goal():
    assert user_goal_lines(SCENARIO).splitlines()[1] == "2. If there is none, italian will do."
    bare = SCENARIO.model_copy(update={"instructions": []})
    line = user_goal_lines(bare)
    assert line.startswith("1. restaurant: food italian, area south; first try food korean, area south")
    assert "book for people 4, day friday, time 12:00" in line and "ask for phone" in line


def test_request_swaps_roles_and_ends_with_the_reminder():
    backend = ScriptedBackend(["I need a korean restaurant in the south."])
    user = LLMUser(backend)
    history = [Message(role="user", content="Hi, I need food."), Message(role="assistant", content="What kind?")]
    turn = asyncio.run(user.reply(ctx(history)))
    assert turn.text == "I need a korean restaurant in the south." and not turn.ended
    [request] = backend.requests
    roles = [m.role for m in request.messages]
    assert roles == ["system", "user", "assistant", "user"]
    assert "korean restaurant in the south" in request.messages[0].content and END_CONVERSATION in request.messages[0].content
    assert request.messages[1].content == USER_OPENER_CUE
    assert request.messages[2].content == "Hi, I need food."
    assert request.messages[3].content.startswith("What kind?") and "Reminder" in request.messages[3].content
    assert request.sampling.temperature == 0.0 and request.sampling.seed == 3


def test_opener_request():
    backend = ScriptedBackend(["Hello! I am looking for a restaurant."])
    asyncio.run(LLMUser(backend).reply(ctx([])))
    messages = backend.requests[0].messages
    assert [m.role for m in messages] == ["system", "user"] and messages[1].content.startswith(USER_OPENER_CUE)


@pytest.mark.parametrize("text,spoken,ended", [
    ("Thanks, bye! END_CONVERSATION", f"Thanks, bye! {END_CONVERSATION}", True),
    ("END_CONVERSATION", END_CONVERSATION, True),
    ("Customer: I want italian food.", "I want italian food.", False),
    ("   ", END_CONVERSATION, True),
])
def test_parse_user_text(text, spoken, ended):
    turn = parse_user_text(text)
    assert (turn.text, turn.ended) == (spoken, ended)


def test_turn_cap_hangs_up():
    user = LLMUser(ScriptedBackend([]), max_turns=1)
    turn = asyncio.run(user.reply(ctx([Message(role="user", content="hi"), Message(role="assistant", content="yes?")])))
    assert turn.ended


def test_factory_builds_both_simulators():
    assert build_user("agenda").name == "agenda"
    with pytest.raises(ValueError):
        build_user("nonsense:thing")


@pytest.mark.slow
def test_embedded_model_plays_the_customer():
    user = build_user("llm:embedded")
    assert user.name == "llm:embedded"
    user.max_tokens = 24
    turn = asyncio.run(user.reply(ctx([])))
    assert turn.text.strip()
    again = asyncio.run(user.reply(ctx([])))
    assert again.text == turn.text  # temperature 0: the same customer every time
