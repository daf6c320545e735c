"""Tree explorer: one conversation tree (zoom, pan, click a node), the selected node in detail,
the conversation along the path to it, the scenario's goal calls, and two conversations side
by side."""

from __future__ import annotations

import streamlit as st

from josh_core.analysis.transcript import goal_rows, ideal_leaf, path_views, same_scenario, stop_word, turn_view
from josh_core.storage import reads
from ui_common import (
    conversation_html, conversation_is_played, conversation_note, fmt_reward, goals_html, load_tree, md, node_panel_html, page_link, pick_conversation,
    require_database, tree_graph, tree_graph_data, tree_labels,
)  # fmt: skip

st.title("Conversation trees")
db = require_database()
conversation = pick_conversation(db)
if conversation is None:
    st.stop()

views = {"explore": "Explore the tree", "compare": "Compare two conversations"}
linked_view = st.query_params.get("view", "explore")
if st.session_state.get("trees-view-in-url") != linked_view:  # a link chose the view
    st.session_state["trees-view"] = linked_view if linked_view in views else "explore"
view = st.segmented_control("View", list(views), format_func=views.get, key="trees-view",
                            label_visibility="collapsed") or "explore"  # fmt: skip
if view == "compare":
    st.query_params["view"] = "compare"
else:
    st.query_params.pop("view", None)
st.session_state["trees-view-in-url"] = view

tree = load_tree(db, conversation)
rows = goal_rows(conversation, tree)

if view == "explore":
    running = conversation_is_played(db, conversation)

    @st.fragment(run_every=2.0 if running else None)
    def explorer() -> None:
        # A running conversation is read again on every tick (the cache key is its step and
        # node count); a finished one comes from the cache. The header, the goals and the note
        # are drawn here too, so counts and status follow the graph.
        record = reads.get_conversation(db, conversation.id) if running else conversation
        tree = load_tree(db, record)
        rows = goal_rows(record, tree)
        cols = st.columns(5)
        cols[0].metric("Reward", fmt_reward(record.reward))
        cols[1].metric("Goal calls hit", f"{sum(r.reached for r in rows)} of {len(rows)}")
        cols[2].metric("Nodes", len(tree.nodes))
        cols[3].metric("Steps", tree.step)
        cols[4].metric("Stopped", stop_word(record.stop_reason, record.status))
        with st.expander("Scenario goal calls: " + ", ".join(("✓ " if r.reached else "✗ ") + md(r.word) for r in rows),
                         expanded=False):  # fmt: skip
            st.html(goals_html(rows))
            instructions = (record.scenario or {}).get("instructions")
            if instructions:
                st.caption("User instructions")
                st.text(instructions if isinstance(instructions, str) else "\n".join(map(str, instructions)))
        conversation_note(db, record)  # read afresh: a run stopped meanwhile says so and offers resume
        labels = tree_labels(db, tree)
        paths = {n.path: n.id for n in tree.nodes.values()}
        initial_key = f"trees-initial-{conversation.id}"
        if initial_key not in st.session_state:
            linked = st.query_params.get("node")
            leaf = ideal_leaf(tree)
            st.session_state[initial_key] = linked if linked in paths else (tree.nodes[leaf].path if leaf else None)
        stamp = (record.status, record.steps, record.node_count)
        data = tree_graph_data(tree, labels, stamp, st.session_state[initial_key])
        left, right = st.columns([3, 2], gap="small")
        with left:
            selected = tree_graph(data, key=f"graph-{conversation.id}") or data["selected"]
        if selected not in paths:
            return
        if st.query_params.get("node") != selected:
            st.query_params["node"] = selected
        node_id = paths[selected]
        with right:
            with st.container(height=640, key="node-panel"):
                st.html(node_panel_html(turn_view(tree, node_id, labels)))
        st.subheader(f"Conversation to node {selected}")
        st.caption("From the opener to the selected node, with the API calls and results of every agent turn.")
        st.html(conversation_html(path_views(tree, node_id, labels), selected=selected))

    explorer()
else:
    others = same_scenario(reads.list_conversations(db), conversation)
    everything = [c for c in reads.list_conversations(db) if c.id != conversation.id]
    choices = others + [c for c in everything if c not in others]
    if not choices:
        st.info("This database has only this conversation: nothing to compare it with.")
        st.stop()
    runs = {r.id: r for r in reads.list_runs(db)}
    linked_other = st.query_params.get("other")
    ids = [c.id for c in choices]

    def describe(c) -> str:
        run = runs.get(c.run_id)
        agent = run.agent_spec if run else ""
        same = "same scenario · " if c.scenario_id == conversation.scenario_id else ""
        return f"{same}{c.scenario_id} · {c.run_id} · {agent} · reward {fmt_reward(c.reward)}"

    by_id = {c.id: c for c in choices}
    other_id = st.selectbox("Compare with", ids, index=ids.index(linked_other) if linked_other in ids else 0,
                            format_func=lambda c: describe(by_id[c]), key="trees-other")  # fmt: skip
    st.query_params["other"] = other_id
    other = by_id[other_id]
    columns = st.columns(2, gap="medium")
    for column, record in zip(columns, (conversation, other)):
        with column:
            run = runs.get(record.run_id)
            other_tree = tree if record.id == conversation.id else load_tree(db, record)
            labels = tree_labels(db, other_tree)
            goals = goal_rows(record, other_tree)
            st.markdown(f"**{md(record.scenario_id)}** · run {md(record.run_id)}")
            st.caption("agent " + md(run.agent_spec if run else "?"))
            cols = st.columns(3)
            cols[0].metric("Reward", fmt_reward(record.reward))
            cols[1].metric("Goal calls hit", f"{sum(g.reached for g in goals)} of {len(goals)}")
            cols[2].metric("Nodes", len(other_tree.nodes))
            st.html(goals_html(goals))
            leaf = ideal_leaf(other_tree)
            st.caption("The ideal path (the conversation the search settled on).")
            st.html(conversation_html(path_views(other_tree, leaf, labels) if leaf else []))
            page_link("app_pages/trees.py", "Explore this tree", conversation=record.id)
