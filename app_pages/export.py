"""Export training data (SFT / KTO / DPO JSONL): what the filters let through and why, a preview
of the rows, then one click to write a new file and download it."""

from __future__ import annotations

import json
from pathlib import Path

import streamlit as st

from josh_core.analysis.export_plan import KTO_RATIO_RANGE, export_file_name, kto_balance, plan_export
from josh_core.extract import EXPORT_FORMATS, EXPORT_KINDS, ExportOptions, export_dataset
from josh_core.storage import reads
from ui_common import db_stamp, esc, pick_run, require_database

st.title("Export training data")
db = require_database()
run_id = pick_run(db, key="export-run")

KIND_HELP = {
    "sft": "the ideal path of each conversation as one `messages` example",
    "kto": "every generation of ideal turns (desirable) and of negative alternatives (undesirable)",
    "dpo": "each ideal turn against each negative alternative after the same user turn",
}
cols = st.columns(3)
kind = cols[0].radio("Kind", EXPORT_KINDS, horizontal=True, key="export-kind", format_func=str.upper,
                     help="; ".join(f"{k.upper()}: {v}" for k, v in KIND_HELP.items()))  # fmt: skip
fmt = cols[1].radio("Format", EXPORT_FORMATS, horizontal=True, key="export-format",
                    help="trl: TRL conversational datasets; openai: OpenAI fine-tuning (`messages`, `tools`)")  # fmt: skip
only_full = cols[2].checkbox("Only conversations with reward 1.0", value=True, key="export-full",
                             help="The paper trains on conversations that reached every goal (appendix B).")  # fmt: skip
cols = st.columns(3)
drop_errors = cols[0].checkbox("Drop turns with errors", value=True, key="export-errors")
use_annotations = cols[1].checkbox("Follow the annotators' labels", value=True, key="export-annotations",
                                   help="Pairs page verdicts: good = positive, bad = negative, don't use = left out.")  # fmt: skip
system_only = cols[2].checkbox("System prompt only", value=False, key="export-system",
                               help="Default: prompts start with everything the agent sent (ReACT: system prompt "
                                    "and demonstration), exactly as at inference.")  # fmt: skip
options = ExportOptions(kind=kind, format=fmt, min_reward=1.0 if only_full else None, drop_errors=drop_errors,
                        use_annotations=use_annotations, prompt="system" if system_only else "agent")  # fmt: skip
if kind == "kto" and fmt == "openai":
    st.error("OpenAI fine-tuning has no KTO format: choose TRL for KTO.")
    st.stop()


@st.cache_data(max_entries=16, show_spinner="Counting what this export would write…")
def _plan(path: str, options_json: str, run: str | None, stamp: tuple):
    from josh_core.storage.db import Database

    return plan_export(Database(path), ExportOptions.model_validate_json(options_json), run)


plan = _plan(str(db.path), options.model_dump_json(), run_id, db_stamp(db))

# -- what passes, and why the rest does not ----------------------------------------------------
st.subheader("Before writing")
cols = st.columns(3)
cols[0].metric("Conversations in scope", plan.conversations)
cols[1].metric("Conversations giving rows", f"{plan.giving_rows} of {plan.conversations}")
cols[2].metric(f"Rows to write ({kind.upper()})", plan.rows)
left_out = []
for status, n in sorted(plan.not_finished.items()):
    left_out.append(f"{n} not finished ({status})")
if plan.below_reward:
    left_out.append(f"{plan.below_reward} finished below reward 1.0 (untick “Only conversations with reward 1.0” to include them)")
for reason, n in sorted(plan.no_rows.items(), key=lambda kv: -kv[1]):
    left_out.append(f"{n} give no {kind.upper()} rows: {reason}")
if left_out:
    st.markdown("**Left out:**\n" + "\n".join(f"- {line}" for line in left_out))
if plan.rows == 0:
    st.warning("This export would write no rows. See what is left out above and change the filters.")

if kind == "kto" and plan.rows:
    balance = kto_balance(plan.desirable, plan.undesirable)
    cols = st.columns(3)
    cols[0].metric("Desirable rows (label: true)", balance.desirable)
    cols[1].metric("Undesirable rows (label: false)", balance.undesirable)
    cols[2].metric("Undesirable per desirable", f"{balance.undesirable / balance.desirable:.2f}"
                   if balance.desirable else "–")  # fmt: skip
    if balance.one_sided:
        side, missing = ("undesirable", "desirable") if balance.desirable == 0 else ("desirable", "undesirable")
        hint = (" With “Only conversations with reward 1.0” off, failed trees give alternatives (undesirable) "
                "but an ideal path that reached no goal gives no desirable turn." if not only_full else "")
        st.warning(f"One-sided: every row is {side}, none {missing}. KTO learns from the contrast between "
                   f"the two; training on this moves the model one way only.{hint}")  # fmt: skip
    else:
        low, high = balance.weight_low, balance.weight_high
        st.caption(
            f"TRL's KTOTrainer asks for desirable_weight × {balance.desirable} over undesirable_weight × "
            f"{balance.undesirable} between {KTO_RATIO_RANGE[0]:g} and 4/3: with undesirable_weight 1.0, a "
            f"desirable_weight from {low:.2f} to {high:.2f}. `josh train`'s defaults (desirable 1.0, undesirable "
            f"2.71) give {balance.desirable / (2.71 * balance.undesirable):.2f}; `balance_weights = true` in the "
            "`[kto]` table of its `--config` file picks the middle of the range."
        )  # fmt: skip


def _messages_html(messages) -> str:
    """Chat messages (TRL or OpenAI rows) as escaped text: role, then content or tool calls."""
    out = []
    for message in messages or []:
        content = message.get("content")
        if not content and message.get("tool_calls"):
            content = json.dumps(message["tool_calls"], ensure_ascii=False)
        out.append(f'<div class="jw-muted">{esc(message.get("role", "?"))}</div>'
                   f'<div class="jw-pre">{esc(content if isinstance(content, str) else json.dumps(content, ensure_ascii=False))}</div>')  # fmt: skip
    return "".join(out) or '<div class="jw-muted">(empty)</div>'


def _dpo_sides(row: dict) -> tuple[list, list, list]:
    """prompt, chosen, rejected of a TRL or OpenAI preference row."""
    if "chosen" in row:
        return row.get("prompt", []), row["chosen"], row["rejected"]
    return row.get("input", {}).get("messages", []), row.get("preferred_output", []), row.get("non_preferred_output", [])


with st.expander(f"Preview: the first {len(plan.preview)} of {plan.rows} rows", expanded=plan.rows > 0):
    for i, row in enumerate(plan.preview, 1):
        if kind == "dpo":
            prompt, chosen, rejected = _dpo_sides(row)
            last_user = next((m for m in reversed(prompt) if m.get("role") == "user"), None)
            st.caption(f"row {i} · after the user turn below ({len(prompt)} prompt messages in the row)")
            if last_user:
                st.html(_messages_html([last_user]))
            left, right = st.columns(2, gap="small")
            with left:
                st.markdown("**chosen** (the ideal turn)")
                st.html(_messages_html(chosen))
            with right:
                st.markdown("**rejected** (the alternative)")
                st.html(_messages_html(rejected))
            with st.popover("The whole row as JSON"):
                st.code(json.dumps(row, ensure_ascii=False, indent=1)[:6000], language="json", wrap_lines=True)
        else:
            label = f" · label: {str(row['label']).lower()}" if "label" in row else ""
            st.caption(f"row {i}{label}")
            st.code(json.dumps(row, ensure_ascii=False, indent=1)[:6000], language="json", wrap_lines=True, height=260)

# -- write ----------------------------------------------------------------------------------------
folder = st.text_input("Folder", value=str(Path(db.path).resolve().parent / "exports"), key="export-folder")
if st.button("Export", type="primary", disabled=plan.rows == 0, key="export-go"):
    out = export_file_name(folder, kind, fmt, run_id)
    try:
        summary = export_dataset(db, options, out, run_id=run_id)
    except (OSError, ValueError) as error:
        st.session_state["export-result"] = {"error": str(error)}
    else:
        st.session_state["export-result"] = {"summary": summary.model_dump(), "path": str(out)}
    _plan.clear()

result = st.session_state.get("export-result")
if result and "error" in result:
    st.error(f"The export failed: {result['error']}")
elif result:
    summary, path = result["summary"], Path(result["path"])
    message = (f"{summary['kind'].upper()} export: {summary['rows']} rows from {summary['conversations']} conversations written to {path}"
               + ("" if summary.get("recorded", True) else f" ({summary.get('note')})"))  # fmt: skip
    (st.success if summary["rows"] else st.warning)(message)
    if path.exists():
        st.download_button(f"Download {path.name}", data=path.read_bytes(), file_name=path.name,
                           mime="application/jsonl", on_click="ignore", key="export-download")  # fmt: skip

exports = reads.list_exports(db)
if exports:
    st.subheader("Earlier exports")
    st.dataframe(
        [{"when": e.created_at, "kind": e.kind, "format": e.format, "rows": e.rows,
          "conversations": e.conversations, "run": e.run_id or "every run", "file": e.path} for e in reversed(exports)],
        hide_index=True, width="stretch",
    )  # fmt: skip
