"""Launch a rollout (plain or JOSH) as a background `josh rollout` process: the settings are
checked first, then the run is followed by conversations, search steps and nodes as it writes,
can be stopped, and links to its trees."""

from __future__ import annotations

import time
from pathlib import Path

import streamlit as st

from josh_core.envs import get_env
from josh_core.envs import names as env_names
from josh_core.launch import (
    check_launch, launched_run_id, resume_args, rollout_args, run_progress, start_rollout_process, stop_process,
)  # fmt: skip
from josh_core.policies.factory import decoding_flags
from josh_core.rollout import RolloutConfig
from josh_core.rollout.options import run_option
from josh_core.storage import reads, writes
from josh_core.storage.db import Database
from ui_common import check_database, database_path, kept, page_link, show_command, start_resume

st.title("Launch a rollout")
db_path = Path(database_path()).expanduser()
state, message = check_database(str(db_path))
if state in ("folder", "empty", "invalid"):
    st.error(message + " Choose another database in the sidebar.")
    st.stop()
st.caption(f"Writes into {db_path}" + (" (a new database)" if state == "missing" else ""))

# Every widget of a run option takes its label, first value, bounds and help from the option
# (josh_core/rollout/options.py), as the CLI's flags do; tests/test_run_options.py compares.
JS_SAFE_INT = 2**53 - 1  # a number input holds what a browser's number holds exactly


def _bounds(option) -> dict:
    clip = (lambda v: max(-JS_SAFE_INT, min(JS_SAFE_INT, v))) if isinstance(option.default, int) else (lambda v: v)
    return {"min_value": None if option.ge is None else clip(option.ge),
            "max_value": None if option.le is None else clip(option.le)}


def number(column, name: str, key: str | None = None):
    option = run_option(name)
    integral = not isinstance(option.ge, float)
    return column.number_input(option.label, key=kept(key or f"launch-{name}", option.first_value),
                               help=option.help_text(), step=1 if integral else None,
                               format="%d" if integral else "%g", **_bounds(option))  # fmt: skip


def text(column, name: str, key: str | None = None):
    """`key`: a kept key of the page's own (the agent's, which a link fills; the user's, per
    environment)."""
    option = run_option(name)
    return column.text_input(option.label, key=key or kept(f"launch-{name}", option.first_value or ""),
                             help=option.help_text())  # fmt: skip


def choice(column, name: str, values: list, key: str | None = None, **kwargs):
    option = run_option(name)
    first = option.first_value if option.first_value in values else values[0]
    return column.selectbox(option.label, values, key=kept(key or f"launch-{name}", first),
                            help=option.help_text(), **kwargs)  # fmt: skip


# Outside the form: the splits, the scoring and the default user follow the environment chosen.
env_name = choice(st, "env", env_names(), format_func=lambda n: f"{n}: {get_env(n).title}")
environment = get_env(env_name)

# Every field keeps its value when the person moves to another page and back (kept keys); a
# link naming an agent (the Training page's "launch this adapter") fills the agent field once.
agent_key = kept("launch-agent", run_option("agent").first_value)
linked_agent = st.query_params.get("agent")
if linked_agent and linked_agent != st.session_state.get("launch-agent-link"):
    st.session_state[agent_key] = linked_agent
    st.session_state["launch-agent-link"] = linked_agent

with st.form("launch"):
    cols = st.columns(3)
    agent = text(cols[0], "agent", key=agent_key)
    user = text(cols[1], "user", key=kept(f"launch-user-{env_name}", environment.default_user))
    base_url = text(cols[2], "base_url")
    cols = st.columns(5)
    josh = cols[0].toggle(run_option("josh").label, key=kept("launch-josh", run_option("josh").first_value),
                          help=run_option("josh").help_text())  # fmt: skip
    split = cols[1].selectbox(run_option("split").label, list(environment.splits),
                              key=kept(f"launch-split-{env_name}", environment.josh_split),
                              help=run_option("split").help_text())  # fmt: skip
    limit = number(cols[2], "limit")
    style = choice(cols[3], "style", list(run_option("style").choices()))
    scoring = (choice(cols[4], "scoring", list(environment.scoring_modes), key=f"launch-scoring-{env_name}")
               if environment.scoring_modes else None)  # an environment that scores one way offers no choice
    cols = st.columns(6)
    beam = number(cols[0], "beam")
    branching = number(cols[1], "branching")
    max_turns = number(cols[2], "max_turns", key="launch-max-turns")
    seed = number(cols[3], "seed")
    concurrency = number(cols[4], "concurrency")
    decoding = choice(cols[5], "decoding", list(run_option("decoding").choices()))
    cols = st.columns(4)
    temperature = number(cols[0], "temperature")
    max_actions = number(cols[1], "max_actions_per_turn", key="launch-max-actions")
    ray_address = text(cols[2], "ray")
    ray_workers = number(cols[3], "ray_workers", key="launch-ray-workers")
    submitted = st.form_submit_button("Start", type="primary")

if submitted:
    launched = st.session_state.get("launched")
    if launched and launched["process"].poll() is None:
        launched["refused"] = True  # said beside the running rollout, and only while it runs
    else:
        problems: list[str] = []
        try:
            constrained, grounded = decoding_flags(decoding)
            config = RolloutConfig(
                env=env_name, scoring=scoring, constrained=constrained,
                grounded=grounded, josh=josh, agent=agent.strip(), user=user.strip(), style=style,
                temperature=temperature, max_actions_per_turn=None if max_actions is None else int(max_actions),
                base_url=base_url.strip() or None, split=split, limit=int(limit), beam=int(beam),
                branching=int(branching), max_turns=int(max_turns), seed=int(seed), concurrency=int(concurrency),
            )  # fmt: skip
        except ValueError as error:  # pydantic's ValidationError is a ValueError
            problems = [str(error)]
        else:
            problems = check_launch(config)
        if problems:
            st.error("Not started:\n" + "\n".join(f"- {p}" for p in problems))
        else:
            log_path = db_path.resolve().parent / "logs" / f"rollout-{time.strftime('%Y%m%d-%H%M%S')}.log"
            ray_address = ray_address.strip() or None
            workers = None if ray_workers is None else int(ray_workers)
            process = start_rollout_process(config, db_path, log_path, ray_address, workers)
            st.session_state["launched"] = {"pid": process.pid, "log": str(log_path), "process": process,
                                            "args": rollout_args(config, db_path, ray_address, workers),
                                            "run": None,
                                            "stopped": False, "started": time.time()}  # fmt: skip


def _stop() -> None:
    launched = st.session_state["launched"]
    stop_process(launched["pid"])
    launched["stopped"] = True


if st.session_state.get("launched"):

    @st.fragment(run_every=1.5)
    def follow() -> None:
        launched = st.session_state["launched"]  # (a resume replaces it while the fragment runs alone)
        show_command(["josh", *launched["args"]])
        process = launched["process"]
        code = process.poll()
        if launched["run"] is None:
            launched["run"] = launched_run_id(launched["log"])
        run_id = launched["run"]
        cols = st.columns([4, 1])
        if code is None:
            cols[0].info(f"Process {launched['pid']} is running" + (f": run {run_id}" if run_id else ": starting…"))
            cols[1].button("Stop", key="launch-stop", on_click=_stop, type="secondary", width="stretch")
            if launched.get("refused"):
                st.error(f"Not started: rollout {launched['pid']} is still running. Stop it or wait for it "
                         "before starting another.")  # fmt: skip
        elif launched["stopped"]:
            launched.pop("refused", None)
            cols[0].warning("Stopped. The run can be continued where it stopped:")
            if run_id:
                cols[1].button("Resume", key="launch-resume", on_click=start_resume, args=(run_id,), type="primary",
                               width="stretch")  # fmt: skip
            show_command(["josh", *resume_args(run_id or "RUN", db_path)])
            if run_id and not launched.get("marked"):
                try:
                    if reads.get_run(Database(db_path), run_id).status == "running":
                        writes.set_run_status(Database(db_path), run_id, "incomplete")
                except (KeyError, FileNotFoundError):
                    pass
                launched["marked"] = True
        elif code == 0:
            launched.pop("refused", None)
            cols[0].success(f"Finished: run {run_id}.")
        else:
            cols[0].error(f"The rollout failed (exit code {code}). The end of its log is below.")
        if run_id and db_path.exists():
            try:
                progress = run_progress(Database(db_path), run_id)
            except KeyError:
                progress = None
            if progress is not None:
                st.progress(min(progress.fraction, 1.0), text=f"run {run_id}: {progress.summary()}")
                frame = progress.frame[["position", "scenario_id", "status", "steps", "node_count", "reward", "error"]]
                if len(progress.workers):  # a distributed run (--ray): what each worker has done and plays
                    st.caption(f"{len(progress.workers)} Ray workers")
                    st.dataframe(progress.workers, hide_index=True, width="stretch",
                                 column_config={"playing": "playing now", "nodes": "nodes written"})  # fmt: skip
                st.dataframe(frame, hide_index=True, width="stretch",
                             column_config={"node_count": "nodes", "steps": f"steps (of {progress.max_turns})"})  # fmt: skip
                first = progress.frame.iloc[0]["id"] if len(progress.frame) else None
                if first is not None:
                    page_link("app_pages/trees.py", f"Open the trees of run {run_id}", conversation=first)
        elif code is None:
            st.progress(0.0, text="Waiting for the run to start (loading scenarios and the model)…")
        log = Path(launched["log"])
        if log.exists():
            with st.expander("Log", expanded=code not in (None, 0)):
                st.code("\n".join(log.read_text(errors="replace").splitlines()[-25:]) or "(empty)", language=None)
        # Only this fragment reruns while the rollout plays: redraw the page (sidebar note, the
        # "new database" caption) once the database exists, and once more when the process ends.
        if state == "missing" and db_path.exists() and not launched.get("redrawn-db"):
            launched["redrawn-db"] = True
            st.rerun()
        if code is not None and not launched.get("redrawn-end"):
            launched["redrawn-end"] = True
            st.rerun()

    follow()
