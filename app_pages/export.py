"""Export training data (SFT / KTO / DPO JSONL) in one click."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from josh_core.extract import EXPORT_FORMATS, EXPORT_KINDS, ExportOptions, export_dataset
from josh_core.storage import reads
from ui_common import require_database, pick_run

st.title("Export training data")
db = require_database()
run_id = pick_run(db)

cols = st.columns(3)
kind = cols[0].radio("Kind", EXPORT_KINDS, horizontal=True,
                     help="sft: ideal paths as `messages`; kto: prompt/completion/label; dpo: prompt/chosen/rejected")
fmt = cols[1].radio("Format", EXPORT_FORMATS, horizontal=True,
                    help="trl: TRL conversational datasets; openai: OpenAI fine-tuning (`messages`, `tools`)")
only_full = cols[2].checkbox("Only conversations with reward 1.0", value=True)
cols = st.columns(3)
drop_errors = cols[0].checkbox("Drop turns with errors", value=True)
use_annotations = cols[1].checkbox("Apply annotators' label overrides", value=True)
system_only = cols[2].checkbox("System prompt only", value=False,
                               help="Default: prompts start with everything the agent sent (ReACT: "
                                    "system prompt and demonstration), exactly as at inference.")
out_dir = Path(st.text_input("Folder", value=str(Path(db.path).resolve().parent / "exports")))

if st.button("Export", type="primary"):
    out = out_dir / f"{kind}-{fmt}-{run_id or 'all'}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    options = ExportOptions(kind=kind, format=fmt, min_reward=1.0 if only_full else None,
                            drop_errors=drop_errors, use_annotations=use_annotations,
                            prompt="system" if system_only else "agent")
    summary = export_dataset(db, options, out, run_id=run_id)
    st.success(f"{summary.rows} rows from {summary.conversations} of {summary.considered} "
               f"finished conversations written to {summary.path}")
    st.download_button("Download JSONL", data=out.read_bytes(), file_name=out.name,
                       mime="application/jsonl")

exports = reads.list_exports(db)
if exports:
    st.subheader("Earlier exports")
    st.dataframe([e.model_dump() for e in exports], hide_index=True, width="stretch")
