"""Pair annotator: at each user turn on the ideal path, the ideal agent turn (good) beside its
alternatives (bad, or partial credit). Annotators may override a label (it changes what export
writes) and leave a comment; every annotation is stored, the latest override wins."""

from __future__ import annotations

import streamlit as st

from josh_core.search.labels import LABELS, compute_labels, ideal_path
from josh_core.storage import reads, writes
from ui_common import require_database, pick_conversation

st.title("Pair annotator")
db = require_database()
conversation = pick_conversation(db)
if conversation is None:
    st.stop()
author = st.sidebar.text_input("Annotator", value=st.session_state.get("author", ""), key="author")

tree = reads.load_tree(db, conversation.id)
labels = compute_labels(tree, reads.label_overrides(db, [conversation.id]))
branch_points = [n for n in ideal_path(tree) if n.kind == "user" and len(tree.children(n.id)) > 1]
if not branch_points:
    st.info("No ideal-path user turn with alternatives in this conversation (a plain rollout, "
            "or a tree that never branched on its ideal path).")
    st.stop()

index = st.number_input("Pair", min_value=1, max_value=len(branch_points), value=1) - 1
user_node = branch_points[index]
st.markdown(f"**User turn {user_node.path}**")
st.text(user_node.text)

comments = {a.node_id: a for a in reads.list_annotations(db, conversation.id) if a.comment}


def show_turn(node, column) -> None:
    with column:
        st.markdown(f"**{labels[node.id]}** · agent turn {node.path}")
        for generation in node.generations:
            st.text(generation.text)
        if node.goals_hit:
            st.success("reached: " + ", ".join(node.goals_hit))
        if node.id in comments:
            st.caption("comment: " + comments[node.id].comment)
        with st.form(f"annotate-{node.id}"):
            label = st.selectbox("Label", LABELS, index=LABELS.index(labels[node.id]))
            comment = st.text_input("Comment")
            if st.form_submit_button("Save"):
                writes.add_annotation(
                    db, node_id=node.id, conversation_id=conversation.id,
                    label=label if label != labels[node.id] else None,
                    comment=comment or None, author=author or None,
                )
                st.rerun()


children = tree.children(user_node.id)
columns = st.columns(len(children))
for child, column in zip(sorted(children, key=lambda c: labels[c.id] != "ideal"), columns):
    show_turn(child, column)
