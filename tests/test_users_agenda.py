"""AgendaUser: hand-written agent replies -> expected user utterances, and an oracle agent that
reaches reward 1.0 on every official-test scenario through the real JOSH engine."""

from __future__ import annotations

import asyncio

import pytest

from josh_core.policies.agenda_user import GIVE_UP, STALL_MARK, AgendaUser
from josh_core.policies.base import TurnContext
from josh_core.policies.prompts import END_CONVERSATION
from josh_core.envs.toolwoz.types import DomainGoal, GoalCall, Scenario
from josh_core.types import ApiCallRecord, ApiResult, Message, ToolCall

PIZZA = "pizza hut cherry hinton"


def restaurant_goal(**over) -> DomainGoal:
    base = dict(info={"food": "italian", "pricerange": "moderate", "area": "south"},
                fail_info={"food": "korean", "pricerange": "moderate", "area": "south"},
                book={"time": "14:45", "day": "wednesday", "people": "4"}, fail_book={"day": "monday"},
                reqt=["phone"])
    base.update(over)
    return DomainGoal(**base)


def scenario(with_train: bool = False, **over) -> Scenario:
    goal = {"restaurant": restaurant_goal(**over)}
    calls = [
        GoalCall(name="search_restaurant", parameters=dict(goal["restaurant"].info), returns=[{"name": PIZZA}]),
        GoalCall(name="book_restaurant", parameters={**goal["restaurant"].book, "name": PIZZA},
                 returns={"name": PIZZA, "reference": "REF00001"}, unique_id=PIZZA),
    ]
    domains = ["restaurant"]
    if with_train:
        goal["train"] = DomainGoal(info={"departure": "cambridge", "destination": "ely", "day": "friday"},
                                   book={"people": "4"})
        domains.append("train")
    return Scenario(id="hand-1", domains=domains, goal=goal, instructions=[], goal_calls=calls)


@pytest.fixture
def env_for(toolwoz_db):
    from josh_core.envs.toolwoz.env import ToolWOZEnv

    return lambda sc: ToolWOZEnv(sc, toolwoz_db)


def convo(*turns: str) -> list[Message]:
    """Alternating user / agent texts, starting with the user."""
    return [Message(role="user" if i % 2 == 0 else "assistant", content=t) for i, t in enumerate(turns)]


def record(name: str, params: dict, content) -> ApiCallRecord:
    return ApiCallRecord(call=ToolCall(name=name, parameters=params), result=ApiResult(ok=True, content=content))


OPENER = "Hi! I am looking for a restaurant serving korean food, in the moderate price range and in the south of town."
FIRST_BOOK = "Please book the restaurant for 4 people, on monday and at 14:45."


def reply(env_for, sc, history, calls=()):
    user = AgendaUser()
    return user.respond(sc, history, list(calls), env_for(sc))


def test_opener_states_the_first_constraints(env_for):
    sc = scenario()
    turn = reply(env_for, sc, [])
    assert turn.text == OPENER and not turn.ended
    via_protocol = asyncio.run(AgendaUser().reply(TurnContext(history=[], scenario=sc, env=env_for(sc))))
    assert via_protocol.text == OPENER


def test_chunks_of_three():
    sc = scenario(info={"food": "italian", "pricerange": "moderate", "area": "south", "name": PIZZA},
                  fail_info={})
    user = AgendaUser(chunk=2)
    first = user.respond(sc, [], [], None).text
    assert first == f"Hi! I am looking for a restaurant called {PIZZA} and serving italian food."
    second = user.respond(sc, convo(first, "Sure, anything else?"), [], None).text
    assert second == "Also, I want the restaurant in the moderate price range and in the south of town."


@pytest.mark.parametrize("agent_text", [
    "I'm sorry, there is no korean restaurant in the south.",
    "Unfortunately I couldn't find anything like that.",
    "There are no matching restaurants.",
])
def test_told_nothing_matches_switches_to_the_fallback(env_for, agent_text):
    turn = reply(env_for, scenario(), convo(OPENER, agent_text))
    assert turn.text == "In that case, I would like a restaurant serving italian food instead."


def test_an_empty_search_result_switches_to_the_fallback_whatever_the_agent_says(env_for):
    calls = [record("search_restaurant", {"food": "korean", "area": "south"}, [])]
    turn = reply(env_for, scenario(), convo(OPENER, "Let me see what we have."), calls)
    assert turn.text.startswith("In that case") and "italian" in turn.text


def test_no_fallback_before_the_first_try_was_stated(env_for):
    sc = scenario()
    user = AgendaUser(chunk=1)
    opener = user.respond(sc, [], [], env_for(sc)).text
    assert opener == "Hi! I am looking for a restaurant serving korean food."
    # "no" about something else must not trigger the fallback twice or early
    after = user.respond(sc, convo(opener, "Sorry, there is no such place.", "In that case, I would like a restaurant serving italian food instead.",
                                   "Sorry, there is no such place."), [], env_for(sc)).text
    assert "instead" not in after and after == "Also, I want the restaurant in the moderate price range."


def test_answers_the_slot_the_agent_asks_about(env_for):
    sc = scenario(info={"food": "italian", "pricerange": "moderate", "area": "south"}, fail_info={})
    user = AgendaUser(chunk=1)
    opener = user.respond(sc, [], [], env_for(sc)).text
    assert opener == "Hi! I am looking for a restaurant serving italian food."
    turn = user.respond(sc, convo(opener, "Which part of town would you like?"), [], env_for(sc))
    assert turn.text == "I want the restaurant in the south of town."
    both = user.respond(sc, convo(opener, "Sure. What area and what price range?"), [], env_for(sc))
    assert both.text == "I want the restaurant in the moderate price range and in the south of town."


def test_a_slot_outside_the_goal_is_not_cared_about(env_for):
    sc = scenario(info={"food": "italian"}, fail_info={})
    opener = reply(env_for, sc, []).text
    turn = reply(env_for, sc, convo(opener, "Do you have a price range in mind?"))
    assert turn.text == "For the restaurant, any price range is fine."


def test_gives_booking_details_when_the_agent_offers(env_for):
    calls = [record("search_restaurant", {"food": "korean"}, [])]
    fallback = "In that case, I would like a restaurant serving italian food instead."
    history = convo(OPENER, "No korean places there.", fallback, f"{PIZZA} is nice. Shall I book a table?")
    turn = reply(env_for, scenario(), history, calls)
    assert turn.text == FIRST_BOOK  # the first-try booking day comes first


def test_gives_booking_details_unasked_once_the_search_is_done(env_for):
    sc = scenario(fail_info={})
    found = [record("search_restaurant", dict(sc.goal["restaurant"].info), [{"name": PIZZA}])]
    opener = reply(env_for, sc, []).text
    turn = reply(env_for, sc, convo(opener, f"I found {PIZZA}."), found)
    assert turn.text == FIRST_BOOK


def test_failed_booking_switches_to_the_real_booking_details(env_for):
    sc = scenario(fail_info={})
    opener = reply(env_for, sc, []).text
    calls = [record("search_restaurant", dict(sc.goal["restaurant"].info), [{"name": PIZZA}]),
             record("book_restaurant", {"day": "monday", "people": "4", "time": "14:45", "name": PIZZA},
                    {"success": False, "return": None})]
    history = convo(opener, "Found it. Shall I book?", FIRST_BOOK, "Let me try.")
    assert reply(env_for, sc, history, calls).text == "Then please try to book the restaurant on wednesday instead."
    # the agent's words alone are enough too
    worded = convo(opener, "Found it. Shall I book?", FIRST_BOOK, "Sorry, the booking failed.")
    assert reply(env_for, sc, worded, calls[:1]).text.startswith("Then please try to book")


def test_asks_for_requested_slots_then_hangs_up(env_for):
    sc = scenario(fail_info={}, fail_book={})
    env = env_for(sc)
    calls = [env.execute_call("search_restaurant", dict(sc.goal["restaurant"].info)),
             env.execute_call("book_restaurant", {**sc.goal["restaurant"].book, "name": PIZZA})]
    assert env.completed_goals(calls) == set(sc.goal_call_ids())
    history = convo(reply(env_for, sc, []).text, "Booked! Reference REF00001.")
    ask = AgendaUser().respond(sc, history, calls, env)
    assert ask.text == "For the restaurant, could you tell me the phone number?" and not ask.ended
    history += [Message(role="user", content=ask.text), Message(role="assistant", content="It is 01223323737.")]
    bye = AgendaUser().respond(sc, history, calls, env)
    assert bye.ended and bye.text.endswith(END_CONVERSATION)


def test_moves_on_to_the_next_domain(env_for):
    sc = scenario(with_train=True, fail_info={}, fail_book={}, reqt=[])
    env = env_for(sc)
    calls = [env.execute_call("search_restaurant", dict(sc.goal["restaurant"].info)),
             env.execute_call("book_restaurant", {**sc.goal["restaurant"].book, "name": PIZZA})]
    history = convo(reply(env_for, sc, []).text, "Booked! Reference REF00001.")
    turn = AgendaUser().respond(sc, history, calls, env)
    assert turn.text == ("Thank you. Now I am also looking for a train leaving from cambridge, going to ely "
                         "and on friday.")
    history += [Message(role="user", content=turn.text),
                Message(role="assistant", content="How many tickets do you need?")]
    asked = AgendaUser().respond(sc, history, calls, env)
    assert asked.text == "Please book the train for 4 people."


def test_stalls_then_gives_up(env_for):
    sc = scenario()
    history = convo(OPENER, "What area would you like?")
    first = reply(env_for, sc, history)
    assert first.text.startswith(STALL_MARK) and "korean food" in first.text and not first.ended
    for _ in range(2):
        history += [Message(role="user", content=first.text), Message(role="assistant", content="What area?")]
        first = reply(env_for, sc, history)
        assert first.text.startswith(STALL_MARK)
    history += [Message(role="user", content=first.text), Message(role="assistant", content="What area?")]
    final = reply(env_for, sc, history)
    assert final.ended and final.text == GIVE_UP


def test_place_to_stay_questions(toolwoz_db):
    from josh_core.envs.toolwoz.env import ToolWOZEnv

    goal = DomainGoal(info={"type": "guesthouse", "area": "north", "parking": "yes"}, book={"people": "2", "day": "monday", "stay": "3"})
    sc = Scenario(id="hand-2", domains=["hotel"], goal={"hotel": goal}, instructions=[],
                  goal_calls=[GoalCall(name="search_hotel", parameters=dict(goal.info))])
    env = ToolWOZEnv(sc, toolwoz_db)
    user = AgendaUser()
    opener = user.respond(sc, [], [], env).text
    assert opener == "Hi! I am looking for a place to stay that is a guesthouse, in the north of town and with free parking."
    nights = user.respond(sc, convo(opener, "How many nights would you like to stay in the place to stay?"), [], env)
    assert nights.text == "Please book the place to stay for 2 people, starting on monday and for 3 nights."


def test_the_same_path_gives_the_same_reply(env_for):
    sc = scenario()
    history = convo(OPENER, "Sorry, no luck. Anything else?")
    assert reply(env_for, sc, history).text == reply(env_for, sc, history).text


# ------------------------------------------------------------------------------- oracle, engine


def test_oracle_reaches_full_reward_on_every_official_test_scenario(toolwoz_db):
    """Proof that the simulator gives an agent everything it needs: 450 of 450 at reward 1.0."""
    from josh_core.policies.oracle import OracleAgent
    from josh_core.search.engine import JoshSearch, SearchConfig
    from josh_core.envs.toolwoz.env import ToolWOZEnv
    from josh_core.envs.toolwoz.scenarios import load_split

    scenarios = load_split("official-test")
    assert len(scenarios) == 450

    async def play(sc):
        env = ToolWOZEnv(sc, toolwoz_db)
        search = JoshSearch(OracleAgent(), AgendaUser(), env, config=SearchConfig.plain(max_depth=40), scenario=sc)
        tree = await search.run_to_end()
        leaf = max(tree.nodes.values(), key=lambda n: n.depth)
        return sc.id, tree.reward, env.score(tree.calls_on_path(leaf.id)).reward

    async def main():
        return [await play(sc) for sc in scenarios]

    results = asyncio.run(main())
    short = [(sid, r, s) for sid, r, s in results if r < 1.0 or s < 1.0]
    assert short == []
