"""Trainings (`josh train`): every trainer run stored in the database, its loss curve from the
metrics it logged (followed live while it runs), its settings, and a link to evaluate the
adapter it wrote."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from josh_core.storage.trainings import list_trainings
from ui_common import md, page_link, require_database

st.title("Trainings")
db = require_database()


def comparison_chart(rows: list[dict]):
    """Left: base and trained means with their 95% intervals, per metric. Right: the paired
    difference (trained - base) with its interval against zero: the question a round answers is
    whether that interval lies above zero."""
    import altair as alt

    sides = pd.DataFrame([
        {"metric": r["metric"], "agent": side, "mean": r[f"{side}_mean"], "low": r[f"{side}_low"],
         "high": r[f"{side}_high"]}
        for r in rows for side in ("base", "trained")
    ])  # fmt: skip
    y = alt.Y("metric:N", title=None)
    height = 44 * len(rows)  # both panels the same height, so a metric's rows line up
    offset = alt.YOffset("agent:N")
    color = alt.Color("agent:N", scale=alt.Scale(domain=["base", "trained"], range=["#9e9e9e", "#2e7d32"]))
    means = alt.Chart(sides).encode(y=y, yOffset=offset, color=color)
    left = (means.mark_rule().encode(x=alt.X("low:Q", title="mean, 95% interval"), x2="high:Q")
            + means.mark_point(filled=True).encode(x="mean:Q")).properties(width=260, height=height)
    difference = pd.DataFrame([{"metric": r["metric"], "mean": r["difference_mean"], "low": r["difference_low"],
                                "high": r["difference_high"]} for r in rows])  # fmt: skip
    diff = alt.Chart(difference).encode(y=y)
    zero = alt.Chart(pd.DataFrame({"x": [0.0]})).mark_rule(strokeDash=[4, 4], color="#555").encode(x="x:Q")
    right = (diff.mark_rule(color="#1565c0").encode(x=alt.X("low:Q", title="trained - base, 95% interval"), x2="high:Q")
             + diff.mark_point(filled=True, color="#1565c0").encode(x="mean:Q") + zero).properties(width=260, height=height)
    return alt.hconcat(left, right)


def experiments_section() -> None:
    """`josh selftrain` experiments stored here: rounds, base vs trained with intervals, stages."""
    from josh_core.storage.stages import list_experiments
    from josh_core.train.selftrain import comparison_rows, load_result

    names = list_experiments(db)
    if not names:
        return
    st.subheader("Self-training experiments")
    name = st.selectbox("Experiment", names, index=len(names) - 1, key="experiment-pick")
    result = load_result(db.path, name)
    rounds = pd.DataFrame([
        {"round": r.round, "kind": r.kind or "start", "agent": r.agent, "JOSH trees": r.josh_conversations,
         "trees with a goal": r.trees_with_goal, "examples": r.examples,
         "eval conversations": r.metrics.get("conversations"), "Average Reward": r.metrics.get("average_reward"),
         "successes": r.metrics.get("successes")}
        for r in result.rounds
    ])  # fmt: skip
    if rounds.empty:
        st.caption("No evaluation has finished yet.")
    else:
        st.dataframe(rounds, hide_index=True, width="stretch")
    for comparison in result.comparisons:
        st.caption(f"Round {comparison['round']} {comparison['kind']} vs the starting agent on "
                   f"{comparison['n']} paired scenarios: means with bootstrap 95% intervals")
        rows = comparison_rows(comparison)
        st.altair_chart(comparison_chart(rows), width="stretch")
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    with st.expander("Stages"):
        st.dataframe(pd.DataFrame([{k: v for k, v in stage.items() if k != "result"} for stage in result.stages]),
                     hide_index=True, width="stretch")


experiments_section()
trainings = list_trainings(db)
if not trainings:
    st.info("No trainings in this database yet. Export data on the Export page, then run "
            "`josh train --kind sft --data FILE.jsonl --base embedded --out DIR --db " + md(str(db.path)) + "`.")  # fmt: skip
    st.stop()

table = pd.DataFrame([
    {"id": t.id, "kind": t.kind, "status": t.status, "examples": t.examples, "final loss": (t.losses or [None])[-1],
     "seconds": t.seconds, "base": t.base, "adapter": t.adapter_path, "data": t.data_path, "started": t.created_at}
    for t in reversed(trainings)
])  # fmt: skip
st.dataframe(table, hide_index=True, width="stretch",
             column_config={"final loss": st.column_config.NumberColumn(format="%.4f"),
                            "seconds": st.column_config.NumberColumn(format="%.0f")})  # fmt: skip

ids = [t.id for t in reversed(trainings)]
linked = st.query_params.get("training")
chosen = st.selectbox("Training", ids, index=ids.index(linked) if linked in ids else 0, key="training-pick")
st.query_params["training"] = chosen


@st.fragment(run_every=3)
def show() -> None:
    from josh_core.storage.trainings import get_training

    training = get_training(db, chosen)
    cols = st.columns(4)
    cols[0].metric("Status", training.status)
    cols[1].metric("Examples", training.examples)
    cols[2].metric("Steps logged", len(training.metrics))
    cols[3].metric("Final loss", f"{training.losses[-1]:.4f}" if training.losses else "–")
    if training.status == "failed":
        st.error("The training failed: " + (training.error or "no message"))
    metrics = pd.DataFrame(training.metrics)
    if not metrics.empty and "loss" in metrics:
        x = "step" if "step" in metrics else None
        curves = [c for c in ("loss", "eval_loss") if c in metrics]
        st.line_chart(metrics.dropna(subset=["loss"]) if x is None else metrics.set_index(x)[curves],
                      x_label=x or "log entry", y_label="loss")  # fmt: skip
    else:
        st.caption("No loss logged yet.")
    base = training.base.split("@", 1)[0]
    page_link("app_pages/launch.py", f"Evaluate the adapter: launch {base}@{training.adapter_path}",
              agent=f"{base}@{training.adapter_path}")  # fmt: skip
    with st.expander("Settings"):
        st.json(training.config)


show()
