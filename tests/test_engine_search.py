"""The JOSH search on script policies and a toy environment, checked node by node."""

from __future__ import annotations

import asyncio
import random

import pytest

from engine_fixtures import ToyEnv, call, chatty_agent, speak, user
from josh_core.policies.base import TurnContext
from josh_core.policies.script import ScriptAgent, ScriptUser
from josh_core.search.engine import JoshSearch, SearchConfig
from josh_core.search.labels import compute_labels, ideal_path
from josh_core.search.tree import derive_seed

HOTEL_GOALS = [("search_hotel", {"area": "north"}), ("book_hotel", {"name": "x"})]


def two_goal_agent() -> ScriptAgent:
    return ScriptAgent(
        [
            [[speak("A0")], [speak("B0")]],
            [
                [call("search_hotel", area="south"), speak("south")],
                [call("search_hotel", area="north"), speak("north")],
            ],
            [[call("book_hotel", name="x"), speak("booked")], [speak("sorry")]],
        ]
    )


def run(search: JoshSearch):
    return asyncio.run(search.run_to_end())


def comparable(tree) -> dict:
    """A tree without timings (which differ between runs)."""
    data = tree.model_dump()
    for node in data["nodes"].values():
        node.pop("started_at")
        node.pop("seconds")
        for generation in node["generations"]:
            generation.pop("seconds")
    return data


def test_root_after_each_goal_partial_credit_and_labels():
    search = JoshSearch(two_goal_agent(), user(5), ToyEnv(HOTEL_GOALS), conversation_id="c")
    events = []
    tree = asyncio.run(search.run_to_end(on_step=events.append))

    assert [e.step for e in events] == [0, 1, 2, 3]
    assert events[0].created == ["c:0"] and events[0].new_root == "c:0"
    assert events[1].created == ["c:0.0", "c:0.1", "c:0.0.0", "c:0.1.0"]
    assert events[1].new_root is None and events[1].leaves == ["c:0.0.0", "c:0.1.0"]
    # Step 2: four agent turns; 0.0.0.1 is the first (beam order, then child index) to reach
    # the search goal, so it becomes the root; 0.1.0.1 reached the same goal: partial credit.
    assert events[2].created[:4] == ["c:0.0.0.0", "c:0.0.0.1", "c:0.1.0.0", "c:0.1.0.1"]
    assert events[2].new_root == "c:0.0.0.1"
    assert events[2].goals_hit == ["0:search_hotel"]
    assert events[2].partial == ["c:0.1.0.1"]
    assert events[2].pruned == ["c:0.0.0.0", "c:0.1.0.0", "c:0.1.0.1"]
    assert events[2].leaves == ["c:0.0.0.1.0"] and events[2].reward == 0.5
    # Step 3: the new root's user reply gets two agent children; the first books.
    assert events[3].new_root == "c:0.0.0.1.0.0" and events[3].goals_hit == ["1:book_hotel"]
    assert events[3].done and events[3].stop_reason == "goals_done" and events[3].reward == 1.0

    assert tree.roots == ["c:0", "c:0.0.0.1", "c:0.0.0.1.0.0"]
    assert tree.reward == 1.0 and tree.remaining_goals == [] and tree.leaves == []
    assert [(e.node_id, e.goal_id, e.kind, e.reward) for e in tree.reward_events] == [
        ("c:0.0.0.1", "0:search_hotel", "goal", 0.5),
        ("c:0.1.0.1", "0:search_hotel", "partial", 0.0),
        ("c:0.0.0.1.0.0", "1:book_hotel", "goal", 0.5),
    ]
    assert {nid: n.status for nid, n in tree.nodes.items()} == {
        "c:0": "alive", "c:0.0": "alive", "c:0.1": "alive", "c:0.0.0": "alive",
        "c:0.1.0": "alive", "c:0.0.0.0": "pruned", "c:0.0.0.1": "alive", "c:0.1.0.0": "pruned",
        "c:0.1.0.1": "pruned", "c:0.0.0.1.0": "alive", "c:0.0.0.1.0.0": "ended",
        "c:0.0.0.1.0.1": "pruned",
    }
    assert compute_labels(tree) == {
        "c:0": "ideal", "c:0.0": "ideal", "c:0.1": "negative", "c:0.0.0": "ideal",
        "c:0.1.0": "unexplored", "c:0.0.0.0": "negative", "c:0.0.0.1": "ideal",
        "c:0.1.0.0": "unexplored", "c:0.1.0.1": "partial", "c:0.0.0.1.0": "ideal",
        "c:0.0.0.1.0.0": "ideal", "c:0.0.0.1.0.1": "negative",
    }
    # Per-call goal attribution and node contents.
    root2 = tree.nodes["c:0.0.0.1"]
    assert root2.kind == "agent" and root2.depth == 3 and root2.turn == 2 and root2.child_index == 1
    assert root2.call_goals == [["0:search_hotel"]] and root2.text == "north"
    assert [m.role for m in root2.internal] == ["assistant", "user", "assistant"]
    assert root2.internal[1].content.startswith("APIRETURN ")


def test_beam_grows_one_two_four_eight_then_flat():
    search = JoshSearch(chatty_agent(), user(30), ToyEnv(HOTEL_GOALS), config=SearchConfig(max_depth=6))
    agents_per_step, leaves_per_step = [], []
    while not search.done:
        event = asyncio.run(search.step())
        if event.step:
            agents_per_step.append(sum(1 for n in event.created if search.tree.nodes[n].kind == "agent"))
            leaves_per_step.append(len(event.leaves))
    assert agents_per_step == [2, 4, 8, 8, 8, 8]
    assert leaves_per_step == [2, 4, 8, 8, 8, 0]  # the last step ends the search
    assert search.tree.stop_reason == "max_depth"
    # Beyond the beam limit each leaf gets one child: every user node of step 4+ has 1 child.
    tree = search.tree
    for node in tree.nodes.values():
        if node.kind == "user" and node.step >= 3 and node.status == "alive":
            assert len(tree.children(node.id)) == 1


@pytest.mark.parametrize(
    "branching, beam, expected",
    [(2, 5, [2, 4, 4, 4]), (3, 8, [3, 3, 3, 3]), (2, 1, [1, 1, 1, 1]), (1, 8, [1, 1, 1, 1]), (4, 16, [4, 16, 16, 16])],
)
def test_beam_rule(branching, beam, expected):
    config = SearchConfig(max_depth=4, branching_factor=branching, max_beam=beam)
    agent = ScriptAgent([[[speak(f"t{t} alt{a}")] for a in range(4)] for t in range(4)])
    search = JoshSearch(agent, user(30), ToyEnv(HOTEL_GOALS), config=config)
    counts = []
    while not search.done:
        event = asyncio.run(search.step())
        if event.step:
            counts.append(sum(1 for n in event.created if search.tree.nodes[n].kind == "agent"))
    assert counts == expected


def test_stops_at_max_depth():
    tree = run(JoshSearch(chatty_agent(), user(30), ToyEnv(HOTEL_GOALS), config=SearchConfig(max_depth=3)))
    assert tree.stop_reason == "max_depth" and tree.step == 3 and tree.done
    assert max(n.turn for n in tree.nodes.values()) == 3
    last = [n for n in tree.nodes.values() if n.step == 3]
    assert last and all(n.kind == "agent" and n.status == "ended" for n in last)  # no user reply


def test_stops_when_every_user_hangs_up():
    tree = run(JoshSearch(chatty_agent(), user(2), ToyEnv(HOTEL_GOALS)))
    assert tree.stop_reason == "user_ended" and tree.step == 2
    enders = [n for n in tree.nodes.values() if n.kind == "user" and n.step == 2]
    assert len(enders) == 4 and all(n.ended and n.status == "ended" for n in enders)
    assert all(n.text == "END_CONVERSATION" for n in enders)
    assert tree.leaves == []


def test_user_hanging_up_ends_only_that_leaf():
    class PickyUser:
        name = "picky"

        async def reply(self, ctx: TurnContext):
            from josh_core.policies.base import UserTurn

            if ctx.history and ctx.history[-1].content == "turn 0 option B":
                return UserTurn(text="bye", ended=True)
            return UserTurn(text=f"more {ctx.turn_index}")

    search = JoshSearch(chatty_agent(), PickyUser(), ToyEnv(HOTEL_GOALS), config=SearchConfig(max_depth=2))
    asyncio.run(search.step())
    event = asyncio.run(search.step())
    assert event.ended == ["conversation:0.1.0"]
    assert event.leaves == ["conversation:0.0.0"]
    event = asyncio.run(search.step())
    assert event.stop_reason == "max_depth"
    assert event.created == ["conversation:0.0.0.0", "conversation:0.0.0.1"]


def test_opener_edge_cases():
    ended = run(JoshSearch(chatty_agent(), ScriptUser([]), ToyEnv(HOTEL_GOALS)))
    assert ended.stop_reason == "user_ended" and list(ended.nodes) == ["conversation:0"]
    no_goals = run(JoshSearch(chatty_agent(), user(), ToyEnv([])))
    assert no_goals.stop_reason == "goals_done" and no_goals.reward == 0.0 and len(no_goals.nodes) == 1
    zero_depth = run(JoshSearch(chatty_agent(), user(), ToyEnv(HOTEL_GOALS), config=SearchConfig(max_depth=0)))
    assert zero_depth.stop_reason == "max_depth" and len(zero_depth.nodes) == 1
    search = JoshSearch(chatty_agent(), ScriptUser([]), ToyEnv(HOTEL_GOALS))
    run(search)
    with pytest.raises(RuntimeError):
        asyncio.run(search.step())


def test_one_turn_reaching_two_goals_removes_both():
    agent = ScriptAgent(
        [
            [
                [speak("hello")],
                [call("search_hotel", area="north"), call("book_hotel", name="x"), speak("done")],
            ]
        ]
    )
    tree = run(JoshSearch(agent, user(), ToyEnv(HOTEL_GOALS + [("search_train", {"day": "monday"})])))
    root = tree.nodes[tree.roots[-1]]
    assert root.path == "0.1" and root.goals_hit == ["0:search_hotel", "1:book_hotel"]
    assert root.call_goals == [["0:search_hotel"], ["1:book_hotel"]]
    assert tree.reward == pytest.approx(2 / 3)
    assert tree.remaining_goals == ["2:search_train"]
    assert [e.goal_id for e in tree.goal_events()] == ["0:search_hotel", "1:book_hotel"]


def test_sibling_reaching_a_different_goal_is_pruned_not_partial():
    agent = ScriptAgent(
        [
            [[call("search_hotel", area="north"), speak("a")], [call("book_hotel", name="x"), speak("b")]],
            [[speak("c")], [call("book_hotel", name="x"), speak("d")]],
        ]
    )
    tree = run(JoshSearch(agent, user(), ToyEnv(HOTEL_GOALS)))
    labels = compute_labels(tree)
    assert tree.roots == ["conversation:0", "conversation:0.0", "conversation:0.0.0.1"]
    assert tree.nodes["conversation:0.1"].goals_hit == ["1:book_hotel"]
    assert labels["conversation:0.1"] == "unexplored"  # rewarded elsewhere: not a negative
    assert not any(e.node_id == "conversation:0.1" for e in tree.reward_events)
    assert labels["conversation:0.0.0.0"] == "negative"
    assert tree.reward == 1.0


def test_goal_reached_by_a_later_call_on_the_path():
    """Completion is judged on the whole path: a goal needing two calls counts at the second."""

    class PairEnv(ToyEnv):
        def completed_goals(self, calls):
            names = [r.call.name for r in calls if r.call]
            return {"0:pair"} if "first" in names and "second" in names else set()

        def goal_ids(self):
            return ["0:pair"]

    agent = ScriptAgent([[[call("first"), speak("one")]], [[call("second"), speak("two")]]])
    env = PairEnv([], apis=["first", "second"])
    tree = run(JoshSearch(agent, user(), env, config=SearchConfig.plain()))
    assert [n.goals_hit for n in tree.agent_nodes()] == [[], ["0:pair"]]
    assert tree.agent_nodes()[1].call_goals == [["0:pair"]] and tree.reward == 1.0


def test_plain_rollout_is_one_path_and_all_ideal():
    agent = ScriptAgent([[[speak("hi")]], [[call("search_hotel", area="north"), speak("x")]], [[speak("more")]]])
    tree = run(JoshSearch(agent, user(4), ToyEnv(HOTEL_GOALS), config=SearchConfig.plain(max_depth=10)))
    assert all(len(tree.children(n)) <= 1 for n in tree.nodes)
    assert tree.stop_reason == "user_ended" and tree.reward == 0.5
    assert [n.id for n in ideal_path(tree)] == list(tree.nodes)
    assert set(compute_labels(tree).values()) == {"ideal"}


def test_context_given_to_policies():
    seen: list[TurnContext] = []
    users_seen: list[TurnContext] = []

    class Recording(ScriptAgent):
        async def act(self, ctx):
            seen.append(ctx)
            return await super().act(ctx)

    class RecordingUser(ScriptUser):
        async def reply(self, ctx):
            users_seen.append(ctx)
            return await super().reply(ctx)

    agent = Recording([[[call("search_hotel", area="south"), speak("nothing there")]], [[speak("ok")]]])
    env = ToyEnv(HOTEL_GOALS)
    run(JoshSearch(agent, RecordingUser(["hello", "north please", "bye"]), env, config=SearchConfig.plain(max_depth=2)))
    first, second = seen
    assert first.turn_index == 0 and first.child_index == 0 and first.env is env
    assert [m.content for m in first.history] == ["hello"] and first.api_calls == []
    assert [(m.role, m.content[:9]) for m in second.agent_memory] == [
        ("user", "hello"), ("assistant", "PLAN call"), ("user", "APIRETURN"),
        ("assistant", "PLAN answ"), ("user", "north ple"),
    ]
    assert [(m.role, m.content) for m in second.history] == [
        ("user", "hello"), ("assistant", "nothing there"), ("user", "north please")
    ]
    assert second.turn_index == 1 and len(second.api_calls) == 1
    assert [u.turn_index for u in users_seen] == [0, 1]
    assert users_seen[1].agent_memory == []  # users see the visible conversation only
    assert users_seen[1].seed == derive_seed(0, "0.0.0")


def test_seeds_derive_from_the_path():
    config = SearchConfig(max_depth=3, seed=1234)
    tree = run(JoshSearch(chatty_agent(), user(), ToyEnv(HOTEL_GOALS), config=config))
    seeds = {n.path: n.seed for n in tree.nodes.values()}
    assert all(seed == derive_seed(1234, path) for path, seed in seeds.items())
    assert len(set(seeds.values())) == len(seeds)
    other = run(JoshSearch(chatty_agent(), user(), ToyEnv(HOTEL_GOALS), config=SearchConfig(max_depth=3, seed=1)))
    assert other.nodes["conversation:0"].seed != seeds["0"]


class Jittery(ScriptAgent):
    """Finishes in a random order and tracks how many turns run at once."""

    in_flight = 0
    most_in_flight = 0

    async def act(self, ctx):
        type(self).in_flight += 1
        type(self).most_in_flight = max(type(self).most_in_flight, type(self).in_flight)
        await asyncio.sleep(random.random() * 0.004)
        try:
            return await super().act(ctx)
        finally:
            type(self).in_flight -= 1


def test_result_does_not_depend_on_concurrency():
    turns = [
        [[speak(f"t{t} a")], [call("search_hotel", area="south"), speak(f"t{t} b")]] for t in range(5)
    ]
    turns[2] = [[speak("t2 a")], [call("search_hotel", area="north"), speak("t2 b")]]
    trees = []
    for concurrent in (True, False, True):
        Jittery.in_flight = Jittery.most_in_flight = 0
        search = JoshSearch(Jittery(turns), user(), ToyEnv(HOTEL_GOALS), config=SearchConfig(max_depth=6),
                            concurrent=concurrent)
        trees.append(comparable(run(search)))
        assert Jittery.most_in_flight == (8 if concurrent else 1)
    assert trees[0] == trees[1] == trees[2]
    assert trees[0]["reward"] == 0.5


def test_policy_errors_propagate():
    class Broken(ScriptAgent):
        async def act(self, ctx):
            if ctx.child_index == 1:
                raise ConnectionError("backend down")
            return await super().act(ctx)

    search = JoshSearch(Broken([[[speak("x")]]]), user(), ToyEnv(HOTEL_GOALS))
    asyncio.run(search.step())
    with pytest.raises(ConnectionError):
        asyncio.run(search.step())


def test_reaching_every_goal_is_exactly_full_reward():
    goals = [(f"api_{i}", {}) for i in range(7)]  # 7 x 1/7 does not sum to 1.0 in floats
    agent = ScriptAgent([[[call(f"api_{t}"), speak(f"done {t}")]] for t in range(7)])
    tree = run(JoshSearch(agent, user(), ToyEnv(goals), config=SearchConfig.plain()))
    assert len(tree.goal_events()) == 7 and tree.stop_reason == "goals_done"
    assert tree.reward == 1.0
