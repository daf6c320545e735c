"""Launch a rollout (plain or JOSH) in a background process and follow it as it writes."""

from __future__ import annotations

import time
from pathlib import Path

import streamlit as st

from josh_core.launch import rollout_args, start_rollout_process
from josh_core.policies.factory import DECODING_MODES, decoding_flags
from josh_core.rollout import RolloutConfig
from josh_core.storage import reads
from ui_common import database_path

st.title("Launch a rollout")
db_path = Path(database_path())

with st.form("launch"):
    cols = st.columns(3)
    agent = cols[0].text_input("Agent SPEC", "embedded",
                               help="embedded[@ADAPTER] | openai:MODEL | hf:PATH[@ADAPTER] | vllm:MODEL | llamacpp:GGUF | script:FILE")
    user = cols[1].text_input("User SPEC", "agenda", help="agenda | llm:SPEC | script:FILE")
    base_url = cols[2].text_input("Base URL (openai:)", "", help="e.g. http://gpu-box:8000/v1 for `vllm serve`")
    cols = st.columns(4)
    josh = cols[0].toggle("JOSH beam search", value=True)
    split = cols[1].selectbox("Split", ["train", "val", "test", "official-test"])
    limit = cols[2].number_input("Scenarios", min_value=1, value=1)
    style = cols[3].selectbox("Agent style", ["react", "fc"])
    cols = st.columns(6)
    decoding = cols[5].selectbox(
        "Decoding", list(DECODING_MODES),
        help="auto: grounded for local models, free for API models; grounded: action grammar with "
             "values from the conversation; grammar: action grammar only; free: unconstrained text.",
    )
    beam = cols[0].number_input("Max beam", min_value=1, value=8)
    branching = cols[1].number_input("Branching", min_value=1, value=2)
    max_turns = cols[2].number_input("Max turns", min_value=1, value=15)
    seed = cols[3].number_input("Seed", value=0)
    concurrency = cols[4].number_input("Conversations at once", min_value=1, value=1)
    submitted = st.form_submit_button("Start", type="primary")

if submitted:
    constrained, grounded = decoding_flags(decoding)
    config = RolloutConfig(
        constrained=constrained, grounded=grounded, josh=josh, agent=agent.strip(), user=user.strip(), style=style, base_url=base_url or None,
        split=split, limit=int(limit), beam=int(beam), branching=int(branching),
        max_turns=int(max_turns), seed=int(seed), concurrency=int(concurrency),
    )
    log_path = db_path.resolve().parent / "logs" / f"rollout-{time.strftime('%Y%m%d-%H%M%S')}.log"
    process = start_rollout_process(config, db_path, log_path)
    st.session_state["launched"] = {"pid": process.pid, "log": str(log_path),
                                    "args": rollout_args(config, db_path), "process": process}

launched = st.session_state.get("launched")
if launched:
    st.code("josh " + " ".join(launched["args"]), language="bash")

    @st.fragment(run_every=2)
    def follow() -> None:
        process = launched["process"]
        code = process.poll()
        st.caption(f"process {launched['pid']}: " + ("running" if code is None else f"exited with {code}"))
        log = Path(launched["log"])
        if log.exists():
            st.text("\n".join(log.read_text(errors="replace").splitlines()[-15:]))
        if db_path.exists():
            from josh_core.storage.db import Database

            runs = reads.runs_frame(Database(db_path))
            if not runs.empty:
                latest = runs.iloc[-1]
                total = max(int(latest["conversations"]), 1)
                st.progress(int(latest["done"]) / total, text=f"run {latest['id']}: {int(latest['done'])}/{total} conversations")

    follow()
