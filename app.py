"""JOSH Workbench app (Streamlit). `josh ui --db PATH` starts it; the pages live in app_pages/.

Not in pages/: Streamlit runs the first session after start in its old folder-based mode when
a pages/ folder sits beside the main script, which would skip this frame.

This script is the frame every page runs inside: it draws the database field once (so the
choice survives moving between pages, and lives in the URL as `?db=`), then runs the page.
"""

from __future__ import annotations

import streamlit as st

import ui_common

# A local icon: a Material icon or an emoji as the page icon is fetched from a CDN at run time.
st.set_page_config(page_title="JOSH Workbench", page_icon=str(ui_common.ASSETS / "icon.png"), layout="wide")

PAGES = [
    st.Page("app_pages/overview.py", title="Overview", icon=":material/home:", default=True),
    st.Page("app_pages/trees.py", title="Trees", icon=":material/account_tree:"),
    st.Page("app_pages/pairs.py", title="Pairs", icon=":material/rule:"),
    st.Page("app_pages/export.py", title="Export", icon=":material/download:"),
    st.Page("app_pages/launch.py", title="Launch", icon=":material/play_arrow:"),
    st.Page("app_pages/errors.py", title="Errors", icon=":material/bar_chart:"),
    st.Page("app_pages/training.py", title="Training", icon=":material/model_training:"),
]
navigation = st.navigation(PAGES)
ui_common.frame()
navigation.run()
