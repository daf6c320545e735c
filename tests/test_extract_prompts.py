"""Exported prompts start with exactly what the agent sent at inference (demonstration
included), or with the system prompt alone on request; databases from before the
prompt_messages column upgrade and fall back to the system prompt."""

from __future__ import annotations

import json

import duckdb
import pytest
from model_fixtures import ScriptedBackend

from josh_core.extract import ExportOptions, export_dataset
from josh_core.llm.structured import format_react
from josh_core.policies.agenda_user import AgendaUser
from josh_core.policies.react_agent import ReactAgent
from josh_core.rollout import RolloutConfig, start_run
from josh_core.storage import reads
from josh_core.storage.db import Database
from josh_core.storage.schema import MIGRATIONS, migrate


@pytest.fixture()
def react_run(tmp_path, toolwoz_data):
    """A plain two-turn rollout of a ReACT agent over a scripted backend."""
    from josh_core.envs.toolwoz.scenarios import load_split

    scenario = load_split("train", limit=1)[0]
    call = {"name": "search_restaurant", "parameters": {"food": "korean"}}
    backend = ScriptedBackend([
        format_react("search", call=call),
        format_react("tell", speak="I found some places. Which area?"),
        format_react("ask", speak="Anything else?"),
    ])
    agent = ReactAgent(backend, constrained=False)
    db_path = tmp_path / "run.duckdb"
    config = RolloutConfig(josh=False, max_turns=2, split="train", limit=1)
    start_run(db_path, [scenario], config, agent=agent, user=AgendaUser())
    return db_path, backend


def _rows(db_path, tmp_path, **options):
    out = tmp_path / "out.jsonl"
    export_dataset(Database(db_path), ExportOptions(min_reward=None, **options), out)
    return [json.loads(line) for line in out.read_text().splitlines()]


def _plain(messages):
    return [{"role": m.role, "content": m.content} for m in messages]


def test_exported_prompts_are_exactly_what_the_backend_was_sent(react_run, tmp_path):
    db_path, backend = react_run
    rows = _rows(db_path, tmp_path, kind="kto")
    assert len(rows) == len(backend.requests) == 3
    for row, request in zip(rows, backend.requests):
        assert [{"role": m["role"], "content": m["content"]} for m in row["prompt"]] == _plain(request.messages)
    # The demonstration is in there (ReACT sends it), after the system prompt.
    first = rows[0]["prompt"]
    assert first[0]["role"] == "system" and len(first) > 3
    assert any("example lodge" in m["content"] for m in first)


def test_sft_conversation_starts_with_the_agent_prompt(react_run, tmp_path):
    db_path, backend = react_run
    (row,) = _rows(db_path, tmp_path, kind="sft")
    prefix = _plain(backend.requests[0].messages)
    assert [{"role": m["role"], "content": m["content"]} for m in row["messages"][: len(prefix)]] == prefix


def test_system_only_prompts(react_run, tmp_path):
    db_path, backend = react_run
    rows = _rows(db_path, tmp_path, kind="kto", prompt="system")
    system = backend.requests[0].messages[0]
    first = rows[0]["prompt"]
    assert first[0] == {"role": "system", "content": system.content}
    assert not any("example lodge" in m["content"] for m in first)
    assert first[1]["role"] == "user" and not first[1]["content"].startswith("Hi! I am looking for a cheap guesthouse")


def test_conversations_without_prompt_messages_export_the_system_prompt(react_run, tmp_path):
    """What a conversation stored before schema version 2 looks like: no prompt_messages."""
    db_path, backend = react_run
    con = duckdb.connect(str(db_path))
    try:
        con.execute("UPDATE conversations SET prompt_messages = NULL")
    finally:
        con.close()
    rows = _rows(db_path, tmp_path, kind="kto")
    first = rows[0]["prompt"]
    assert first[0] == {"role": "system", "content": backend.requests[0].messages[0].content}
    assert not any("example lodge" in m["content"] for m in first)


def test_a_database_from_before_prompt_messages_is_upgraded(tmp_path):
    """Version-1 databases gain the prompt_messages column when opened."""
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    try:
        migrate(con, MIGRATIONS[:1])
        columns = [r[0] for r in con.execute("DESCRIBE conversations").fetchall()]
        assert "prompt_messages" not in columns
    finally:
        con.close()
    db = Database(path)
    db.ensure_schema()
    assert reads.schema_version(db) == MIGRATIONS[-1].version
    con = duckdb.connect(str(path))
    try:
        columns = [r[0] for r in con.execute("DESCRIBE conversations").fetchall()]
    finally:
        con.close()
    assert "prompt_messages" in columns
