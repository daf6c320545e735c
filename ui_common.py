"""Helpers shared by the Streamlit pages (the only Streamlit code beside app.py and pages/).

Pages read storage through `josh_core.storage` and never write SQL; every model-generated
string shown as HTML goes through `html.escape` here.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import streamlit as st

from josh_core.paths import default_db_path
from josh_core.storage.db import Database
from josh_core.treeviz import LABEL_COLORS, LABEL_MEANINGS


def database_path() -> str:
    """The database path chosen in the sidebar (default: $JOSH_DB, set by `josh ui --db`)."""
    if "db_path" not in st.session_state:
        st.session_state["db_path"] = os.environ.get("JOSH_DB") or str(default_db_path())
    return st.sidebar.text_input("Database", key="db_path")


def database() -> Database | None:
    """The chosen database, or None (with a hint) when the file does not exist yet."""
    path = database_path()
    if not Path(path).exists():
        st.info(
            f"No database at `{path}` yet. Run a rollout first, e.g. "
            "`josh rollout --josh --split train --limit 1 --db josh.duckdb`."
        )
        return None
    return Database(path)


def legend() -> None:
    chips = " ".join(
        f'<span style="background:{fill};border:1px solid {border};border-radius:4px;'
        f'padding:1px 6px;margin-right:6px" title="{html.escape(LABEL_MEANINGS[label])}">'
        f"{html.escape(label)}</span>"
        for label, (fill, border) in LABEL_COLORS.items()
    )
    st.markdown(chips, unsafe_allow_html=True)


def escaped_block(text: str) -> None:
    """Show untrusted text verbatim (no markdown, no HTML)."""
    st.text(text)


def fmt_reward(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def pick_conversation(db: Database):
    """Sidebar pickers for a run and one of its conversations (None when there is none)."""
    from josh_core.storage import reads

    runs = reads.list_runs(db)
    if not runs:
        st.info("No runs in this database yet. Start one on the Launch page.")
        return None
    # A link may name a conversation (`?conversation=ID`): preselect its run and itself.
    linked = st.query_params.get("conversation")
    linked_run = next((c.run_id for c in reads.list_conversations(db) if c.id == linked), None) if linked else None
    run_ids = [r.id for r in runs]
    run = st.sidebar.selectbox(
        "Run", runs, index=run_ids.index(linked_run) if linked_run else len(runs) - 1,
        format_func=lambda r: f"{r.id} · {r.kind} · {r.agent_spec or ''}",
    )
    conversations = reads.list_conversations(db, run_id=run.id)
    if not conversations:
        st.info("This run has no conversations yet.")
        return None
    ids = [c.id for c in conversations]
    return st.sidebar.selectbox(
        "Conversation", conversations, index=ids.index(linked) if linked in ids else 0,
        format_func=lambda c: f"{c.scenario_id} · reward {fmt_reward(c.reward)} · {c.status}",
    )


def pick_run(db: Database, label: str = "Run", allow_all: bool = True) -> str | None:
    """A run id, or None for every run of the database."""
    from josh_core.storage import reads

    ids = [r.id for r in reads.list_runs(db)]
    options = ([None] if allow_all else []) + ids
    return st.sidebar.selectbox(label, options, index=len(options) - 1 if ids else 0,
                                format_func=lambda r: "every run" if r is None else r)
