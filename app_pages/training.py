"""Trainings: train an adapter from the browser (`josh train` on an export of the chosen runs,
or a `josh selftrain` experiment) as a background process followed live, every trainer run
stored in the database with its loss curve (and rewards, for KTO / DPO), its settings, and the
adapter offered to Launch and to compare."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import streamlit as st

from josh_core.analysis.training_log import axis_range, split_log
from josh_core.extract import ExportOptions
from josh_core.launch import (
    changed_settings, export_training_data, selftrain_args, selftrain_defaults, selftrain_problem, start_josh_process,
    stop_process, train_args, training_for_adapter, training_settings, write_train_config,
)  # fmt: skip
from josh_core.storage import reads
from josh_core.storage.trainings import finish_training, list_trainings
from josh_core.train.kinds import KINDS
from ui_common import kept, md, page_link, require_database, show_command

st.title("Trainings")
db = require_database()
JOB = "train-job"  # the training this session launched (process, log, adapter folder)
STOP_GRACE_S = 20  # after Ctrl-C, how long a training gets to record itself before SIGTERM


def adapter_agent(base: str, adapter: str) -> str:
    """The agent SPEC that plays an adapter trained from `base` (embedded@DIR, hf:PATH@DIR)."""
    return f"{base.split('@', 1)[0]}@{adapter}"


def loss_chart(frame: pd.DataFrame, columns: list[str], title: str):
    """Lines over optimiser steps; the y axis spans the data (with a margin), not a fixed 0-1."""
    import altair as alt

    long = frame.melt(id_vars=["step"], value_vars=columns, var_name="series", value_name="value").dropna()
    domain = axis_range(long["value"].tolist())
    y = alt.Y("value:Q", title=title, scale=alt.Scale(domain=list(domain), zero=False, nice=False) if domain else alt.Undefined)
    chart = alt.Chart(long).encode(x=alt.X("step:Q", title="optimiser step", axis=alt.Axis(tickMinStep=1)), y=y,
                                   color=alt.Color("series:N", title=None))  # fmt: skip
    return (chart.mark_line() + chart.mark_point(filled=True)).properties(height=260)


def show_curves(metrics: list[dict]) -> None:
    """Loss (and rewards where logged) per step; the end-of-run summary apart from the steps."""
    log = split_log(metrics)
    steps = pd.DataFrame(log.steps)
    if steps.empty or "loss" not in steps or "step" not in steps:
        st.caption("No loss logged yet.")
    else:
        st.altair_chart(loss_chart(steps, ["loss"], "loss"), width="stretch")
        rewards = log.reward_columns()
        if rewards:
            st.altair_chart(loss_chart(steps, rewards, "reward"), width="stretch")
    if log.summary:
        summary = log.summary
        parts = []
        if summary.get("train_loss") is not None:
            parts.append(f"mean loss over the run {summary['train_loss']:.4f}")
        if summary.get("train_runtime") is not None:
            parts.append(f"trainer time {summary['train_runtime']:.1f} s")
        st.caption("End of run (the trainer's summary, not a step): " + (" · ".join(parts) or "no numbers"))


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
         "trees with a goal": r.trees_with_goal, "plain conversations": r.plain_conversations,
         "control successes": r.plain_successes, "agent turns sampled": r.agent_turns, "examples": r.examples,
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
    for refused in result.unpaired:
        st.warning(md(f"Round {refused['round']} {refused['kind']} is not compared with the starting agent: "
                      f"{refused['reason']}"))
    with st.expander("Stages"):
        st.dataframe(pd.DataFrame([{k: v for k, v in stage.items() if k != "result"} for stage in result.stages]),
                     hide_index=True, width="stretch")



# -- train from the browser ----------------------------------------------------------------------

KIND_WORDS = {**{k.name: k.title for k in KINDS.values()}, "selftrain": "josh selftrain experiment"}


def _number_input(column, setting, kind: str):
    """A number field for a setting, its default from the trainer's config class."""
    default = setting.default
    key = kept(f"train-{kind}-{setting.name}", default)
    label = setting.name.replace("_", " ")
    help_text = f"{setting.help} Default {default!r}, from {setting.source}."
    if isinstance(default, bool) or default is None:
        return column.text_input(label, key=key, help=help_text)
    if isinstance(default, int):
        return column.number_input(label, key=key, step=1, help=help_text)
    return column.number_input(label, key=key, format="%g", step=None, help=help_text)


def launch_form() -> None:
    runs = reads.list_runs(db)
    trainings = [t for t in list_trainings(db) if t.status == "done"]
    kind = st.radio("Kind", list(KIND_WORDS), format_func=KIND_WORDS.get, horizontal=True, key=kept("train-kind", "sft"),
                    help="; ".join(f"{k.title}: {k.summary}" for k in KINDS.values())
                         + "; an experiment plays its own JOSH rollouts, trains and evaluates in rounds.")  # fmt: skip
    bases = ["embedded"] + [adapter_agent(t.base, t.adapter_path) for t in reversed(trainings)]
    base_key = kept("train-base", "embedded")
    if st.session_state[base_key] not in bases:
        st.session_state[base_key] = "embedded"
    if kind == "selftrain":
        selftrain_form(bases, base_key)
        return
    if KINDS[kind].online:
        online_form(kind, bases, base_key)
        return
    if not runs:
        st.info("This database has no runs to train on yet: play JOSH rollouts on the Launch page first.")
        return
    with st.form("train-form"):
        st.markdown("**Data**: an export of the chosen runs, with the Export page's filters")
        run_ids = st.multiselect("Runs", [r.id for r in runs], key=kept("train-runs", []),
                                 placeholder="every run", help="None chosen: every run of the database.")  # fmt: skip
        cols = st.columns(3)
        only_full = cols[0].checkbox("Only conversations with reward 1.0", key=kept("train-full", True),
                                     help="The paper trains on conversations that reached every goal.")  # fmt: skip
        drop_errors = cols[1].checkbox("Drop turns with errors", key=kept("train-errors", True))
        use_annotations = cols[2].checkbox("Follow the annotators' labels", key=kept("train-annotations", True),
                                           help="Pairs page verdicts: good = positive, bad = negative, "
                                                "don't use = left out.")  # fmt: skip
        st.markdown("**Model**")
        base = st.selectbox("Base or adapter to train further", bases, key=base_key,
                            help="embedded: the embedded model; embedded@DIR: an adapter trained here, trained further.")
        st.markdown("**Hyper-parameters** (defaults: `josh train`'s, from the kind's config class)")
        settings = training_settings(kind)
        values = {}
        for row in range(0, len(settings), 5):
            cols = st.columns(5)
            for column, setting in zip(cols, settings[row : row + 5]):
                values[setting.name] = _number_input(column, setting, kind)
        submitted = st.form_submit_button("Train", type="primary")
    if not submitted:
        return
    job = st.session_state.get(JOB)
    if job and job["process"].poll() is None:
        st.session_state[JOB]["refused"] = True  # shown beside the running job, gone once it ends
        return
    options = ExportOptions(kind=kind, format="trl", min_reward=1.0 if only_full else None, drop_errors=drop_errors,
                            use_annotations=use_annotations)  # fmt: skip
    folder = Path(db.path).resolve().parent
    name = f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    data = folder / "exports" / f"{name}.jsonl"
    data.parent.mkdir(parents=True, exist_ok=True)
    with st.spinner("Exporting the training data…"):
        rows = export_training_data(db, options, list(run_ids), data)
    if rows == 0:
        st.error(f"The export gave no {kind.upper()} rows: nothing to train on. The Export page shows what the "
                 "filters leave out.")
        return
    config = write_train_config(folder / "logs" / f"train-{name}.json", changed_settings(kind, values))
    out = folder / "adapters" / name
    args = train_args(kind, data, base, out, db.path, config)
    log = folder / "logs" / f"train-{name}.log"
    process = start_josh_process(args, log)
    st.session_state[JOB] = {"what": "train", "kind": kind, "process": process, "pid": process.pid, "args": args,
                             "log": str(log), "out": str(out), "base": base, "rows": rows, "started": time.time(),
                             "db": str(db.path),
                             "stopped": None}  # fmt: skip


def online_form(kind: str, bases: list[str], base_key: str) -> None:
    """An online kind (GRPO): no data to pick; it plays the chosen environment's scenarios."""
    from josh_core.envs import names

    with st.form("online-form"):
        st.markdown(f"**{KIND_WORDS[kind]}**: {KINDS[kind].summary}. Every episode is stored as a run of this "
                    "database, tagged with the training and its step.")
        cols = st.columns(2)
        env = cols[0].selectbox("Environment", names(), key=kept(f"train-{kind}-env", "toolwoz"))
        base = cols[1].selectbox("Base or adapter to train further", bases, key=base_key)
        st.markdown("**Hyper-parameters** (defaults: `josh train`'s, from the kind's config class)")
        settings = training_settings(kind)
        values = {}
        for row in range(0, len(settings), 5):
            cols = st.columns(5)
            for column, setting in zip(cols, settings[row : row + 5]):
                values[setting.name] = _number_input(column, setting, kind)
        submitted = st.form_submit_button("Train", type="primary")
    if not submitted:
        return
    job = st.session_state.get(JOB)
    if job and job["process"].poll() is None:
        st.session_state[JOB]["refused"] = True
        return
    folder = Path(db.path).resolve().parent
    name = f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    config = write_train_config(folder / "logs" / f"train-{name}.json", {"env": env, **changed_settings(kind, values)})
    out = folder / "adapters" / name
    args = train_args(kind, None, base, out, db.path, config)
    log = folder / "logs" / f"train-{name}.log"
    process = start_josh_process(args, log)
    st.session_state[JOB] = {"what": "train", "kind": kind, "process": process, "pid": process.pid, "args": args,
                             "log": str(log), "out": str(out), "base": base, "started": time.time(),
                             "db": str(db.path), "stopped": None}  # fmt: skip


def episodes_section(training) -> None:
    """What an online training's policy did at each step: the step's run (every group's
    conversations), their rewards, and a link to each conversation's tree."""
    from josh_core.train.online import training_runs

    runs = training_runs(db, training.id)
    if not runs:
        st.caption("No episodes stored yet.")
        return
    steps = sorted({r["step"] for r in runs if r["step"] is not None})
    step = st.select_slider("Step", steps, value=steps[-1], key=f"episodes-step-{training.id}") if len(steps) > 1 else steps[0]
    rows = []
    for run in (r for r in runs if r["step"] == step):
        for c in reads.list_conversations(db, run_id=run["run_id"]):
            rows.append({"run": run["run_id"], "micro-batch": run["micro"], "position": c.position,
                         "scenario": c.scenario_id, "status": c.status, "reward": c.reward, "success": c.success,
                         "agent turns": c.steps, "conversation": c.id})
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    for run in (r for r in runs if r["step"] == step):
        page_link("app_pages/trees.py", f"Step {step}: the trees of run {run['run_id']}", run=run["run_id"],
                  view="list")


def selftrain_form(bases: list[str], base_key: str) -> None:
    defaults = selftrain_defaults()
    with st.form("selftrain-form"):
        cols = st.columns([2, 2, 2, 1])
        experiment = cols[0].text_input("Experiment", key=kept("st-experiment", defaults["experiment"]),
                                        help="Stages are stored under this name; the same name resumes it.")
        base = cols[1].selectbox("Starting agent", bases, key=base_key)
        kinds = cols[2].multiselect("Training kinds", list(KINDS), key=kept("st-kinds", defaults["kinds"]))
        rounds = cols[3].number_input("Rounds", min_value=1, key=kept("st-rounds", defaults["rounds"]))
        cols = st.columns(6)
        train_limit = cols[0].number_input("JOSH conversations", min_value=1, key=kept("st-train", defaults["train_limit"]))
        eval_limit = cols[1].number_input("Eval conversations", min_value=1, key=kept("st-eval", defaults["eval_limit"]))
        beam = cols[2].number_input("Max beam", min_value=1, key=kept("st-beam", defaults["beam"]))
        branching = cols[3].number_input("Branching", min_value=1, key=kept("st-branching", defaults["branching"]))
        max_turns = cols[4].number_input("Max turns", min_value=1, key=kept("st-turns", defaults["max_turns"]))
        max_steps = cols[5].number_input("Max steps (0: epochs)", min_value=0, key=kept("st-steps", 0),
                                         help="A cap on optimiser steps per training (smoke runs).")
        filter_ = st.radio("Filter", ["full", "partial"], horizontal=True, key=kept("st-filter", defaults["filter"]),
                           help="full: 100% conversations only; partial: every ideal path up to its last goal.")
        st.caption("Defaults: `josh selftrain`'s (SelftrainConfig in josh_core/train/selftrain.py). Rollouts and "
                   "evaluations play the model: minutes per conversation on CPU.")
        submitted = st.form_submit_button("Start the experiment", type="primary")
    if not submitted:
        return
    job = st.session_state.get(JOB)
    if job and job["process"].poll() is None:
        st.session_state[JOB]["refused"] = True
        return
    settings = dict(experiment=experiment.strip(), base=base, kinds=kinds, rounds=int(rounds),
                    train_limit=int(train_limit), eval_limit=int(eval_limit), beam=int(beam), branching=int(branching),
                    max_turns=int(max_turns), filter=filter_)  # fmt: skip
    problem = selftrain_problem(**settings)
    if problem:  # the command would refuse them: say why here, start nothing
        st.error(md(f"Not started: {problem}"))
        return
    folder = Path(db.path).resolve().parent
    args = selftrain_args(db.path, **settings, max_steps=int(max_steps) or None)
    log = folder / "logs" / f"selftrain-{time.strftime('%Y%m%d-%H%M%S')}.log"
    process = start_josh_process(args, log)
    st.session_state[JOB] = {"what": "selftrain", "kind": "selftrain", "process": process, "pid": process.pid,
                             "args": args, "log": str(log), "experiment": experiment.strip(), "base": base,
                             "started": time.time(), "stopped": None, "db": str(db.path)}  # fmt: skip


def _stop_job() -> None:
    job = st.session_state[JOB]
    stop_process(job["pid"], interrupt=True)  # Ctrl-C: the training records itself as failed
    job["stopped"] = time.time()


@st.fragment(run_every=2)
def follow_job() -> None:
    job = st.session_state[JOB]
    process = job["process"]
    code = process.poll()
    if code is None and job["stopped"] and time.time() - job["stopped"] > STOP_GRACE_S:
        stop_process(job["pid"])  # it did not end on Ctrl-C
    record = None
    if job["what"] == "train":
        record = training_for_adapter(db, job["out"])
    else:
        newer = [t for t in list_trainings(db) if t.created_at.timestamp() >= job["started"] - 1]
        record = newer[-1] if newer else None
    cols = st.columns([4, 1])
    what = f"{KIND_WORDS[job['kind']]} training" if job["what"] == "train" else f"experiment {job['experiment']}"
    if code is None:
        finishing = record is not None and record.status == "done" and job["what"] == "train"
        cols[0].info(f"The {what} is running (process {job['pid']})"
                     + (": stopping…" if job["stopped"] else ": saving the adapter…" if finishing else "."))  # fmt: skip
        cols[1].button("Stop", key="train-stop", on_click=_stop_job, width="stretch", disabled=bool(job["stopped"]))
        if job.get("refused"):
            st.error("Not started: this training is still running. Stop it or wait for it before starting another.")
    else:
        job.pop("refused", None)
        if job["stopped"]:
            if record is not None and record.status == "running":  # killed before it could record it
                finish_training(db, record.id, status="failed", seconds=time.time() - job["started"],
                                error="stopped from the app")  # fmt: skip
                record = None
            cols[0].warning("Stopped. Run the same command again to resume from its last checkpoint, if it saved one.")
        elif code == 0:
            cols[0].success(f"Finished: the {what}.")
        else:
            cols[0].error(f"The {what} failed (exit code {code}). The end of its log is below.")
    if record is not None:
        log = split_log(record.metrics)
        total = log.max_steps
        done = log.last_step
        if total:
            st.progress(min(done / total, 1.0), text=f"training {record.id}: step {done} of {total}"
                        + (f" · loss {log.losses[-1]:.4f}" if log.losses else ""))  # fmt: skip
        else:
            st.progress(0.0, text=f"training {record.id}: loading the model and the data…")
        show_curves(record.metrics)
        if record.status == "done":
            agent = adapter_agent(record.base, record.adapter_path)
            st.success(f"Adapter ready: {agent}")
            page_link("app_pages/launch.py", f"Play it: launch {agent}", agent=agent)
            page_link("app_pages/trees.py", "Compare its conversations with the base agent's (after a rollout)",
                      view="compare")  # fmt: skip
    elif code is None:
        st.progress(0.0, text="Starting (loading the data, the model and the trainer)…")
    log_path = Path(job["log"])
    if log_path.exists():
        with st.expander("Log", expanded=code not in (None, 0)):
            st.code("\n".join(log_path.read_text(errors="replace").splitlines()[-25:]) or "(empty)", language=None)
    if code is not None and not job.get("page_redrawn"):
        job["page_redrawn"] = True
        st.rerun()  # the whole page once: the trainings table and the chosen training below


with st.expander("Train an adapter", expanded=not list_trainings(db) or JOB in st.session_state):
    launch_form()
if JOB in st.session_state and st.session_state[JOB]["db"] != str(db.path):
    st.caption(f"The training started from this session writes into {st.session_state[JOB]['db']}: "
               "choose that database to follow it.")  # fmt: skip
elif JOB in st.session_state:
    show_command(["josh", *st.session_state[JOB]["args"]])
    follow_job()

job = st.session_state.get(JOB)
experiment_running = bool(job and job["what"] == "selftrain" and job["db"] == str(db.path) and job["process"].poll() is None)
# While an experiment launched here runs, its rounds and stages are read again every few seconds.
st.fragment(run_every=3 if experiment_running else None)(experiments_section)()
trainings = list_trainings(db)
if not trainings and JOB in st.session_state and st.session_state[JOB]["db"] == str(db.path):
    st.stop()  # the training followed above records itself once it starts; the table comes then
if not trainings:
    st.info("No trainings in this database yet. Train one above, or export data on the Export page and run:")
    show_command(["josh", "train", "--kind", "sft", "--data", "FILE.jsonl", "--base", "embedded", "--out", "DIR",
                  "--db", str(db.path)])  # fmt: skip
    st.stop()

st.subheader("Trainings in this database")
table = pd.DataFrame([
    {"id": t.id, "kind": t.kind, "status": t.status, "examples": t.examples, "steps": split_log(t.metrics).last_step,
     "final loss": (t.losses or [None])[-1], "seconds": t.seconds, "base": t.base, "adapter": t.adapter_path,
     "data": t.data_path, "started": t.created_at}
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
    log = split_log(training.metrics)
    cols = st.columns(4)
    cols[0].metric("Status", training.status)
    cols[1].metric("Examples", training.examples)
    cols[2].metric("Steps", f"{log.last_step} of {log.max_steps}" if log.max_steps else log.last_step,
                   help="Optimiser steps logged (the trainer's end-of-run summary is not a step).")  # fmt: skip
    cols[3].metric("Final loss", f"{training.losses[-1]:.4f}" if training.losses else "–")
    if training.status == "failed":
        st.error("The training failed: " + (training.error or "no message"))
    show_curves(training.metrics)
    agent = adapter_agent(training.base, training.adapter_path)
    if training.status == "done":
        page_link("app_pages/launch.py", f"Evaluate the adapter: launch {agent}", agent=agent)
    st.caption("Play it from a shell:")
    show_command(["josh", "rollout", "--agent", agent, "--db", str(db.path)])
    with st.expander("Settings"):
        st.json(training.config)


show()
picked = next((t for t in trainings if t.id == chosen), None)
if picked is not None and picked.kind in KINDS and KINDS[picked.kind].online:
    st.subheader("Episodes: what the policy did at each step")
    budget = {k.removeprefix("budget/"): v for k, v in (split_log(picked.metrics).steps or [{}])[-1].items()
              if k.startswith("budget/")}
    if budget:
        st.caption("Sampled so far: " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in budget.items()))
    episodes_section(picked)
