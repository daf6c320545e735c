"""Overview: runs and conversations of the database, with their rewards."""

from __future__ import annotations

import streamlit as st

from josh_core.storage import reads
from ui_common import require_database, legend

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
st.dataframe(
    runs,
    hide_index=True,
    width="stretch",
    column_config={
        "average_reward": st.column_config.NumberColumn("avg reward", format="%.2f"),
        "success_rate": st.column_config.NumberColumn("100% success", format="%.2f"),
    },
)
st.subheader("Conversations")
st.dataframe(reads.conversations_frame(db), hide_index=True, width="stretch")
st.subheader("Tree colours")
legend()
