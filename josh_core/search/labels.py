"""Labels of tree nodes, derived from the tree and its reward events (never stored).

One function serves export, the app and analysis:

- "ideal": the ideal path (section 2.2). Backtrack from the last node that became a root by
  reaching a goal to the opener. A tree that never branched (a plain rollout) is one path, and
  all of it is ideal. A JOSH tree that reached no goal has only the opener on its ideal path.
- "partial": an agent turn that reached the same goal as the new root of its step (partial
  credit): rewarded, so neither ideal nor negative.
- "negative": an agent turn that branches from a user turn on the ideal path, is not on the
  ideal path and reached no goal (an alternative that earned no reward).
- "unexplored": everything else (pruned branches, turns below the last root, and alternatives
  that reached a different goal in a step where another node became the root).

Annotations from the app may override single nodes' labels (`overrides`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, get_args

from josh_core.search.tree import ConversationTree, Node

Label = Literal["ideal", "partial", "negative", "unexplored"]
LABELS: tuple[str, ...] = get_args(Label)


def is_single_path(tree: ConversationTree) -> bool:
    """True when no node has more than one child (a plain rollout)."""
    return all(len(tree.children(nid)) <= 1 for nid in tree.nodes)


def ideal_path(tree: ConversationTree) -> list[Node]:
    """The ideal path, opener first (empty for an empty tree)."""
    if not tree.roots:
        return []
    if is_single_path(tree):
        node = tree.nodes[tree.roots[0]]
        path = [node]
        while children := tree.children(node.id):
            node = children[0]
            path.append(node)
        return path
    return tree.path_to(tree.roots[-1])


def compute_labels(
    tree: ConversationTree, overrides: Mapping[str, str] | None = None
) -> dict[str, Label]:
    """Label of every node, keyed by node id, in tree order."""
    ideal = {node.id for node in ideal_path(tree)}
    partial = {event.node_id for event in tree.reward_events if event.kind == "partial"}
    labels: dict[str, Label] = {}
    for node in tree.nodes.values():
        if node.id in ideal:
            labels[node.id] = "ideal"
        elif node.id in partial:
            labels[node.id] = "partial"
        elif node.kind == "agent" and node.parent_id in ideal and not node.goals_hit:
            labels[node.id] = "negative"
        else:
            labels[node.id] = "unexplored"
    for nid, label in (overrides or {}).items():
        if nid in labels:
            if label not in LABELS:
                raise ValueError(f"unknown label {label!r} for node {nid}")
            labels[nid] = label  # type: ignore[assignment]
    return labels
