"""Training data: the JSONL files `josh export` writes (docs/data-formats.md), read and checked.

    sft   {"messages": [...], "tools"?: [...]}                       conversational LM
    kto   {"prompt": [...], "completion": [...], "label": bool, "tools"?}   unpaired preference
    dpo   {"prompt": [...], "chosen": [...], "rejected": [...], "tools"?}   paired preference

The OpenAI preference format of DPO (`input` / `preferred_output` / `non_preferred_output`) is
read too and turned into the TRL one. Rows are normalised so that Arrow (the `datasets`
library) can hold them: message `content` is always a string, tool-call `arguments` are JSON
text (chat templates print strings as they are) and `tools` is JSON text (TRL's trainers
`json.loads` a string `tools` column).

A file that is missing, empty, not JSONL, or of another kind than asked is refused with a
`TrainingDataError` whose message says what is wrong (the CLI prints it without a traceback).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from josh_core.files import file_sha256

KIND_FIELDS = {
    "sft": ("messages",),
    "kto": ("prompt", "completion", "label"),
    "dpo": ("prompt", "chosen", "rejected"),
}
KIND_NAMES = {
    "sft": "SFT data (messages)",
    "kto": "KTO data (prompt/completion/label)",
    "dpo": "DPO data (prompt/chosen/rejected)",
}


# The longest line a training file may hold. An exported row is one conversation: tens of
# kilobytes with the tool list; 16 MiB leaves room for very long conversations.
MAX_LINE_BYTES = 16 * 1024 * 1024


class TrainingDataError(ValueError):
    """Training data that cannot be used (plain message, shown without traceback)."""


@dataclass
class TrainingData:
    kind: str
    path: Path | None  # the JSONL (an online kind's scenario file, or None: it plays a split)
    rows: list[dict[str, Any]]
    sha256: str
    description: str | None = None  # where the rows came from, when not a file (an online kind's split)

    @property
    def examples(self) -> int:
        return len(self.rows)

    @property
    def source(self) -> str:
        """What the `trainings` row records as the data: the file's absolute path, or the description."""
        if self.description is not None:
            return self.description
        assert self.path is not None
        return str(self.path.resolve())

    def label_counts(self) -> tuple[int, int]:
        """KTO: (desirable, undesirable) rows."""
        desirable = sum(1 for row in self.rows if row.get("label"))
        return desirable, len(self.rows) - desirable



def detect_kind(row: dict[str, Any]) -> str | None:
    """The kind of one exported row, or None when it is none of them."""
    if "messages" in row:
        return "sft"
    if "input" in row and "preferred_output" in row and "non_preferred_output" in row:
        return "dpo"  # OpenAI preference format
    if "prompt" in row and "chosen" in row and "rejected" in row:
        return "dpo"
    if "prompt" in row and "completion" in row and "label" in row:
        return "kto"
    return None


def load_training_data(path: str | Path, kind: str) -> TrainingData:
    """Read, check and normalise an exported JSONL file for a `kind` trainer."""
    path = Path(path)
    if not path.exists():
        raise TrainingDataError(f"no training data at {path}")
    if not path.is_file():
        raise TrainingDataError(f"{path} is not a file")
    rows: list[dict[str, Any]] = []
    for number, line in read_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise TrainingDataError(f"{path} line {number} is not JSON ({error.msg}): expected JSONL "
                                    "as written by `josh export`") from None
        except RecursionError:
            raise TrainingDataError(f"{path} line {number} is nested too deeply to be a training row") from None
        if not isinstance(row, dict):
            raise TrainingDataError(f"{path} line {number} is not a JSON object")
        found = detect_kind(row)
        if found != kind:
            what = KIND_NAMES[found] if found else f"rows with fields {', '.join(sorted(row)) or 'none'}"
            raise TrainingDataError(
                f"{path} holds {what}, not {KIND_NAMES[kind]} (line {number}); "
                f"write it with `josh export --kind {kind}`"
            )
        try:
            rows.append(_normalise(row, kind))
        except TrainingDataError as error:
            raise TrainingDataError(f"{path} line {number}: {error}") from None
        except RecursionError:
            raise TrainingDataError(f"{path} line {number} is nested too deeply to be a training row") from None
    if not rows:
        raise TrainingDataError(
            f"{path} is empty: no examples to train on (an export of conversations below 100% reward "
            "writes none; see `josh export --all-rewards`)"
        )
    return TrainingData(kind=kind, path=path, rows=rows, sha256=file_sha256(path))


def read_lines(path: Path, max_line_bytes: int | None = None):
    """(line number, text) of every line, read in binary with a cap per line: a line longer than
    the cap is refused as soon as the cap is passed (a 50 MB line once took 4 GB and minutes to
    refuse), and one that is not UTF-8 is named."""
    cap = MAX_LINE_BYTES if max_line_bytes is None else max_line_bytes
    try:
        fh = path.open("rb")
    except OSError as error:
        raise TrainingDataError(f"{path} cannot be read: {error.strerror or error}") from None
    with fh:
        number = 0
        while True:
            try:
                raw = fh.readline(cap + 1)
            except OSError as error:
                raise TrainingDataError(f"{path} cannot be read: {error.strerror or error}") from None
            if not raw:
                return
            number += 1
            if len(raw) > cap and not (len(raw) == cap + 1 and raw.endswith(b"\n")):
                raise TrainingDataError(
                    f"{path} line {number} is longer than {cap:,} bytes: not a training row "
                    "(`josh export` rows are far smaller)"
                )
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise TrainingDataError(
                    f"{path} line {number} is not UTF-8 text (byte {error.start + 1} of the line)"
                ) from None
            yield number, text


def _messages(value: Any, name: str) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not value:
        raise TrainingDataError(f"`{name}` must be a non-empty list of chat messages")
    out = []
    for message in value:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise TrainingDataError(f"`{name}` holds an entry that is not a chat message with a role")
        clean: dict[str, Any] = {"role": message["role"], "content": _text(message.get("content"))}
        if message.get("tool_calls"):
            clean["tool_calls"] = [_tool_call(c) for c in message["tool_calls"]]
        if message.get("tool_call_id"):
            clean["tool_call_id"] = str(message["tool_call_id"])
        if message.get("name"):
            clean["name"] = str(message["name"])
        out.append(clean)
    return out


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


def _tool_call(call: Any) -> dict[str, Any]:
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        raise TrainingDataError("a tool call has no `function`")
    function = call["function"]
    arguments = function.get("arguments", {})
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    return {
        "id": str(call.get("id") or ""),
        "type": call.get("type") or "function",
        "function": {"name": str(function.get("name") or ""), "arguments": arguments},
    }


def _tools(row: dict[str, Any]) -> str | None:
    tools = row.get("tools")
    if tools is None and isinstance(row.get("input"), dict):
        tools = row["input"].get("tools")
    if tools is None:
        return None
    return tools if isinstance(tools, str) else json.dumps(tools, ensure_ascii=False)


def _normalise(row: dict[str, Any], kind: str) -> dict[str, Any]:
    out: dict[str, Any]
    if kind == "sft":
        messages = _messages(row["messages"], "messages")
        if not any(m["role"] == "assistant" for m in messages):
            raise TrainingDataError("an SFT row has no assistant message to learn")
        out = {"messages": messages}
    elif kind == "kto":
        if not isinstance(row["label"], bool):
            raise TrainingDataError("`label` must be true or false")
        out = {
            "prompt": _messages(row["prompt"], "prompt"),
            "completion": _messages(row["completion"], "completion"),
            "label": row["label"],
        }
    else:
        if "input" in row:  # OpenAI preference fine-tuning format
            prompt = (row["input"] or {}).get("messages") if isinstance(row["input"], dict) else None
            out = {
                "prompt": _messages(prompt, "input.messages"),
                "chosen": _messages(row["preferred_output"], "preferred_output"),
                "rejected": _messages(row["non_preferred_output"], "non_preferred_output"),
            }
        else:
            out = {
                "prompt": _messages(row["prompt"], "prompt"),
                "chosen": _messages(row["chosen"], "chosen"),
                "rejected": _messages(row["rejected"], "rejected"),
            }
    tools = _tools(row)
    if tools is not None:
        out["tools"] = tools
    return out
