"""Overview: the runs of the database with their rewards, and every conversation with a link to
its tree."""

from __future__ import annotations

import streamlit as st

from josh_core.analysis.transcript import stop_word
from josh_core.storage import reads
from ui_common import known, legend, page_url, require_database, stopped_runs

st.title("JOSH Workbench")
st.caption(
    "Turn-level beam search (JOSH) over ToolWOZ conversations: every tree lands in DuckDB; "
    "the ideal path becomes SFT data, its alternatives KTO/DPO pairs."
)

db = require_database()
runs = reads.runs_frame(db)
if runs.empty:
    st.info("This database has no runs yet. Start one on the Launch page.")
    st.stop()

st.subheader("Runs")
runs["open"] = [page_url("errors", run=r) for r in runs["id"]]
st.dataframe(
    runs,
    hide_index=True,
    width="stretch",
    column_order=["id", "kind", "status", "done", "conversations", "average_reward", "success_rate", "open",
                  "agent_spec", "user_spec", "agent_name", "seed", "created_at"],  # fmt: skip
    column_config={
        "id": "run",
        "done": st.column_config.NumberColumn("finished", help="conversations finished"),
        "average_reward": st.column_config.NumberColumn("avg reward", format="%.3f"),
        "success_rate": st.column_config.NumberColumn("100% success", format="percent"),
        "open": st.column_config.LinkColumn("metrics", display_text="metrics"),
        "agent_spec": "agent",
        "user_spec": "user",
    },
)

stopped_runs(db, runs)

st.subheader("Conversations")
conversations = reads.conversations_frame(db)
conversations["tree"] = [page_url("trees", conversation=c) for c in conversations["id"]]
# A run being written or stopped has pending conversations: no stop reason, no goals yet (NA).
conversations["stopped"] = [stop_word(known(r), s) for r, s in zip(conversations["stop_reason"], conversations["status"])]
conversations["goals"] = ["–" if known(g) is None else f"{int(known(r) or 0)} of {int(g)}"
                          for r, g in zip(conversations["n_reached"], conversations["n_goals"])]  # fmt: skip
st.dataframe(
    conversations,
    hide_index=True,
    width="stretch",
    column_order=["tree", "scenario_id", "reward", "goals", "success", "status", "stopped", "node_count", "steps",
                  "run_id", "seconds", "error"],  # fmt: skip
    column_config={
        "tree": st.column_config.LinkColumn("tree", display_text="open tree", help="the tree explorer (new tab)"),
        "scenario_id": "scenario",
        "reward": st.column_config.NumberColumn("reward", format="%.2f"),
        "node_count": "nodes",
        "run_id": "run",
        "seconds": st.column_config.NumberColumn("seconds", format="%.1f"),
    },
)
st.subheader("Tree colours")
legend()
