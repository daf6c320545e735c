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
        st.dataframe(pd.DataFrame(comparison_rows(comparison)), hide_index=True, width="stretch")
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
