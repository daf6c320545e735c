"""Property-based tests (hypothesis) of the export writers: any row becomes exactly one JSONL
line that reads back as the row (lone surrogates replaced), a failed write leaves the old
file as it was, our own output is always accepted as `--out` again, and the output check
never raises and never accepts a database."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from josh_core.extract import check_output_path, format_row, jsonl_line, not_jsonl_reason, write_jsonl
from josh_core.extract import DPOExample, KTOExample, SFTExample
from josh_core.safe_text import valid_json, valid_text
from josh_core.types import Message

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                            HealthCheck.function_scoped_fixture])

# Any code point, lone surrogates and Unicode line separators included.
texts = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=40) | st.sampled_from(
    ["\ud800", "a\udfffb", "\ud83d\ude00", "x\u2028y", "\x85", "\r\n", "APICALL {\"name\": \"x\"}"])
scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=False, allow_infinity=False) | texts
values = st.recursive(scalars, lambda children: st.lists(children, max_size=4)
                      | st.dictionaries(texts, children, max_size=4), max_leaves=20)
rows = st.dictionaries(texts, values, max_size=5)


def _read_back(path: Path) -> list[dict]:
    data = path.read_bytes().decode("utf-8")  # strict: the file is valid UTF-8
    lines = data.splitlines()  # the most eager line splitter there is
    assert data.endswith("\n") or not data
    return [json.loads(line) for line in lines]


@SETTINGS
@given(st.lists(rows, max_size=6))
def test_every_row_is_one_line_that_reads_back(tmp_path_factory, batch):
    out = tmp_path_factory.mktemp("jsonl") / "rows.jsonl"
    assert write_jsonl(iter(batch), out) == len(batch)
    assert _read_back(out) == [valid_json(row) for row in batch]
    assert not_jsonl_reason(out) is None  # an export may replace an earlier export
    assert sorted(os.listdir(out.parent)) == ["rows.jsonl"]


@SETTINGS
@given(st.lists(rows, min_size=1, max_size=5), st.integers(0, 4), st.binary(max_size=200))
def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path_factory, batch, fail_at, old):
    out = tmp_path_factory.mktemp("jsonl") / "rows.jsonl"
    out.write_bytes(old)

    def failing():
        for i, row in enumerate(batch):
            if i == min(fail_at, len(batch) - 1):
                raise RuntimeError("the export broke")
            yield row

    with pytest.raises(RuntimeError):
        write_jsonl(failing(), out)
    assert out.read_bytes() == old
    assert sorted(os.listdir(out.parent)) == ["rows.jsonl"]


messages = st.builds(lambda role, content: Message(role=role, content=content),
                     st.sampled_from(["system", "user", "assistant"]), texts)


@SETTINGS
@given(st.lists(messages, min_size=1, max_size=4), messages, messages, st.booleans(),
       st.sampled_from(["trl", "openai"]))
def test_every_format_of_any_text_writes_readable_rows(tmp_path_factory, prompt, chosen, rejected, label, fmt):
    examples = [SFTExample(messages=[*prompt, chosen]), DPOExample(prompt=prompt, chosen=chosen, rejected=rejected)]
    if fmt == "trl":
        examples.append(KTOExample(prompt=prompt, completion=chosen, label=label))
    formatted = [valid_json(format_row(example, fmt, None)) for example in examples]
    out = tmp_path_factory.mktemp("formats") / "rows.jsonl"
    write_jsonl(formatted, out)
    back = _read_back(out)
    assert back == formatted
    assert all(json.dumps(row, ensure_ascii=False).encode("utf-8") for row in back)


@SETTINGS
@given(st.binary(max_size=300))
def test_the_output_check_takes_any_bytes(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("sniff")
    out = folder / "out.jsonl"
    out.write_bytes(data)
    reason = not_jsonl_reason(out)  # never raises
    if reason is None:  # accepted: empty, or text whose first line is a JSON object
        text = data.decode("utf-8")
        first = text.lstrip().split("\n", 1)[0]
        assert not first.strip() or isinstance(json.loads(first), dict)
    # Any content behind a DuckDB header is refused, whatever the name.
    duck = folder / "duck.jsonl"
    duck.write_bytes(data[:8].ljust(8, b"\0") + b"DUCK" + data[8:])
    with pytest.raises(ValueError, match="DuckDB database"):
        check_output_path(duck, folder / "josh.duckdb")


@SETTINGS
@given(values)
def test_jsonl_lines_and_valid_text_keep_what_is_valid(value):
    line = jsonl_line(value)
    assert line.endswith("\n") and len(line.splitlines()) == 1
    assert json.loads(line) == valid_json(value)
    text = json.dumps(value, ensure_ascii=False)
    if not any(0xD800 <= ord(ch) <= 0xDFFF for ch in text):
        assert valid_text(text) is text  # nothing to replace: the very same string
