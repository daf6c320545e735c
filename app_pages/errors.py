"""Error analysis (paper section 5.2): bad API use, formatting, errors per API, and the most
frequent parameter errors on goal APIs the agent attempted but missed (Figure 5)."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from josh_core.analysis.errors import error_report
from josh_core.analysis.metrics import metrics_report
from ui_common import require_database, pick_run

st.title("Metrics and errors")
db = require_database()
run_id = pick_run(db)
scope = st.sidebar.radio("Nodes analysed", ["ideal", "all"], help="JOSH trees: the ideal path, or every node.")
top = st.sidebar.slider("Parameter errors shown", 5, 30, 10)

metrics = metrics_report(db, run_id, nodes=scope)
if metrics.n == 0:
    st.info("No finished conversations in scope yet.")
    st.stop()
report = error_report(db, run_id, nodes=scope, top=top)

cols = st.columns(4)
cols[0].metric("Conversations", metrics.n)
cols[1].metric("Average reward", f"{metrics.average_reward:.3f}")
cols[2].metric("100% success rate", f"{metrics.success_rate:.3f}")
cols[3].metric("Goal calls completed", f"{metrics.goals_completed}/{metrics.goal_calls}")
cols = st.columns(2)
cols[0].metric("Conversations with bad API use", f"{report.rates.bad_api_use:.2f}")
cols[1].metric("Conversations with incorrect API format", f"{report.rates.incorrect_format:.2f}")

st.subheader("Most frequent parameter errors (attempted goal calls)")
params = pd.DataFrame(report.parameter_errors)
if params.empty:
    st.caption("No parameter errors: every attempted goal call was made correctly.")
else:
    params["share"] = params.apply(lambda r: f"{r['percent']:.1f}% ({r['count']})", axis=1)
    bars = alt.Chart(params).mark_bar().encode(
        x=alt.X("percent:Q", title="% of parameter errors"),
        y=alt.Y("label:N", sort="-x", title=None),
        color=alt.Color("error:N", title=None,
                        scale=alt.Scale(domain=["missing_parameter", "wrong_value"],
                                        range=["#ef6c00", "#1565c0"])),
        tooltip=["api", "parameter", "error", "expected", "most_common_got", "count", "percent"],
    )
    text = bars.mark_text(align="left", dx=3).encode(text="share:N", color=alt.value("#333"))
    st.altair_chart((bars + text).properties(height=28 * len(params) + 30), width="stretch")
    st.caption(f"{report.parameter_errors_total} parameter errors in all; a call may carry several.")

st.subheader("Errors per API")
per_api = pd.DataFrame(report.per_api)
if not per_api.empty and (per_api["failed_calls"] + per_api["missed_attempted"]).sum() > 0:
    st.altair_chart(
        alt.Chart(per_api).transform_fold(["failed_calls", "missed_attempted"], as_=["kind", "n"])
        .mark_bar().encode(
            x=alt.X("n:Q", title="errors"), y=alt.Y("api:N", sort="-x", title=None),
            color=alt.Color("kind:N", title=None), tooltip=["api", "kind:N", "n:Q"],
        ),
        width="stretch",
    )
if not per_api.empty:
    st.dataframe(per_api, hide_index=True, width="stretch")

st.subheader("Goal completion per API and domain")
cols = st.columns(2)
cols[0].dataframe(pd.DataFrame(metrics.per_api), hide_index=True, width="stretch")
cols[1].dataframe(pd.DataFrame(metrics.per_domain), hide_index=True, width="stretch")

if metrics.bootstrap:
    st.subheader("Bootstrap standard deviation against the number of conversations")
    boot = pd.DataFrame(metrics.bootstrap)
    value_columns = [c for c in boot.columns if c != "n" and c.endswith("std")]
    if value_columns:
        st.line_chart(boot.set_index("n")[value_columns])
