"""SFT / KTO / DPO extraction: every exported line of a small tree, checked by hand."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from engine_fixtures import ToyEnv, call, speak, store_conversations, user
from josh_core.extract import ExportOptions, export_dataset, extract_rows, load_sources
from josh_core.policies.base import AgentTurn, Generation
from josh_core.policies.prompts import react_format_feedback
from josh_core.policies.script import ScriptAgent
from josh_core.search.engine import SearchConfig
from josh_core.storage import reads, writes
from josh_core.storage.db import Database
from josh_core.types import Message, ToolCall

GOALS = [("search_hotel", {"area": "north"}), ("book_hotel", {"name": "x"})]

A0, B0 = speak("A0"), speak("B0")
NORTH, SOUTH = call("search_hotel", area="north"), call("search_hotel", area="south")
BOOK, BOGUS = call("book_hotel", name="x"), call("bogus")
SAY_N, SAY_S, BOOKED, SORRY = speak("N"), speak("S"), speak("booked"), speak("sorry")
RET_N = 'APIRETURN [{"api": "search_hotel", "area": "north"}]'
RET_S = 'APIRETURN [{"api": "search_hotel", "area": "south"}]'
RET_BOOK = 'APIRETURN [{"api": "book_hotel", "name": "x"}]'
RET_BOGUS = "APIRETURN ERROR: no API named bogus"


def two_goal_agent() -> ScriptAgent:
    return ScriptAgent(
        [
            [[A0], [B0]],
            [[SOUTH, SAY_S], [NORTH, SAY_N]],
            [[BOOK, BOOKED], [BOGUS, SORRY]],
        ]
    )


def s(text):
    return {"role": "system", "content": text}


def u(text):
    return {"role": "user", "content": text}


def a(text):
    return {"role": "assistant", "content": text}


SYS = s("SYS")
AFTER_U1 = [SYS, u("user says 0"), a(A0), u("user says 1")]
AFTER_U2 = AFTER_U1 + [a(NORTH), u(RET_N), a(SAY_N), u("user says 2")]


@pytest.fixture()
def db(tmp_path):
    database = Database(tmp_path / "x.duckdb")
    store_conversations(database, [(two_goal_agent(), user(), ToyEnv(GOALS), None)])
    return database


@pytest.fixture(scope="module")
def shared_db(tmp_path_factory):
    """The same tree, for tests that only read."""
    database = Database(tmp_path_factory.mktemp("extract") / "x.duckdb")
    store_conversations(database, [(two_goal_agent(), user(), ToyEnv(GOALS), None)])
    return database


def rows(db, kind, fmt="trl", **options):
    return extract_rows(load_sources(db), ExportOptions(kind=kind, format=fmt, **options))[0]


def test_sft_is_the_ideal_path(shared_db):
    db = shared_db
    expected = {"messages": AFTER_U2 + [a(BOOK), u(RET_BOOK), a(BOOKED)]}
    assert rows(db, "sft") == [expected]
    assert rows(db, "sft", "openai") == [expected]  # no tool calls: the same messages


def test_kto_rows(shared_db):
    db = shared_db
    assert rows(db, "kto") == [
        # desirable: every generation of the ideal path's agent turns
        {"prompt": [SYS, u("user says 0")], "completion": [a(A0)], "label": True},
        {"prompt": AFTER_U1, "completion": [a(NORTH)], "label": True},
        {"prompt": AFTER_U1 + [a(NORTH), u(RET_N)], "completion": [a(SAY_N)], "label": True},
        {"prompt": AFTER_U2, "completion": [a(BOOK)], "label": True},
        {"prompt": AFTER_U2 + [a(BOOK), u(RET_BOOK)], "completion": [a(BOOKED)], "label": True},
        # undesirable: the alternatives from ideal user turns that earned nothing; the partial
        # credit turn (0.1.0.1) and the pruned branch below 0.1 give none
        {"prompt": [SYS, u("user says 0")], "completion": [a(B0)], "label": False},
        {"prompt": AFTER_U1, "completion": [a(SOUTH)], "label": False},
        {"prompt": AFTER_U1 + [a(SOUTH), u(RET_S)], "completion": [a(SAY_S)], "label": False},
        {"prompt": AFTER_U2, "completion": [a(BOGUS)], "label": False},
        {"prompt": AFTER_U2 + [a(BOGUS), u(RET_BOGUS)], "completion": [a(SORRY)], "label": False},
    ]
    with pytest.raises(ValueError, match="no KTO format"):
        rows(db, "kto", "openai")


def test_dpo_rows(shared_db):
    db = shared_db
    assert rows(db, "dpo") == [
        {"prompt": [SYS, u("user says 0")], "chosen": [a(A0)], "rejected": [a(B0)]},
        {"prompt": AFTER_U1, "chosen": [a(NORTH)], "rejected": [a(SOUTH)]},
        {"prompt": AFTER_U2, "chosen": [a(BOOK)], "rejected": [a(BOGUS)]},
    ]
    assert rows(db, "dpo", "openai")[1] == {
        "input": {"messages": AFTER_U1},
        "preferred_output": [a(NORTH)],
        "non_preferred_output": [a(SOUTH)],
    }


def test_reward_filter_and_dedup(tmp_path):
    db = Database(tmp_path / "x.duckdb")
    half = ScriptAgent([[[A0], [B0]], [[SOUTH, SAY_S], [NORTH, SAY_N]], [[SORRY]]])
    store_conversations(
        db,
        [
            (two_goal_agent(), user(), ToyEnv(GOALS), None),
            (two_goal_agent(), user(), ToyEnv(GOALS), None),  # the same tree again
            (half, user(4), ToyEnv(GOALS), None),  # reaches 50%
        ],
    )
    assert [src.reward for src in load_sources(db)] == [1.0, 1.0, 0.5]
    assert len(rows(db, "sft")) == 1  # de-duplicated, and the 50% conversation filtered out
    assert len(rows(db, "kto")) == 10
    # Trees are loaded a chunk at a time; the rows do not depend on the chunk size.
    assert extract_rows(load_sources(db, chunk=1), ExportOptions(kind="kto"))[0] == rows(db, "kto")
    everything = rows(db, "sft", min_reward=None)
    assert len(everything) == 2
    # The 50% tree's ideal path ends at its only goal.
    assert everything[1]["messages"][-3:] == [a(NORTH), u(RET_N), a(SAY_N)]


def test_turns_with_errors_are_not_positives(tmp_path):
    db = Database(tmp_path / "x.duckdb")
    agent = ScriptAgent([[["PLAN oops <COMMAND_END>", NORTH, SAY_N], [B0]], [[BOOK, BOOKED]]])
    store_conversations(db, [(agent, user(), ToyEnv(GOALS), None)])
    assert rows(db, "sft") == []
    assert rows(db, "dpo") == []
    kto = rows(db, "kto")
    # The erroneous first turn gives no desirable rows; the later clean turn does.
    assert [(r["completion"][0]["content"], r["label"]) for r in kto] == [
        (BOOK, True), (BOOKED, True), (B0, False)
    ]
    kept = rows(db, "sft", drop_errors=False)[0]["messages"]
    feedback = react_format_feedback("PLAN was not followed by APICALL or SPEAK")
    assert kept[2:4] == [a("PLAN oops <COMMAND_END>"), u(feedback)]


def test_conflicting_kto_labels_keep_desirable_and_dpo_skips_shared_prefix(tmp_path):
    db = Database(tmp_path / "x.duckdb")
    agent = ScriptAgent([[[NORTH, SAY_N], [NORTH, SAY_S]], [[BOOK, BOOKED]]])
    store_conversations(db, [(agent, user(), ToyEnv(GOALS), None)])
    # Both alternatives reach the goal (partial credit): no negatives at all.
    assert rows(db, "dpo") == [] and all(r["label"] for r in rows(db, "kto"))

    db2 = Database(tmp_path / "y.duckdb")
    agent = ScriptAgent([[[SOUTH, SAY_N], [SOUTH, SAY_S]], [[NORTH, BOOK, BOOKED]]])
    store_conversations(db2, [(agent, user(), ToyEnv(GOALS), None)])
    start = [SYS, u("user says 0")]
    # Same first generation, same API return: the pair is taken at the first difference.
    assert rows(db2, "dpo") == [
        {"prompt": start + [a(SOUTH), u(RET_S)], "chosen": [a(SAY_N)], "rejected": [a(SAY_S)]}
    ]
    kto = rows(db2, "kto")
    south = [r for r in kto if r["completion"] == [a(SOUTH)]]
    assert south == [{"prompt": start, "completion": [a(SOUTH)], "label": True}]
    assert {"prompt": start + [a(SOUTH), u(RET_S)], "completion": [a(SAY_S)], "label": False} in kto


def test_annotations_override_labels(db):
    conversation = reads.list_conversations(db)[0]
    writes.add_annotation(db, node_id=f"{conversation.id}:0.1", conversation_id=conversation.id,
                          label="unexplored", author="reviewer")
    assert len(rows(db, "dpo")) == 2 and len(rows(db, "kto")) == 9
    assert len(extract_rows(load_sources(db, use_annotations=False), ExportOptions(kind="dpo"))[0]) == 3
    writes.add_annotation(db, node_id=f"{conversation.id}:0.0.0.1", conversation_id=conversation.id,
                          label="negative", author="reviewer")
    assert rows(db, "sft") == []  # part of the ideal path was relabelled


class FunctionCallingAgent:
    """Emits OpenAI-style tool calls (function-calling agents' internal format)."""

    name = "fc-script"

    def system_prompt(self, env):
        return "SYS"

    async def act(self, ctx):
        call_msg = Message(role="assistant", content="", tool_calls=[
            ToolCall(name="search_hotel", parameters={"area": "north" if ctx.child_index == 0 else "east"}, id="c1")
        ])
        record = ctx.env.execute(call_msg.tool_calls[0])
        tool_msg = Message(role="tool", content=record.result.as_text(), tool_call_id="c1")
        answer = Message(role="assistant", content="found one")
        return AgentTurn(
            generations=[Generation(text="", message=call_msg, action="apicall"),
                         Generation(text="found one", message=answer, action="speak")],
            internal=[call_msg, tool_msg, answer], api_calls=[record], speak="found one",
        )


def test_function_calling_formats_carry_tools(tmp_path):
    db = Database(tmp_path / "x.duckdb")
    env = ToyEnv([("search_hotel", {"area": "north"})])
    store_conversations(db, [(FunctionCallingAgent(), user(), env, None)])
    trl = rows(db, "sft")[0]
    assert trl["tools"] == env.tools()
    assert trl["messages"][2] == {
        "role": "assistant", "content": "",
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "search_hotel", "arguments": {"area": "north"}}}],
    }
    assert trl["messages"][3] == {"role": "tool", "content": '[{"api": "search_hotel", "area": "north"}]',
                                  "tool_call_id": "c1"}
    openai = rows(db, "sft", "openai")[0]
    assert openai["messages"][2]["tool_calls"][0]["function"]["arguments"] == '{"area": "north"}'
    assert openai["tools"] == env.tools()
    dpo = rows(db, "dpo", "openai")[0]
    assert dpo["input"]["tools"] == env.tools()
    assert dpo["non_preferred_output"][0]["tool_calls"][0]["function"]["arguments"] == '{"area": "east"}'
    assert rows(db, "kto")[0]["tools"] == env.tools()


def test_plain_rollouts_export_their_whole_path(tmp_path):
    db = Database(tmp_path / "x.duckdb")
    agent = ScriptAgent([[[A0]], [[NORTH, SAY_N]], [[BOOK, BOOKED]]])
    store_conversations(db, [(agent, user(), ToyEnv(GOALS), SearchConfig.plain())], kind="plain")
    assert rows(db, "sft") == [{"messages": AFTER_U2 + [a(BOOK), u(RET_BOOK), a(BOOKED)]}]
    assert rows(db, "dpo") == [] and {r["label"] for r in rows(db, "kto")} == {True}


def test_josh_export_command_writes_jsonl_and_records_it(db, tmp_path):
    from josh_core.cli import app

    out = tmp_path / "kto.jsonl"
    result = CliRunner().invoke(app, ["export", "--db", str(db.path), "--kind", "kto", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 10 kto rows (trl) from 1 of 1 finished conversations" in result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines == rows(db, "kto")
    run_id = reads.list_runs(db)[0].id
    result = CliRunner().invoke(app, ["export", "--db", str(db.path), "--kind", "dpo", "--format", "openai",
                                      "--out", str(tmp_path / "dpo.jsonl"), "--run", run_id])
    assert result.exit_code == 0, result.output
    bad = CliRunner().invoke(app, ["export", "--db", str(db.path), "--kind", "kto", "--format", "openai",
                                   "--out", str(tmp_path / "no.jsonl")])
    assert bad.exit_code == 1 and not (tmp_path / "no.jsonl").exists()
    exports = reads.list_exports(db)
    assert [(e.kind, e.format, e.rows, e.conversations, e.run_id) for e in exports] == [
        ("kto", "trl", 10, 1, None), ("dpo", "openai", 3, 1, run_id)
    ]
    assert exports[0].path == str(out.resolve()) and exports[0].options["min_reward"] == 1.0


def test_export_dataset_counts(db, tmp_path):
    summary = export_dataset(db, ExportOptions(kind="sft"), tmp_path / "sft.jsonl")
    assert (summary.rows, summary.conversations, summary.considered) == (1, 1, 1)
