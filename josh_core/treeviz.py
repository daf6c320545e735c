"""Conversation trees for people: the tree explorer's layout and drawing data (the app), and
Graphviz DOT (for any other tool), both coloured by derived labels.

Node text comes from models and is untrusted: every string that enters DOT goes through
`dot_escape`; the explorer's data is JSON that the browser component writes with
`textContent` only.
"""

from __future__ import annotations

from josh_core.analysis.transcript import goal_word
from josh_core.search.labels import Label, compute_labels, ideal_path
from josh_core.search.tree import ConversationTree, Node

# fill, border: one colour pair per label (the legend in the app uses the same table).
LABEL_COLORS: dict[str, tuple[str, str]] = {
    "ideal": ("#c8e6c9", "#2e7d32"),
    "partial": ("#fff3c4", "#b38f00"),
    "negative": ("#ffcdd2", "#c62828"),
    "unexplored": ("#eeeeee", "#9e9e9e"),
}


def dot_escape(text: str) -> str:
    """Make arbitrary text safe inside a double-quoted DOT string."""
    return (
        text.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\r", " ")
        .replace("\n", "\\n")
        .replace("<", "‹")  # keep model text from ever opening an HTML-like label
        .replace(">", "›")
    )


def shorten(text: str, width: int = 38) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def node_caption(node: Node) -> str:
    """Two short lines: who and what, then the start of the spoken text."""
    if node.kind == "user":
        head = "user" + (" · hung up" if node.ended else "")
    else:
        calls = ", ".join(r.call.name if r.call else "bad call" for r in node.api_calls)
        head = f"agent t{node.turn}" + (f" · {calls}" if calls else "")
        if node.goals_hit:
            head += f" · +{len(node.goals_hit)} goal"
        if node.format_errors:
            head += f" · {node.format_errors} fmt err"
    return f"{shorten(head, 44)}\n{shorten(node.text) or '∅'}"


def tree_to_dot(
    tree: ConversationTree,
    labels: dict[str, Label] | None = None,
    selected: str | None = None,
) -> str:
    """DOT source of the whole tree, top to bottom, in tree order."""
    labels = labels if labels is not None else compute_labels(tree)
    lines = [
        "digraph josh {",
        '  graph [rankdir=TB, nodesep=0.25, ranksep=0.35, bgcolor="transparent"];',
        '  node [fontname="Helvetica", fontsize=10, style="filled,rounded", shape=box, penwidth=1.2];',
        '  edge [color="#9e9e9e", arrowsize=0.6];',
    ]
    for node in sorted(tree.nodes.values(), key=lambda n: n.path_key()):
        fill, border = LABEL_COLORS[labels.get(node.id, "unexplored")]
        attrs = {
            "label": dot_escape(node_caption(node)),
            "tooltip": dot_escape(shorten(node.text, 400) or node.kind),
            "fillcolor": fill if node.kind == "agent" else "#ffffff",
            "color": border,
        }
        if node.kind == "user":
            attrs["shape"] = "note"
        if node.id == selected:
            attrs["penwidth"] = "3"
        attr_text = ", ".join(f'{key}="{value}"' for key, value in attrs.items())
        lines.append(f'  "{dot_escape(node.id)}" [{attr_text}];')
        if node.parent_id is not None:
            edge_color = border if labels.get(node.id) == "ideal" else "#bdbdbd"
            lines.append(f'  "{dot_escape(node.parent_id)}" -> "{dot_escape(node.id)}" [color="{edge_color}"];')
    lines.append("}")
    return "\n".join(lines)


# -- the interactive tree explorer ----------------------------------------------------------
#
# The app draws trees in the browser with its own SVG component (assets/tree_graph.js): the
# layout is computed here once per tree, so selecting a node never lays the graph out again.
# Everything the browser gets is data (JSON); the component puts text into the page with
# `textContent` only, so model text never becomes markup.

NODE_W = 140  # node box in layout units (CSS pixels at zoom 1): four depths fit the explorer at 0.8
NODE_H = 44
GAP_X = 46  # between depths (edges run here, and a folded subtree's "+N" handle)
GAP_Y = 10  # between neighbours at one depth
# Trees above this many nodes open folded: the ideal path (the spine) and the alternatives
# beside it, every other subtree folded behind its count. Smaller trees open whole.
FOLD_ABOVE = 60

# Plain words for the legend and the side panel (the engine's label names stay in the data).
LABEL_WORDS: dict[str, str] = {
    "ideal": "ideal path",
    "partial": "partial credit",
    "negative": "negative",
    "unexplored": "not used",
}
LABEL_HELP: dict[str, str] = {
    "ideal": "the conversation the search settled on: SFT data, KTO/DPO positives",
    "partial": "reached the same goal as the ideal turn of its step, off the ideal path: not used as data",
    "negative": "an alternative to an ideal turn that earned nothing: KTO/DPO negatives",
    "unexplored": "pruned, or below the last new root: not used as data",
}


def node_name(tree: ConversationTree, node: Node) -> str:
    """A name a person can say: "turn 3 · branch 2" (the second agent turn tried at turn 3),
    "user 2", "opener", instead of the dotted path of child indices."""
    if node.parent_id is None:
        return "opener"
    siblings = len(tree.children(node.parent_id))
    base = f"turn {node.turn}" if node.kind == "agent" else f"user {node.depth // 2 + 1}"
    return base + (f" · branch {node.child_index + 1}" if siblings > 1 else "")


def spine_ids(tree: ConversationTree) -> set[str]:
    """The ideal path's nodes: the explorer lays them out as one straight line at the top."""
    return {n.id for n in ideal_path(tree)}


def ordered_children(tree: ConversationTree, node_id: str, spine: set[str]) -> list[Node]:
    """Children in drawing order: the one on the spine first, then the others in tree order."""
    children = tree.children(node_id)
    return sorted(children, key=lambda c: c.id not in spine)


def layout_tree(tree: ConversationTree) -> dict[str, tuple[float, float]]:
    """Top-left corner of every node's box: depth left to right, siblings top to bottom
    (the spine's child first), a node on the spine level with its spine child (so the ideal
    path is one straight line at the top), any other parent centred on its children, subtrees
    packed as tight as their neighbours allow (no overlap at any depth).

    The explorer (assets/tree_graph.js `layout`) runs the same rule in the browser over the
    nodes left unfolded; this one lays out the whole tree (DOT-free tools, tests)."""
    spine = spine_ids(tree)
    next_free: dict[int, float] = {}  # lowest free y at each depth
    ys: dict[str, float] = {}

    def shift(nid: str, delta: float) -> None:
        stack = [nid]
        while stack:
            current = stack.pop()
            ys[current] += delta
            node = tree.nodes[current]
            next_free[node.depth] = max(next_free.get(node.depth, 0.0), ys[current] + NODE_H + GAP_Y)
            stack.extend(child.id for child in tree.children(current))

    def place(node: Node) -> None:
        children = ordered_children(tree, node.id, spine)
        floor = next_free.get(node.depth, 0.0)
        if children:
            y = ys[children[0].id] if node.id in spine else (ys[children[0].id] + ys[children[-1].id]) / 2
            if y < floor:
                for child in children:
                    shift(child.id, floor - y)
                y = floor
        else:
            y = floor
        ys[node.id] = y
        next_free[node.depth] = y + NODE_H + GAP_Y

    # Post-order without recursion (a deep conversation must not hit Python's recursion limit).
    for root in [n for n in tree.nodes.values() if n.parent_id is None]:
        stack: list[tuple[Node, bool]] = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                place(node)
                continue
            stack.append((node, True))
            stack.extend((child, False) for child in reversed(ordered_children(tree, node.id, spine)))
    return {nid: (tree.nodes[nid].depth * (NODE_W + GAP_X), y) for nid, y in ys.items()}


def _calls_word(node: Node) -> str:
    calls = [r.call.name if r.call else "unreadable call" for r in node.api_calls]
    if not calls:
        return ""
    return calls[0] if len(calls) == 1 else f"{calls[0]} +{len(calls) - 1}"


def graph_data(
    tree: ConversationTree,
    labels: dict[str, Label] | None = None,
    selected: str | None = None,
    verdicts: dict | None = None,
) -> dict:
    """What the tree explorer component draws: nodes (by path) with their parent, depth and
    drawing order, names, labels, marks, the spine (ideal path) and which subtrees open
    folded; the component lays them out. `verdicts` (node id -> NodeVerdicts, people's word
    on a node) are drawn as their own badge: they never change a node's label or colour.

    `key` changes whenever anything drawn changes (new nodes, labels, reward events,
    verdicts), so the component draws only then; a new `selected` alone moves the highlight."""
    import hashlib

    labels = labels if labels is not None else compute_labels(tree)
    verdicts = verdicts or {}
    spine = spine_ids(tree)
    positions = layout_tree(tree)
    fold = len(tree.nodes) > FOLD_ABOVE
    moved_roots = set(tree.roots[1:])
    partial_goals: dict[str, list[str]] = {}
    goal_events: dict[str, list[str]] = {}
    for event in tree.reward_events:
        target = partial_goals if event.kind == "partial" else goal_events
        target.setdefault(event.node_id, []).append(event.goal_id)
    rank: dict[str, int] = {}
    for node in tree.nodes.values():
        for i, child in enumerate(ordered_children(tree, node.id, spine)):
            rank[child.id] = i
    nodes = []
    for node in sorted(tree.nodes.values(), key=lambda n: n.path_key()):
        label = labels.get(node.id, "unexplored")
        fill, border = LABEL_COLORS[label]
        x, y = positions[node.id]
        errors = node.format_errors + node.api_errors
        name = node_name(tree, node)
        calls = _calls_word(node)
        kind_word = "user" + (" · hung up" if node.ended else "") if node.kind == "user" else "agent"
        hover = [f"{name} · {kind_word} · search label: {LABEL_WORDS[label]}"]
        if calls:
            hover.append("calls: " + ", ".join(r.call.name if r.call else "unreadable call" for r in node.api_calls))
        verdict = verdicts.get(node.id)
        if verdict is not None:
            hover.append("human verdict: " + verdict.words)
        if node.id in goal_events:
            hover.append("reached: " + ", ".join(goal_word(g) for g in goal_events[node.id]))
        if node.id in partial_goals:
            hover.append("partial credit: " + ", ".join(goal_word(g) for g in partial_goals[node.id]))
        if node.id in moved_roots:
            hover.append("the search moved its root here")
        if node.status == "pruned":
            hover.append("pruned from the beam")
        if errors:
            hover.append(f"{node.format_errors} format errors, {node.api_errors} failed API calls")
        hover.append(shorten(node.text, 160) or "(no spoken text)")
        hover.append(f"node {node.path}")
        has_children = bool(tree.children(node.id))
        nodes.append({
            "id": node.path, "x": x, "y": y, "depth": node.depth, "rank": rank.get(node.id, 0),
            "kind": node.kind, "label": label, "fill": fill if node.kind == "agent" else "#ffffff", "border": border,
            "name": name, "head": shorten(name, 22),
            "text": shorten(f"{calls}: {node.text}" if calls else node.text, 24) or "∅", "hover": "\n".join(hover),
            "goals": len(goal_events.get(node.id, [])), "partial": len(partial_goals.get(node.id, [])),
            "root": node.id in moved_roots, "pruned": node.status == "pruned", "errors": errors,
            "spine": node.id in spine, "verdict": verdict.words if verdict is not None else None,
            "folded": fold and has_children and node.id not in spine,
            "parent": tree.nodes[node.parent_id].path if node.parent_id in tree.nodes else None,
        })  # fmt: skip
    width = max((n["x"] for n in nodes), default=0) + NODE_W
    height = max((n["y"] for n in nodes), default=0) + NODE_H
    signature = hashlib.sha1(
        "|".join(f"{n['id']}{n['label']}{n['goals']}{n['partial']}{n['root']}{n['pruned']}{n['errors']}{n['spine']}"
                 f"{n['verdict']}" for n in nodes).encode()
    ).hexdigest()[:16]  # fmt: skip
    legend = [{"label": k, "word": LABEL_WORDS[k], "help": LABEL_HELP[k], "fill": f, "border": b}
              for k, (f, b) in LABEL_COLORS.items()]  # fmt: skip
    paths = {n["id"] for n in nodes}
    return {
        "key": f"{tree.conversation_id}:{signature}",
        "nodes": nodes,
        "node_w": NODE_W,
        "node_h": NODE_H,
        "gap_x": GAP_X,
        "gap_y": GAP_Y,
        "width": width,
        "height": height,
        "legend": legend,
        "selected": selected if selected in paths else None,
    }
