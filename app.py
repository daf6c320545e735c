"""JOSH Workbench app (Streamlit). `josh ui --db PATH` starts it; pages live in pages/."""

from __future__ import annotations

import streamlit as st

st.set_page_config(page_title="JOSH Workbench", layout="wide")

navigation = st.navigation(
    [
        st.Page("pages/overview.py", title="Overview", icon=":material/home:", default=True),
        st.Page("pages/trees.py", title="Trees", icon=":material/account_tree:"),
        st.Page("pages/launch.py", title="Launch", icon=":material/play_arrow:"),
        st.Page("pages/errors.py", title="Errors", icon=":material/bar_chart:"),
        st.Page("pages/pairs.py", title="Pairs", icon=":material/rule:"),
        st.Page("pages/export.py", title="Export", icon=":material/download:"),
    ]
)
navigation.run()
