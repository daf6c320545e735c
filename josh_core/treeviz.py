"""Draw a conversation tree as Graphviz DOT, coloured by derived labels.

The app renders the DOT in the browser (`st.graphviz_chart`), so no system Graphviz is
needed. Node text comes from models and is untrusted: every string that enters the DOT source
goes through `dot_escape`, and the app escapes it again wherever it becomes HTML.
"""

from __future__ import annotations

from josh_core.search.labels import Label, compute_labels
from josh_core.search.tree import ConversationTree, Node

# fill, border: one colour pair per label (the legend in the app uses the same table).
LABEL_COLORS: dict[str, tuple[str, str]] = {
    "ideal": ("#c8e6c9", "#2e7d32"),
    "partial": ("#fff3c4", "#b38f00"),
    "negative": ("#ffcdd2", "#c62828"),
    "unexplored": ("#eeeeee", "#9e9e9e"),
}
LABEL_MEANINGS: dict[str, str] = {
    "ideal": "ideal path (SFT data; KTO/DPO positives)",
    "partial": "partial credit: reached the same goal, not on the ideal path",
    "negative": "alternative from an ideal-path user turn that earned nothing (KTO/DPO negatives)",
    "unexplored": "pruned or below the last root",
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
