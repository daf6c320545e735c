"""What a person reads of a tree: one turn in detail, the conversation along a path, the
scenario's goal calls with where each was reached, and conversations to compare with.

Plain data (pydantic), no presentation: the app renders it (escaping every model string),
tests assert on it. Model text stays as it was generated.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from josh_core.search.labels import Label, compute_labels, ideal_path
from josh_core.search.tree import ConversationTree
from josh_core.storage.models import ConversationRecord


def goal_word(goal_id: str) -> str:
    """`"1:book_hotel"` -> `"goal 2 · book_hotel"` (goal ids count from 0, people from 1)."""
    index, _, api = goal_id.partition(":")
    return f"goal {int(index) + 1} · {api}" if index.isdigit() else goal_id


STOP_WORDS = {"goals_done": "goals done", "max_depth": "turn limit", "user_ended": "hung up"}


def stop_word(stop_reason: str | None, status: str) -> str:
    """Why a conversation stopped, in plain words (or its status while it runs)."""
    return STOP_WORDS.get(stop_reason or "", stop_reason or status)


class CallView(BaseModel):
    """One API call of a turn and the environment's answer."""

    name: str | None  # None: the call text could not be read as a call
    parameters: dict[str, Any] = Field(default_factory=dict)
    raw: str | None = None
    ok: bool
    error_kind: str | None = None
    error: str | None = None
    content: Any = None
    goals: list[str] = Field(default_factory=list)  # goals this call completed on its path


class GenerationView(BaseModel):
    action: str  # "apicall" | "speak" | "format_error"
    text: str
    format_error: str | None = None


class RewardView(BaseModel):
    goal_id: str
    kind: str  # "goal" (the node became the new root) | "partial"
    reward: float
    step: int


class TurnView(BaseModel):
    """One node as a turn of the conversation."""

    node_id: str
    path: str
    kind: str  # "user" | "agent"
    label: Label
    text: str
    turn: int  # agent turns up to and including this node
    step: int
    status: str
    ended: bool = False
    opener: bool = False
    new_root: bool = False  # the search moved its root here (a goal was reached)
    generations: list[GenerationView] = Field(default_factory=list)
    calls: list[CallView] = Field(default_factory=list)
    goals_hit: list[str] = Field(default_factory=list)
    rewards: list[RewardView] = Field(default_factory=list)
    format_errors: int = 0
    api_errors: int = 0
    children: int = 0


def turn_view(tree: ConversationTree, node_id: str, labels: dict[str, Label] | None = None) -> TurnView:
    labels = labels if labels is not None else compute_labels(tree)
    node = tree.nodes[node_id]
    calls = []
    for i, record in enumerate(node.api_calls):
        result = record.result
        calls.append(
            CallView(
                name=record.call.name if record.call else None,
                parameters=record.call.parameters if record.call else {},
                raw=record.raw,
                ok=result.ok,
                error_kind=result.error_kind,
                error=result.error,
                content=result.content,
                goals=node.call_goals[i] if i < len(node.call_goals) else [],
            )
        )
    return TurnView(
        node_id=node.id,
        path=node.path,
        kind=node.kind,
        label=labels.get(node.id, "unexplored"),
        text=node.text,
        turn=node.turn,
        step=node.step,
        status=node.status,
        ended=node.ended,
        opener=node.parent_id is None,
        new_root=node.id in tree.roots[1:],
        generations=[GenerationView(action=g.action, text=g.text, format_error=g.format_error) for g in node.generations],
        calls=calls,
        goals_hit=list(node.goals_hit),
        rewards=[
            RewardView(goal_id=e.goal_id, kind=e.kind, reward=e.reward, step=e.step)
            for e in tree.reward_events
            if e.node_id == node.id
        ],
        format_errors=node.format_errors,
        api_errors=node.api_errors,
        children=len(tree.children(node.id)),
    )


def path_views(tree: ConversationTree, node_id: str, labels: dict[str, Label] | None = None) -> list[TurnView]:
    """The conversation from the opener to `node_id`, inclusive, one view per turn."""
    labels = labels if labels is not None else compute_labels(tree)
    return [turn_view(tree, node.id, labels) for node in tree.path_to(node_id)]


def ideal_leaf(tree: ConversationTree) -> str | None:
    """The last node of the ideal path (where a finished conversation ended up)."""
    path = ideal_path(tree)
    if not path:
        return None
    # A JOSH tree's ideal path ends at its last root; follow its ideal children to the end of
    # the conversation the search settled on when the tree is a single path below it.
    return path[-1].id


class GoalRow(BaseModel):
    """One goal call of the scenario and whether (and where) the conversation reached it."""

    goal_id: str
    word: str  # "goal 1 · search_hotel"
    api: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    reached: bool
    node_path: str | None = None  # the node that reached it (became the new root)
    partial: int = 0  # other turns that reached it in the same step (partial credit)


def goal_rows(conversation: ConversationRecord, tree: ConversationTree | None = None) -> list[GoalRow]:
    """The scenario's goal calls in order, each with its outcome in this conversation."""
    calls = (conversation.scenario or {}).get("goal_calls") or []
    goal_ids = conversation.goals or [f"{i}:{c.get('name')}" for i, c in enumerate(calls)]
    reached_at: dict[str, str] = {}
    partial: dict[str, int] = {}
    if tree is not None:
        for event in tree.reward_events:
            node = tree.nodes.get(event.node_id)
            if event.kind == "goal" and node is not None:
                reached_at[event.goal_id] = node.path
            elif event.kind == "partial":
                partial[event.goal_id] = partial.get(event.goal_id, 0) + 1
    reached = set(conversation.goals_reached) | set(reached_at)
    rows = []
    for i, goal_id in enumerate(goal_ids):
        call = calls[i] if i < len(calls) else {}
        rows.append(
            GoalRow(
                goal_id=goal_id,
                word=goal_word(goal_id),
                api=call.get("name") or goal_id.partition(":")[2],
                parameters=call.get("parameters") or {},
                reached=goal_id in reached,
                node_path=reached_at.get(goal_id),
                partial=partial.get(goal_id, 0),
            )
        )
    return rows


def same_scenario(conversations: list[ConversationRecord], conversation: ConversationRecord) -> list[ConversationRecord]:
    """Other conversations of the same scenario (other runs first: a base and a trained agent)."""
    others = [c for c in conversations if c.scenario_id == conversation.scenario_id and c.id != conversation.id]
    return sorted(others, key=lambda c: (c.run_id == conversation.run_id, c.run_id, c.position))
