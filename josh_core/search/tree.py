"""The conversation tree that JOSH's turn-level beam search grows (paper section 2.1).

The conversation starts with the user's opener: the root, a user node at depth 0. Each user
node is expanded into one or more agent children (whole agent turns: generations, API calls,
the spoken reply); each agent child is answered by exactly one user node. So depths alternate:
user nodes at even depths, agent nodes at odd depths, and agent node at depth 2t-1 is the
agent's t-th turn.

Node ids are deterministic: `<conversation id>:<path>`, where the path lists child indices from
the root ("0" is the root, "0.1" its second agent child, "0.1.0" the user's reply to it). Two
runs of the same scenario, configuration and seed therefore produce identical trees.

Labels (ideal path, partial credit, ...) are not stored here: `josh_core.search.labels`
derives them from the tree and its reward events.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, PrivateAttr

from josh_core.types import ApiCallRecord, Generation, Message

NodeKind = Literal["user", "agent"]
# Status of a node as a leaf of the beam. "alive": in the beam, or interior (it has children);
# "pruned": dropped from the beam when another node became the new root; "ended": the
# conversation stopped at this leaf (the user hung up, all goals were reached, or max depth).
NodeStatus = Literal["alive", "pruned", "ended"]
StopReason = Literal["goals_done", "max_depth", "user_ended"]
RewardKind = Literal["goal", "partial"]


def derive_seed(seed: int, key: str) -> int:
    """A stable 31-bit seed from a parent seed and a key (scenario id, node path).

    Depends only on its inputs, never on the order in which nodes happen to be expanded, so
    concurrent and one-at-a-time expansion sample identically.
    """
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def node_id(conversation_id: str, path: str) -> str:
    return f"{conversation_id}:{path}"


class RewardEvent(BaseModel):
    """A goal reached in the search.

    kind "goal": the node became the new root and the goal left the goal set; `reward` is its
    share 1/|G|. kind "partial": another agent turn of the same step reached the same goal
    (partial credit in the paper); it earns nothing (`reward` 0) and is not a negative.
    """

    conversation_id: str
    node_id: str
    goal_id: str
    kind: RewardKind
    reward: float
    step: int


class Node(BaseModel):
    id: str
    conversation_id: str
    parent_id: str | None
    kind: NodeKind
    depth: int  # distance from the root (root user node: 0)
    child_index: int  # position among its parent's children
    path: str  # child indices from the root, dot-separated ("0.1.0")
    step: int  # the search step that created it (0: the opener)
    status: NodeStatus = "alive"
    # What the other side sees: the user's utterance or the agent's SPEAK text.
    text: str = ""
    ended: bool = False  # user node: the user hung up
    # Agent nodes: the agent's internal messages of this turn (assistant generations,
    # APIRETURN / tool messages, error feedback) and the generations themselves.
    internal: list[Message] = Field(default_factory=list)
    generations: list[Generation] = Field(default_factory=list)
    api_calls: list[ApiCallRecord] = Field(default_factory=list)
    # For each API call, the goals that call completed given every call before it on the path
    # (whether or not the goal was still in the goal set): for analysis of which call did what.
    call_goals: list[list[str]] = Field(default_factory=list)
    # Goals still in the goal set that this node's path completes at this node.
    goals_hit: list[str] = Field(default_factory=list)
    format_errors: int = 0
    seed: int = 0
    started_at: datetime | None = None
    seconds: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    def path_key(self) -> tuple[int, ...]:
        """The path as a tuple of child indices (sorts in tree order)."""
        return tuple(int(part) for part in self.path.split("."))

    @property
    def turn(self) -> int:
        """Agent turns on the path up to and including this node."""
        return (self.depth + 1) // 2

    @property
    def api_errors(self) -> int:
        return sum(1 for record in self.api_calls if not record.result.ok)

    @property
    def has_errors(self) -> bool:
        """A turn with a malformed generation or a failed API call (export filters drop it)."""
        return self.format_errors > 0 or self.api_errors > 0

    def visible_message(self) -> Message:
        """The node as a message of the visible conversation."""
        return Message(role="user" if self.kind == "user" else "assistant", content=self.text)


class ConversationTree(BaseModel):
    """All nodes of one conversation plus the search's bookkeeping."""

    conversation_id: str
    goal_ids: list[str]
    nodes: dict[str, Node] = Field(default_factory=dict)  # in creation order
    reward_events: list[RewardEvent] = Field(default_factory=list)
    roots: list[str] = Field(default_factory=list)  # the opener, then each new root in order
    leaves: list[str] = Field(default_factory=list)  # the current beam
    remaining_goals: list[str] = Field(default_factory=list)
    reward: float = 0.0
    step: int = 0  # steps taken (0: not started; the opener is step 0, agent turn t is step t)
    done: bool = False
    stop_reason: StopReason | None = None

    _children: dict[str, list[str]] = PrivateAttr(default_factory=dict)

    def model_post_init(self, __context: object) -> None:
        self._children = {}
        for node in sorted(self.nodes.values(), key=lambda n: (n.depth, n.path_key())):
            if node.parent_id is not None:
                self._children.setdefault(node.parent_id, []).append(node.id)

    def __repr__(self) -> str:
        # Short on purpose: a tree can hold hundreds of nodes, and Python reprs objects in
        # surprising places (asyncio.run reprs the finished task's result on Python 3.11).
        return (
            f"ConversationTree({self.conversation_id!r}, nodes={len(self.nodes)}, "
            f"step={self.step}, reward={self.reward:.3f}, done={self.done})"
        )

    __str__ = __repr__

    # -- building -------------------------------------------------------------------------

    def add(self, node: Node) -> None:
        if node.id in self.nodes:
            raise ValueError(f"node {node.id} already in the tree")
        self.nodes[node.id] = node
        if node.parent_id is not None:
            siblings = self._children.setdefault(node.parent_id, [])
            siblings.append(node.id)
            siblings.sort(key=lambda nid: self.nodes[nid].child_index)

    # -- navigation ----------------------------------------------------------------------

    @property
    def root(self) -> Node | None:
        return self.nodes.get(self.roots[0]) if self.roots else None

    def children(self, nid: str) -> list[Node]:
        return [self.nodes[c] for c in self._children.get(nid, [])]

    def parent(self, nid: str) -> Node | None:
        parent_id = self.nodes[nid].parent_id
        return self.nodes[parent_id] if parent_id is not None else None

    def path_to(self, nid: str) -> list[Node]:
        """Nodes from the root to `nid`, inclusive."""
        path: list[Node] = []
        current: str | None = nid
        while current is not None:
            node = self.nodes[current]
            path.append(node)
            current = node.parent_id
        return path[::-1]

    def calls_on_path(self, nid: str) -> list[ApiCallRecord]:
        return [record for node in self.path_to(nid) for record in node.api_calls]

    def history(self, nid: str) -> list[Message]:
        """The visible conversation from the opener to `nid`, inclusive."""
        return [node.visible_message() for node in self.path_to(nid)]

    def agent_memory(self, nid: str) -> list[Message]:
        """The agent's internal history up to `nid`, inclusive: user utterances as user
        messages, agent turns as their internal messages (no system prompt)."""
        memory: list[Message] = []
        for node in self.path_to(nid):
            if node.kind == "user":
                memory.append(Message(role="user", content=node.text))
            else:
                memory.extend(node.internal)
        return memory

    def agent_nodes(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.kind == "agent"]

    def goal_events(self) -> list[RewardEvent]:
        return [e for e in self.reward_events if e.kind == "goal"]
