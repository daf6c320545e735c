"""Tree explorer: one conversation tree, coloured by derived labels, and any node in detail."""

from __future__ import annotations

import json

import streamlit as st

from josh_core.search.labels import compute_labels, ideal_path
from josh_core.storage import reads
from josh_core.treeviz import tree_to_dot
from ui_common import database, escaped_block, fmt_reward, legend, pick_conversation

st.title("Conversation trees")
db = database()
if db is None:
    st.stop()
conversation = pick_conversation(db)
if conversation is None:
    st.stop()

tree = reads.load_tree(db, conversation.id)
labels = compute_labels(tree, reads.label_overrides(db, [conversation.id]))

cols = st.columns(5)
cols[0].metric("Reward", fmt_reward(conversation.reward))
cols[1].metric("Goals reached", f"{len(conversation.goals_reached)}/{len(conversation.goals)}")
cols[2].metric("Nodes", len(tree.nodes))
cols[3].metric("Steps", tree.step)
cols[4].metric("Stop", conversation.stop_reason or conversation.status)
legend()

ordered = sorted(tree.nodes.values(), key=lambda n: n.path_key())
paths = [n.path for n in ordered]
linked_node = st.query_params.get("node")  # `?conversation=ID&node=PATH` links to one node
selected = st.sidebar.selectbox(
    "Node", [n.id for n in ordered], index=paths.index(linked_node) if linked_node in paths else 0,
    format_func=lambda nid: f"{tree.nodes[nid].path} · {tree.nodes[nid].kind} · {labels[nid]}",
)
st.graphviz_chart(tree_to_dot(tree, labels, selected=selected), width="stretch")

node = tree.nodes[selected]
st.subheader(f"Node {node.path} · {node.kind} · {labels[selected]}")
if node.kind == "user":
    escaped_block(node.text)
else:
    for i, generation in enumerate(node.generations):
        st.markdown(f"**Generation {i + 1}** · `{generation.action}`")
        escaped_block(generation.text)
        if generation.format_error:
            st.caption(f"format error: {generation.format_error}")
    for record in node.api_calls:
        name = record.call.name if record.call else "unparseable call"
        status = "ok" if record.result.ok else record.result.error_kind
        with st.expander(f"API call · {name} · {status}"):
            st.json(record.call.model_dump() if record.call else {"raw": record.raw})
            st.json(json.loads(json.dumps(record.result.model_dump(), default=str)))
    if node.goals_hit:
        st.success("Goals reached here: " + ", ".join(node.goals_hit))

with st.expander("Ideal path transcript"):
    for step in ideal_path(tree):
        st.markdown(f"**{step.kind}** · {step.path}")
        escaped_block(step.text or "∅")
with st.expander("Scenario"):
    st.json(conversation.scenario or {})
