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
from josh_core.llm.specs import spec_usages
from josh_core.policies.factory import AGENT_STYLES, DECODING_MODES, decoding_flags
from josh_core.rollout import RolloutConfig
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

# Outside the form: the splits and the default user follow the environment chosen.
env_name = st.selectbox("Environment", env_names(), key=kept("launch-env", env_names()[0]),
                        format_func=lambda n: f"{n}: {get_env(n).title}",
                        help="`josh envs`; ToolWOZ, or τ²-bench retail / airline (docs/environments.md)")  # fmt: skip
environment = get_env(env_name)

# Every field keeps its value when the person moves to another page and back (kept keys); a
# link naming an agent (the Training page's "launch this adapter") fills the agent field once.
agent_key = kept("launch-agent", "embedded")
linked_agent = st.query_params.get("agent")
if linked_agent and linked_agent != st.session_state.get("launch-agent-link"):
    st.session_state[agent_key] = linked_agent
    st.session_state["launch-agent-link"] = linked_agent

with st.form("launch"):
    cols = st.columns(3)
    agent = cols[0].text_input("Agent SPEC", key=agent_key,
                               help=" | ".join([*spec_usages(), "oracle", "script:FILE"]))  # fmt: skip
    user = cols[1].text_input("User SPEC", key=kept(f"launch-user-{env_name}", environment.default_user),
                              help=" | ".join({"agenda": "agenda", "llm": "llm:SPEC", "script": "script:FILE"}[k]
                                              for k in environment.user_kinds))  # fmt: skip
    base_url = cols[2].text_input("Base URL (openai:)", key=kept("launch-base-url", ""), help="e.g. http://gpu-box:8000/v1 for `vllm serve`")
    cols = st.columns(4)
    josh = cols[0].toggle("JOSH beam search", key=kept("launch-josh", True))
    split = cols[1].selectbox("Split", list(environment.splits),
                              key=kept(f"launch-split-{env_name}", environment.josh_split))  # fmt: skip
    limit = cols[2].number_input("Scenarios", min_value=1, key=kept("launch-limit", 1))
    style = cols[3].selectbox("Agent style", list(AGENT_STYLES), key=kept("launch-style", "auto"),
                              help="auto: compact for the embedded model, ReACT otherwise")  # fmt: skip
    cols = st.columns(6)
    beam = cols[0].number_input("Max beam", min_value=1, key=kept("launch-beam", 8))
    branching = cols[1].number_input("Branching", min_value=1, key=kept("launch-branching", 2))
    max_turns = cols[2].number_input("Max turns", min_value=1, key=kept("launch-max-turns", 15))
    seed = cols[3].number_input("Seed", step=1, format="%d", key=kept("launch-seed", 0))
    concurrency = cols[4].number_input("Conversations at once", min_value=1, key=kept("launch-concurrency", 1))
    decoding = cols[5].selectbox(
        "Decoding", list(DECODING_MODES), key=kept("launch-decoding", list(DECODING_MODES)[0]),
        help="auto: grounded for local models, free for API models; grounded: action grammar with "
             "values from the conversation; grammar: action grammar only; free: unconstrained text.",
    )  # fmt: skip
    cols = st.columns([3, 1])
    ray_address = cols[0].text_input(
        "Ray cluster (optional)", key=kept("launch-ray", ""),
        help="Empty: play in the rollout's own process. local: start Ray in it and spread the conversations "
             "over workers; auto or HOST:PORT: a running cluster (docs/distributed.md).",
    )  # fmt: skip
    ray_workers = cols[1].number_input("Ray workers", min_value=0, key=kept("launch-ray-workers", 0), help="0: one per CPU (or GPU) of the cluster")
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
                env=env_name, constrained=constrained, grounded=grounded, josh=josh, agent=agent.strip(),
                user=user.strip(),
                style=style, base_url=base_url.strip() or None, split=split, limit=int(limit), beam=int(beam),
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
            process = start_rollout_process(config, db_path, log_path, ray_address, int(ray_workers) or None)
            st.session_state["launched"] = {"pid": process.pid, "log": str(log_path), "process": process,
                                            "args": rollout_args(config, db_path, ray_address, int(ray_workers) or None),
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
