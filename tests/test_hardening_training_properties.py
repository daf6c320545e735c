"""Property-based tests (hypothesis) of the training-data readers: any file is either read or
refused with a TrainingDataError (never another exception), well-formed rows of every kind are
read back complete and normalised, and the line reader gives back the file exactly or stops at
the first line over its cap."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from josh_core.train import TrainingDataError, load_training_data
from josh_core.train.data import read_lines

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KINDS = ("sft", "kto", "dpo")


def nested(depth: int, kind: str) -> object:
    value: object = "x"
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


json_scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
                | st.text(max_size=20))
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
) | st.builds(nested, st.integers(0, 5000), st.sampled_from(["list", "dict"]))

roles = st.sampled_from(["system", "user", "assistant", "tool"]) | st.text(max_size=8)
message_like = st.fixed_dictionaries(
    {"role": roles | json_scalars},
    optional={"content": json_values, "tool_calls": json_values, "tool_call_id": json_values, "name": json_values},
)
row_like = st.fixed_dictionaries({}, optional={
    "messages": st.lists(message_like, max_size=4) | json_values,
    "prompt": st.lists(message_like, max_size=3) | json_values,
    "completion": st.lists(message_like, max_size=3) | json_values,
    "chosen": st.lists(message_like, max_size=3) | json_values,
    "rejected": st.lists(message_like, max_size=3) | json_values,
    "label": json_values,
    "tools": json_values,
    "input": json_values,
    "preferred_output": json_values,
    "non_preferred_output": json_values,
})


def write(content: bytes) -> Path:
    handle = tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False)
    with handle:
        handle.write(content)
    return Path(handle.name)


def read_or_refuse(path: Path, kind: str):
    try:
        return load_training_data(path, kind)
    except TrainingDataError as error:
        assert str(path) in str(error)  # every refusal names the file
        return None


@SETTINGS
@given(st.binary(max_size=400), st.sampled_from(KINDS))
def test_any_bytes_are_read_or_refused(content, kind):
    path = write(content)
    try:
        read_or_refuse(path, kind)
    finally:
        path.unlink()


@SETTINGS
@given(st.lists(row_like | json_values, min_size=1, max_size=4), st.sampled_from(KINDS))
def test_any_json_lines_are_read_or_refused(rows, kind):
    lines = []
    for row in rows:
        try:
            lines.append(json.dumps(row))
        except (ValueError, RecursionError):
            lines.append("[" * 3000 + "]" * 3000)
    path = write(("\n".join(lines) + "\n").encode())
    try:
        data = read_or_refuse(path, kind)
        if data is not None:
            assert data.examples >= 1 and data.kind == kind
            json.dumps(data.rows)  # what the trainer gets is plain JSON (Arrow can hold it)
    finally:
        path.unlink()


text = st.text(max_size=40)
arguments = st.dictionaries(st.text(max_size=8), json_scalars.filter(
    lambda v: not (isinstance(v, float) and v != v)), max_size=3) | st.text(max_size=20)
tool_call = st.builds(
    lambda name, args: {"id": "c1", "type": "function", "function": {"name": name, "arguments": args}},
    st.text(max_size=12), arguments)
user_message = st.builds(lambda t: {"role": "user", "content": t}, text)
assistant_message = st.builds(
    lambda t, calls: {"role": "assistant", "content": t, **({"tool_calls": calls} if calls else {})},
    text, st.lists(tool_call, max_size=2))
conversation = st.builds(lambda head, last: [*head, last], st.lists(user_message | assistant_message, max_size=4),
                         assistant_message)
tools = st.none() | st.lists(st.fixed_dictionaries({"type": st.just("function"), "function": st.fixed_dictionaries(
    {"name": st.text(max_size=10)})}), max_size=2)


def with_tools(row: dict, spec) -> dict:
    return {**row, "tools": spec} if spec is not None else row


@SETTINGS
@given(st.lists(st.tuples(conversation, tools), min_size=1, max_size=5))
def test_well_formed_sft_rows_are_read_back_complete(rows):
    path = write("".join(json.dumps(with_tools({"messages": m}, t)) + "\n" for m, t in rows).encode())
    try:
        data = load_training_data(path, "sft")
    finally:
        path.unlink()
    assert data.examples == len(rows)
    for (messages, spec), row in zip(rows, data.rows):
        assert [m["role"] for m in row["messages"]] == [m["role"] for m in messages]
        assert [m["content"] for m in row["messages"]] == [m["content"] for m in messages]
        for original, read in zip(messages, row["messages"]):
            for before, after in zip(original.get("tool_calls", []), read.get("tool_calls", [])):
                args = before["function"]["arguments"]
                assert json.loads(after["function"]["arguments"]) == args if not isinstance(args, str) else \
                    after["function"]["arguments"] == args
        assert (json.loads(row["tools"]) if "tools" in row else None) == spec


@SETTINGS
@given(st.lists(st.tuples(conversation, conversation, st.booleans()), min_size=1, max_size=5))
def test_well_formed_kto_and_dpo_rows_are_read_back_complete(rows):
    kto = write("".join(json.dumps({"prompt": p, "completion": c, "label": label}) + "\n"
                        for p, c, label in rows).encode())
    dpo = write("".join(json.dumps({"prompt": p, "chosen": c, "rejected": p}) + "\n" for p, c, _ in rows).encode())
    try:
        kto_data, dpo_data = load_training_data(kto, "kto"), load_training_data(dpo, "dpo")
    finally:
        kto.unlink()
        dpo.unlink()
    assert [r["label"] for r in kto_data.rows] == [label for _, _, label in rows]
    assert kto_data.label_counts() == (sum(1 for *_, label in rows if label), sum(1 for *_, label in rows if not label))
    assert [len(r["chosen"]) for r in dpo_data.rows] == [len(c) for _, c, _ in rows]


@SETTINGS
@given(st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), max_size=6), st.booleans(),
       st.integers(1, 24))
def test_the_line_reader_gives_the_file_back_or_stops_at_the_first_long_line(lines, final_newline, cap):
    content = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    path = write(content)
    try:
        too_long = next((i for i, line in enumerate(lines, 1) if len(line) > cap), None)
        decodable = True
        try:
            content.decode("utf-8")
        except UnicodeDecodeError:
            decodable = False
        try:
            read = list(read_lines(path, max_line_bytes=cap))
        except TrainingDataError as error:
            message = str(error)
            assert too_long is not None or not decodable, message
            if "longer than" in message:
                assert f"line {too_long} " in message
            return
        assert too_long is None
        assert "".join(text for _, text in read).encode() == content
        assert [n for n, _ in read] == list(range(1, len(read) + 1))
    finally:
        path.unlink()
