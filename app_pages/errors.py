"""Metrics and error analysis (paper section 5.2): Average Reward, 100% Success Rate, bad API
use, formatting, errors per API, and the most frequent parameter errors on goal calls the agent
attempted but missed (Figure 5). The numbers are `josh metrics` / `josh errors`."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from josh_core.analysis.errors import error_report, share_words
from josh_core.analysis.metrics import metrics_report
from ui_common import pick_run, require_database, share

# Vega-Lite cuts axis labels at 180 px ("search_restauran…"): API names and "api: parameter=value"
# labels are what the charts are about, so they get room.
LABEL_LIMIT = 420

st.title("Metrics and errors")
db = require_database()
run_id = pick_run(db, key="errors-run")
scope = st.sidebar.radio("Agent turns analysed", ["ideal", "all"], key="errors-scope",
                         format_func={"ideal": "the ideal path", "all": "every turn of the tree"}.get,
                         help="JOSH trees: the conversation the search settled on, or every alternative it tried.")  # fmt: skip
top = st.sidebar.slider("Parameter errors shown", 5, 30, 10, key="errors-top")

metrics = metrics_report(db, run_id, nodes=scope)
if metrics.n == 0:
    waiting = sum(metrics.not_done.values())
    st.info("No finished conversations in scope yet." + (f" {waiting} still running or failed." if waiting else ""))
    st.stop()
report = error_report(db, run_id, nodes=scope, top=top)
rates = report.rates

cols = st.columns(4)
cols[0].metric("Conversations", metrics.n,
               help=(f"finished; left out: {', '.join(f'{n} {s}' for s, n in metrics.not_done.items())}"
                     if metrics.not_done else "finished conversations"))  # fmt: skip
cols[1].metric("Average reward", f"{metrics.average_reward:.3f}", help="mean share of goal calls reached")
cols[2].metric("100% success rate", f"{100 * metrics.success_rate:.1f}%",
               help=f"{round(metrics.success_rate * metrics.n)} of {metrics.n} conversations reached every goal")  # fmt: skip
cols[3].metric("Goal calls completed", share(metrics.goals_completed, metrics.goal_calls))
if metrics.pass_k:  # τ² environments: Pass^k over the trials of each task in scope
    st.caption("Pass^k (τ²-bench): the chance that k trials of a task all end with the gold database and the "
               "required outputs said, averaged over tasks. More trials: `josh eval --trials K` or several runs.")
    st.dataframe(pd.DataFrame(metrics.pass_k).rename(columns={"env": "environment", "pass_k": "Pass^k"}),
                 hide_index=True)
scope_words = "on their ideal paths" if scope == "ideal" else "in every turn of their trees"
st.markdown(f"**Analysed:** {metrics.n} finished conversations {scope_words}: {rates.agent_turns} agent turns, "
            f"{rates.generations} generations, {rates.calls} API calls.")  # fmt: skip
cols = st.columns(4)
cols[0].metric("Conversations with bad API use",
               share_words(rates.conversations_with_bad_api_use, rates.n, rates.calls, "API calls"),
               help="at least one call to an unknown API, with an unknown parameter or an invalid value "
                    "(n/a when no API call was analysed)")  # fmt: skip
cols[1].metric("Conversations with incorrect API format",
               share_words(rates.conversations_with_incorrect_format, rates.n, rates.generations, "generations"),
               help="at least one generation or call that could not be read (n/a when no generation was analysed)")  # fmt: skip
cols[2].metric("API calls rejected", share_words(rates.failed_calls, rates.calls, rates.calls, "API calls"))
cols[3].metric("Unreadable generations", share_words(rates.format_error_generations, rates.generations,
                                                     rates.generations, "generations"))  # fmt: skip

st.subheader("Most frequent parameter errors (attempted goal calls)")
per_api = pd.DataFrame(report.per_api)
goal_calls = int(per_api["goal_calls"].sum()) if not per_api.empty else 0
attempted = goal_calls - (int(per_api["never_attempted"].sum()) if not per_api.empty else 0)
params = pd.DataFrame(report.parameter_errors)
where = "on the ideal paths" if scope == "ideal" else "anywhere in the trees"
if goal_calls == 0:
    st.caption("No goal calls in scope.")
elif attempted == 0:
    st.caption(f"None of the {goal_calls} goal calls was attempted {where} (no call of a goal's API), so there "
               "is no parameter to compare.")  # fmt: skip
elif params.empty:
    missed = int(per_api["missed_attempted"].sum()) if not per_api.empty else 0
    st.caption(f"{attempted} goal calls attempted {where}, {missed} of them missed, none with a parameter error.")
else:
    params["share"] = params.apply(lambda r: f"{r['percent']:.1f}% ({r['count']})", axis=1)
    bars = alt.Chart(params).mark_bar().encode(
        x=alt.X("percent:Q", title="% of parameter errors"),
        y=alt.Y("label:N", sort="-x", title=None, axis=alt.Axis(labelLimit=LABEL_LIMIT)),
        color=alt.Color("error:N", title=None,
                        scale=alt.Scale(domain=["missing_parameter", "wrong_value"], range=["#ef6c00", "#1565c0"])),
        tooltip=["api", "parameter", "error", "expected", "most_common_got", "count", "percent"],
    )  # fmt: skip
    text = bars.mark_text(align="left", dx=3).encode(text="share:N", color=alt.value("#333"))
    st.altair_chart((bars + text).properties(height=28 * len(params) + 30), width="stretch")
    st.caption(f"{report.parameter_errors_total} parameter errors on {attempted} goal calls attempted {where} "
               "(the closest attempt of each missed goal); a call may carry several.")  # fmt: skip

st.subheader("Errors per API")
if not per_api.empty and (per_api["failed_calls"] + per_api["missed_attempted"]).sum() > 0:
    st.altair_chart(
        alt.Chart(per_api).transform_fold(["failed_calls", "missed_attempted"], as_=["kind", "n"])
        .mark_bar().encode(
            x=alt.X("n:Q", title="errors"), y=alt.Y("api:N", sort="-x", title=None, axis=alt.Axis(labelLimit=LABEL_LIMIT)),
            color=alt.Color("kind:N", title=None), tooltip=["api", "kind:N", "n:Q"],
        ),
        width="stretch",
    )  # fmt: skip
elif not per_api.empty:
    st.caption("No rejected calls and no attempted goal call missed.")
if not per_api.empty:
    st.dataframe(per_api, hide_index=True, width="stretch")

st.subheader("Goal completion per API and domain")
cols = st.columns(2)
rate_column = st.column_config.NumberColumn(format="percent")
cols[0].dataframe(pd.DataFrame(metrics.per_api), hide_index=True, width="stretch",
                  column_config={"completion_rate": rate_column})  # fmt: skip
cols[1].dataframe(pd.DataFrame(metrics.per_domain), hide_index=True, width="stretch",
                  column_config={"success_rate": rate_column})  # fmt: skip

boot = pd.DataFrame(metrics.bootstrap)
st.subheader("Bootstrap standard deviation against the number of conversations")
if boot.empty or boot["n"].nunique() < 2:
    st.caption(f"Needs at least two sample sizes: {metrics.n} finished conversation(s) so far.")
else:
    wide = boot.pivot_table(index="n", columns="metric", values="std")
    st.line_chart(wide, x_label="conversations sampled", y_label="std of the mean")
