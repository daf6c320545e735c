"""JOSH turn-level beam search (paper section 2.1, Algorithm 1), one step at a time.

The search knows nothing of ToolWOZ or of models: it drives an `Agent` and a
`UserSimulator` (josh_core.policies.base) over a `ToolEnvironment` that says which goals a list
of API calls completes. A plain rollout is the same search with branching 1 and beam 1.

One step is one agent turn on every leaf of the beam, the goal check, then one user turn on
every surviving leaf:

1. Expansion. With `leaves` the current beam, each leaf gets `branching_factor` agent
   children if `len(leaves) * branching_factor <= max_beam`, else one child each, so the beam
   grows 1 -> 2 -> 4 -> 8 and then stays flat (defaults 2 and 8).
2. Goal check. A node's goals are those `env.completed_goals(every API call on its path from
   the opener)` returns that are still in the goal set G. Agent nodes are examined in a fixed
   order (leaves in beam order, then children by index); the first node that completed any
   goal becomes the new root and the beam is reduced to it. It removes *all* goals it
   completed, and the average reward grows by k/|G| for k goals. (Algorithm 1 removes one goal
   g per step; a turn that completes several goals at once, such as two calls in one turn,
   earns each of them here, which is the same average reward Algorithm 1 reaches when it
   meets those goals again in later steps, without spending extra turns.) Other agent nodes of
   the same step that completed any of the removed goals get partial credit (a reward event of
   kind "partial": not on the ideal path, not a negative). All other agent nodes of the step
   are pruned.
3. User turn. The user simulator replies on every leaf; a user who hangs up ends that leaf.

The search stops when G is empty, after `max_depth` agent turns, or when no leaf is alive.

Every node of a step is produced concurrently (`asyncio.gather`: all agent turns, then all user
turns). A node's inputs are only its path and its own seed, derived from the conversation
seed and the node's path, and nodes join the tree in the fixed order above, so the tree does not
depend on concurrency (`concurrent=False` runs the same nodes one after another). The
environment's `execute` must therefore answer a call from the call alone (ToolWOZ's does), or
the environment gives `for_path(calls)`: then every agent turn gets its own view, the initial
state with the calls on its path replayed, and its calls change that view alone (τ²'s
databases; josh_core/envs/tau2/env.py). Sibling leaves never see each other's writes and the
root's state never changes, so the tree still depends on nothing but paths and seeds.

`SearchConfig.stop_when_goals_done=False` (plain rollouts of environments rewarded by the end
state, such as τ²) plays on after the last goal call until the user ends or `max_depth`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, Field

from josh_core.policies.base import Agent, TurnContext, UserSimulator
from josh_core.search.tree import (
    ConversationTree,
    Node,
    RewardEvent,
    StopReason,
    derive_seed,
    node_id,
)
from josh_core.types import ApiCallRecord, ToolEnvironment, env_feature

T = TypeVar("T")


class SearchConfig(BaseModel):
    """Algorithm 1's parameters. The cap on agent actions per turn lives in AgentOptions:
    the agent enforces it."""

    max_depth: int = Field(15, ge=0)  # max agent turns
    branching_factor: int = Field(2, ge=1)
    max_beam: int = Field(8, ge=1)
    seed: int = 0  # the conversation's seed; every node derives its own from it
    # Stop once every goal is reached (JOSH). False: play on until the user ends or max_depth
    # (plain rollouts of environments whose reward is the end state, such as τ²).
    stop_when_goals_done: bool = True

    @classmethod
    def plain(cls, max_depth: int = 15, seed: int = 0) -> SearchConfig:
        """A plain rollout: one agent turn per user turn, no branching."""
        return cls(max_depth=max_depth, branching_factor=1, max_beam=1, seed=seed)

    @property
    def is_plain(self) -> bool:
        return self.branching_factor == 1 or self.max_beam == 1

    def children_per_leaf(self, n_leaves: int) -> int:
        if n_leaves * self.branching_factor <= self.max_beam:
            return self.branching_factor
        return 1


class StepEvent(BaseModel):
    """What one `step()` did, for progress displays and the app."""

    step: int  # 0: the opener; t: the agent's t-th turn and the user's replies
    created: list[str] = Field(default_factory=list)  # node ids, in tree order
    goals_hit: list[str] = Field(default_factory=list)  # goals removed from G in this step
    new_root: str | None = None
    partial: list[str] = Field(default_factory=list)  # nodes given partial credit
    pruned: list[str] = Field(default_factory=list)
    ended: list[str] = Field(default_factory=list)  # leaves where the conversation stopped
    leaves: list[str] = Field(default_factory=list)  # the beam after this step
    reward: float = 0.0  # average reward so far
    done: bool = False
    stop_reason: StopReason | None = None


class TreeSink(Protocol):
    """Where the search reports its progress as it happens (storage implements it)."""

    async def node_created(self, node: Node) -> None:
        """A node is complete (called as soon as it is, possibly concurrently)."""
        ...

    async def step_done(self, tree: ConversationTree, event: StepEvent) -> None:
        """A step is complete: statuses, reward events and the reward may have changed."""
        ...


def _now() -> datetime:
    return datetime.now(timezone.utc)


class JoshSearch:
    """The search over one conversation. Use `step()` to follow it or `run_to_end()`."""

    def __init__(
        self,
        agent: Agent,
        user: UserSimulator,
        env: ToolEnvironment,
        *,
        config: SearchConfig | None = None,
        conversation_id: str = "conversation",
        scenario: Any = None,
        sink: TreeSink | None = None,
        concurrent: bool = True,
    ):
        self.agent = agent
        self.user = user
        self.env = env
        self.config = config or SearchConfig()
        self.scenario = scenario
        self.sink = sink
        self.concurrent = concurrent
        goal_ids = list(env.goal_ids())
        self.tree = ConversationTree(
            conversation_id=conversation_id, goal_ids=goal_ids, remaining_goals=list(goal_ids)
        )

    @property
    def done(self) -> bool:
        return self.tree.done

    async def run_to_end(
        self, on_step: Callable[[StepEvent], Any] | None = None
    ) -> ConversationTree:
        while not self.tree.done:
            event = await self.step()
            if on_step is not None:
                on_step(event)
        return self.tree

    async def step(self) -> StepEvent:
        if self.tree.done:
            raise RuntimeError("the search is done")
        if not self.tree.roots:
            event = await self._opener()
        else:
            event = await self._turn()
        if self.sink is not None:
            await self.sink.step_done(self.tree, event)
        return event

    # -- steps ----------------------------------------------------------------------------

    async def _opener(self) -> StepEvent:
        root = await self._user_turn(None, step=0)
        self.tree.add(root)
        self.tree.roots = [root.id]
        self.tree.leaves = [root.id]
        event = StepEvent(step=0, created=[root.id], new_root=root.id)
        if root.ended:
            self._finish(event, "user_ended")
        elif not self.tree.remaining_goals and self.config.stop_when_goals_done:
            self._finish(event, "goals_done")
        elif self.config.max_depth == 0:
            self._finish(event, "max_depth")
        event.leaves = list(self.tree.leaves)
        return event

    async def _turn(self) -> StepEvent:
        tree = self.tree
        step = tree.step + 1
        tree.step = step
        event = StepEvent(step=step)
        leaves = [tree.nodes[nid] for nid in tree.leaves]
        per_leaf = self.config.children_per_leaf(len(leaves))
        agent_nodes = await self._gather(
            [
                (lambda leaf=leaf, c=c: self._agent_turn(leaf, c, step))
                for leaf in leaves
                for c in range(per_leaf)
            ]
        )
        for node in agent_nodes:
            tree.add(node)
        event.created.extend(n.id for n in agent_nodes)

        new_root = next((n for n in agent_nodes if n.goals_hit), None)
        if new_root is None:
            tree.leaves = [n.id for n in agent_nodes]
        else:
            removed = list(new_root.goals_hit)
            share = 1.0 / len(tree.goal_ids)
            for goal in removed:
                tree.reward_events.append(
                    RewardEvent(
                        conversation_id=tree.conversation_id,
                        node_id=new_root.id,
                        goal_id=goal,
                        kind="goal",
                        reward=share,
                        step=step,
                    )
                )
            tree.remaining_goals = [g for g in tree.remaining_goals if g not in removed]
            # k/|G| per step, computed from the count so that reaching every goal is exactly 1.0
            reached = len(tree.goal_ids) - len(tree.remaining_goals)
            tree.reward = reached / len(tree.goal_ids)
            tree.roots.append(new_root.id)
            for node in agent_nodes:
                if node is new_root:
                    continue
                shared = [g for g in node.goals_hit if g in removed]
                for goal in shared:
                    tree.reward_events.append(
                        RewardEvent(
                            conversation_id=tree.conversation_id,
                            node_id=node.id,
                            goal_id=goal,
                            kind="partial",
                            reward=0.0,
                            step=step,
                        )
                    )
                if shared:
                    event.partial.append(node.id)
                node.status = "pruned"
                event.pruned.append(node.id)
            tree.leaves = [new_root.id]
            event.new_root = new_root.id
            event.goals_hit = removed

        if not tree.remaining_goals and self.config.stop_when_goals_done:
            self._finish(event, "goals_done")
        elif step >= self.config.max_depth:
            self._finish(event, "max_depth")
        else:
            parents = [tree.nodes[nid] for nid in tree.leaves]
            user_nodes = await self._gather(
                [(lambda parent=parent: self._user_turn(parent, step)) for parent in parents]
            )
            for node in user_nodes:
                tree.add(node)
                if node.ended:
                    node.status = "ended"
                    event.ended.append(node.id)
            event.created.extend(n.id for n in user_nodes)
            tree.leaves = [n.id for n in user_nodes if not n.ended]
            if not tree.leaves:
                self._finish(event, "user_ended")
        event.leaves = list(tree.leaves)
        event.reward = tree.reward
        return event

    def _finish(self, event: StepEvent, reason: StopReason) -> None:
        for nid in self.tree.leaves:
            self.tree.nodes[nid].status = "ended"
            event.ended.append(nid)
        self.tree.leaves = []  # the beam is empty once the search is over
        self.tree.done = True
        self.tree.stop_reason = reason
        event.done = True
        event.stop_reason = reason
        event.reward = self.tree.reward

    # -- nodes ----------------------------------------------------------------------------

    async def _agent_turn(self, leaf: Node, child_index: int, step: int) -> Node:
        tree = self.tree
        path = f"{leaf.path}.{child_index}"
        seed = derive_seed(self.config.seed, path)
        calls_before = tree.calls_on_path(leaf.id)
        # Stateful environments give each turn its own view: the path's calls replayed on
        # the initial state; the turn's calls change that view only (module docstring).
        for_path = env_feature(self.env, "for_path")
        ctx = TurnContext(
            history=tree.history(leaf.id),
            agent_memory=tree.agent_memory(leaf.id),
            api_calls=calls_before,
            env=for_path(calls_before) if for_path is not None else self.env,
            scenario=self.scenario,
            turn_index=leaf.turn,
            child_index=child_index,
            seed=seed,
        )
        started_at = _now()
        start = time.perf_counter()
        turn = await self.agent.act(ctx)
        seconds = time.perf_counter() - start
        call_goals, completed = self._goals_by_call(calls_before, turn.api_calls)
        prompt_tokens = [g.prompt_tokens for g in turn.generations if g.prompt_tokens is not None]
        completion_tokens = [
            g.completion_tokens for g in turn.generations if g.completion_tokens is not None
        ]
        node = Node(
            id=node_id(tree.conversation_id, path),
            conversation_id=tree.conversation_id,
            parent_id=leaf.id,
            kind="agent",
            depth=leaf.depth + 1,
            child_index=child_index,
            path=path,
            step=step,
            text=turn.speak,
            internal=turn.internal,
            generations=turn.generations,
            api_calls=turn.api_calls,
            call_goals=call_goals,
            goals_hit=[g for g in tree.remaining_goals if g in completed],
            format_errors=turn.format_errors,
            seed=seed,
            started_at=started_at,
            seconds=seconds,
            prompt_tokens=sum(prompt_tokens) if prompt_tokens else None,
            completion_tokens=sum(completion_tokens) if completion_tokens else None,
        )
        if self.sink is not None:
            await self.sink.node_created(node)
        return node

    def _goals_by_call(
        self, before: list[ApiCallRecord], calls: list[ApiCallRecord]
    ) -> tuple[list[list[str]], set[str]]:
        """Goals each new call completed (in goal order), and all goals the path completes."""
        completed = set(self.env.completed_goals(before))
        by_call: list[list[str]] = []
        for i in range(len(calls)):
            now = set(self.env.completed_goals(before + calls[: i + 1]))
            by_call.append([g for g in self.tree.goal_ids if g in now and g not in completed])
            completed = now
        return by_call, completed

    async def _user_turn(self, parent: Node | None, step: int) -> Node:
        tree = self.tree
        if parent is None:
            path, history, calls, turn_index, depth = "0", [], [], 0, 0
        else:
            path = f"{parent.path}.0"
            history = tree.history(parent.id)
            calls = tree.calls_on_path(parent.id)
            turn_index = (parent.depth + 1) // 2  # user turns already on the path
            depth = parent.depth + 1
        seed = derive_seed(self.config.seed, path)
        ctx = TurnContext(
            history=history,
            api_calls=calls,
            env=self.env,
            scenario=self.scenario,
            turn_index=turn_index,
            child_index=0,
            seed=seed,
        )
        started_at = _now()
        start = time.perf_counter()
        turn = await self.user.reply(ctx)
        node = Node(
            id=node_id(tree.conversation_id, path),
            conversation_id=tree.conversation_id,
            parent_id=parent.id if parent is not None else None,
            kind="user",
            depth=depth,
            child_index=0,
            path=path,
            step=step,
            status="ended" if turn.ended else "alive",
            text=turn.text,
            ended=turn.ended,
            seed=seed,
            started_at=started_at,
            seconds=time.perf_counter() - start,
        )
        if self.sink is not None:
            await self.sink.node_created(node)
        return node

    async def _gather(self, jobs: list[Callable[[], Awaitable[T]]]) -> list[T]:
        """Run node jobs concurrently (or one after another), results in job order."""
        if not self.concurrent:
            return [await job() for job in jobs]
        results = await asyncio.gather(*(job() for job in jobs), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return list(results)  # type: ignore[arg-type]
