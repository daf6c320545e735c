"""Tree explorer: one conversation tree (zoom, pan, click a node, unfold subtrees), the
selected node in detail (with its time and tokens), the conversation along the path to it,
the scenario's goal calls; a list of every conversation to filter and sort; and two
conversations side by side with their ideal paths diffed.

The explorer component holds every node's side panel: a click fills it in the browser at once,
and the explorer's fragment then reruns to put the node in the URL and redraw the conversation
to it (the tree, its labels and its drawing data come from caches keyed by the conversation's
state, so that rerun reads nothing from the database for a finished conversation)."""

from __future__ import annotations

import streamlit as st

from josh_core.analysis.conversations import ListFilter, filter_conversation_list, ideal_path_diff
from josh_core.analysis.transcript import goal_rows, ideal_leaf, path_views, same_scenario, stop_word
from josh_core.storage import reads
from josh_core.treeviz import node_name
from ui_common import (
    conversation_html, conversation_is_played, conversation_note, conversations_stamp, db_stamp, esc, fmt_reward,
    goals_html, load_tree, md, page_link, pick_conversation, require_database, runs_and_conversations, tree_graph,
    tree_labels,
)  # fmt: skip

PICKED = "trees-picked"  # conversation id -> the node the page chose: {"node", "count", "reveal"}
IN_URL = "trees-node-in-url"  # (conversation id, node path) this session last put in the URL


@st.cache_data(max_entries=32, show_spinner=False)
def _verdicts(path: str, conversation_id: str, stamp: tuple) -> dict:
    """The verdicts on one tree, read again only when the database changes (a click on a node
    must not wait for a query)."""
    from josh_core.analysis.pairs import node_verdicts
    from josh_core.storage.annotations import latest_votes
    from josh_core.storage.db import Database

    return node_verdicts(latest_votes(Database(path), [conversation_id]))


def picked_node(conversation_id: str, tree, paths: dict, page_run: bool) -> tuple[dict, bool]:
    """The node the page selects, and whether a link chose it in this run: a node named in the
    URL that this session did not put there (a link, a reload, the browser's back button), else
    the one chosen before, else the end of the ideal path. A new choice gets a new count, which
    the explorer follows (and, for a link, brings into view).

    Only a run of the whole page reads the URL as a link: a rerun of the explorer alone (a
    click, a live tick) can carry the URL as it was before the previous rerun changed it."""
    picks = st.session_state.setdefault(PICKED, {})
    pick = picks.get(conversation_id)
    count = (pick or {}).get("count", 0) + 1
    linked = st.query_params.get("node")
    if page_run and linked in paths and (conversation_id, linked) != st.session_state.get(IN_URL):
        picks[conversation_id] = {"node": linked, "count": count, "reveal": True}
        return picks[conversation_id], True
    if pick is None or pick["node"] not in paths:
        leaf = ideal_leaf(tree)
        picks[conversation_id] = {"node": tree.nodes[leaf].path if leaf else None, "count": count, "reveal": False}
    return picks[conversation_id], False


st.title("Conversation trees")
db = require_database()
conversation = pick_conversation(db)
if conversation is None:
    st.stop()

views = {"explore": "Explore the tree", "list": "Conversation list", "compare": "Compare two conversations"}
linked_view = st.query_params.get("view", "explore")
if st.session_state.get("trees-view-in-url") != linked_view:  # a link chose the view
    st.session_state["trees-view"] = linked_view if linked_view in views else "explore"
view = st.segmented_control("View", list(views), format_func=views.get, key="trees-view",
                            label_visibility="collapsed") or "explore"  # fmt: skip
if view != "explore":
    st.query_params["view"] = view
else:
    st.query_params.pop("view", None)
st.session_state["trees-view-in-url"] = view

tree = load_tree(db, conversation)
rows = goal_rows(conversation, tree)

if view == "explore":
    running = conversation_is_played(db, conversation)

    page_run = {"now": True}  # the explorer's first run in this page run; its reruns see False

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
        verdicts = _verdicts(str(db.path), tree.conversation_id, db_stamp(db))
        paths = {n.path: n.id for n in tree.nodes.values()}
        pick, linked = picked_node(conversation.id, tree, paths, page_run["now"])
        page_run["now"] = False
        clicked = tree_graph(tree, (record.status, record.steps, record.node_count), verdicts, pick,
                             key=f"graph-{conversation.id}")  # fmt: skip
        # A link wins over what the explorer held before it (the explorer follows it and says so).
        selected = pick["node"] if linked else (clicked or pick["node"])
        if selected not in paths:
            return
        if st.query_params.get("node") != selected:
            st.query_params["node"] = selected
        st.session_state[IN_URL] = (conversation.id, selected)
        node_id = paths[selected]
        labels = tree_labels(db, tree)
        st.subheader(f"Conversation to {node_name(tree, tree.nodes[node_id])}")
        st.caption(f"From the opener to the selected node ({md(selected)}), with the API calls and results of "
                   "every agent turn. Colours are the search's labels; a blue ✎ badge is a person's verdict.")  # fmt: skip
        st.html(conversation_html(path_views(tree, node_id, labels), selected=selected, verdicts=verdicts))

    explorer()
elif view == "list":

    @st.cache_data(max_entries=8, show_spinner=False)
    def _listing(path: str, stamp: tuple):
        from josh_core.storage.db import Database

        return reads.conversation_list_frame(Database(path))

    frame = _listing(str(db.path), conversations_stamp(db))
    st.caption("Every conversation of the database. Filter here, sort by clicking a column, pick a row to "
               "open its tree. APIs and errors are those of every turn of the tree.")  # fmt: skip
    cols = st.columns(3)
    runs_chosen = cols[0].multiselect("Run", sorted(frame["run_id"].unique()), key="list-runs")
    envs_chosen = cols[1].multiselect("Environment", sorted(frame["env"].unique()), key="list-envs")
    outcome = cols[2].segmented_control("Outcome", ["every goal", "not every goal"], key="list-success")
    cols = st.columns(3)
    all_apis = sorted({a for names in frame["apis"] for a in names})
    all_kinds = sorted({k for kinds in frame["error_kinds"] for k in kinds})
    apis_chosen = cols[0].multiselect("Called an API", all_apis, key="list-apis")
    kinds_chosen = cols[1].multiselect("Had an error of kind", all_kinds, key="list-kinds")
    low, high = cols[2].slider("Reward", 0.0, 1.0, (0.0, 1.0), step=0.05, key="list-reward")
    keep = ListFilter(
        runs=runs_chosen, envs=envs_chosen, apis=apis_chosen, error_kinds=kinds_chosen,
        success=None if outcome is None else outcome == "every goal",
        min_reward=low if low > 0 else None, max_reward=high if high < 1 else None,
    )  # fmt: skip
    shown = filter_conversation_list(frame, keep).copy()
    shown["apis"] = shown["apis"].map(lambda names: ", ".join(names))
    shown["error_kinds"] = shown["error_kinds"].map(lambda kinds: ", ".join(kinds))
    st.caption(f"{len(shown)} of {len(frame)} conversations")
    picked = st.dataframe(
        shown.drop(columns=["id"]), hide_index=True, width="stretch", on_select="rerun",
        selection_mode="single-row", key="list-table",
        column_config={"reward": st.column_config.NumberColumn(format="%.2f"),
                       "seconds": st.column_config.NumberColumn(format="%.1f s"),
                       "error_kinds": "error kinds", "agent_spec": "agent", "node_count": "nodes"},
    )  # fmt: skip
    rows = picked.selection.rows if picked and picked.selection else []
    if rows:
        chosen = shown.iloc[rows[0]]["id"]
        page_link("app_pages/trees.py", f"Open the tree of {shown.iloc[rows[0]]['scenario_id']} "
                  f"({shown.iloc[rows[0]]['run_id']})", conversation=chosen)  # fmt: skip
else:
    all_runs, all_conversations = runs_and_conversations(db)
    others = same_scenario(all_conversations, conversation)
    everything = [c for c in all_conversations if c.id != conversation.id]
    choices = others + [c for c in everything if c not in others]
    if not choices:
        st.info("This database has only this conversation: nothing to compare it with.")
        st.stop()
    runs = {r.id: r for r in all_runs}
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
    st.subheader("Where the two ideal paths differ")
    diffs = ideal_path_diff(tree, load_tree(db, other))
    differing = [d for d in diffs if not d.same]
    st.caption(f"{len(diffs) - len(differing)} of {len(diffs)} turns the same; red: only in this conversation, "
               "green: only in the other (API calls and speech, turn by turn).")  # fmt: skip
    tags = {"same": "{}", "del": "<del>{}</del>", "add": "<ins>{}</ins>"}
    rows_html = [
        f'<tr><td>{d.position}</td><td>{esc(d.kind)}</td><td><div class="jw-diff">'
        + "".join(tags[op].format(esc(text)) for op, text in d.runs) + "</div></td></tr>"
        for d in diffs if not d.same
    ]
    if rows_html:
        st.html('<table class="jw-table"><tr><th>turn</th><th>who</th><th>this → other</th></tr>'
                + "".join(rows_html) + "</table>")  # fmt: skip
    else:
        st.caption("The two ideal paths are the same word for word.")
