"""DuckDB storage: schema and migrations, trees written node by node, reads, and access from
several processes at once."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time

import duckdb
import pytest

from engine_fixtures import ToyEnv, call, chatty_agent, speak, user
from josh_core.policies.script import ScriptAgent
from josh_core.search.engine import JoshSearch, SearchConfig
from josh_core.storage import reads, writes
from josh_core.storage.db import Database, DatabaseBusy
from josh_core.storage.schema import LATEST_VERSION, MIGRATIONS, Migration, current_version, migrate

GOALS = [("search_hotel", {"area": "north"}), ("book_hotel", {"name": "x"})]


def agent() -> ScriptAgent:
    return ScriptAgent(
        [
            [[speak("A0")], [speak("B0")]],
            [[call("search_hotel", area="south"), speak("S")], [call("search_hotel", area="north"), speak("N")]],
            [[call("book_hotel", name="x"), speak("booked")], [call("bogus"), speak("sorry")]],
        ]
    )


def new_conversation(db: Database, scenario_id: str = "s1", env: ToyEnv | None = None) -> str:
    env = env or ToyEnv(GOALS)
    run_id = writes.create_run(db, kind="josh", config={"beam": 8}, scenarios=[(scenario_id, {"id": scenario_id})],
                               agent_spec="script:a.json", user_spec="script:u.json", seed=3)
    cid = writes.conversation_id(run_id, 0)
    writes.start_conversation(db, cid, system_prompt="SYSTEM", tools=env.tools(), seed=3, goals=env.goal_ids())
    return cid


def stored_search(db: Database, cid: str, agent_=None, user_=None, config=None) -> JoshSearch:
    search = JoshSearch(agent_ or agent(), user_ or user(), ToyEnv(GOALS), config=config,
                        conversation_id=cid, sink=writes.TreeWriter(db))
    asyncio.run(search.run_to_end())
    writes.finish_conversation(db, search.tree, seconds=1.5, score={"reward": search.tree.reward})
    return search


def test_tree_round_trips_exactly(tmp_path):
    db = Database(tmp_path / "t.duckdb")
    cid = new_conversation(db)
    search = stored_search(db, cid)
    loaded = reads.load_tree(db, cid)
    assert loaded.model_dump() == search.tree.model_dump()
    assert list(loaded.nodes) == list(search.tree.nodes)  # creation order too
    assert loaded.nodes[f"{cid}:0.0.0.1.0.1"].api_calls[0].result.error_kind == "unknown_api"

    conversation = reads.get_conversation(db, cid)
    assert conversation.status == "done" and conversation.reward == 1.0 and conversation.success
    assert conversation.goals == ["0:search_hotel", "1:book_hotel"] == conversation.goals_reached
    assert conversation.system_prompt == "SYSTEM" and conversation.tools[0]["type"] == "function"
    assert conversation.node_count == 12 and conversation.steps == 3 and conversation.seconds == 1.5
    assert conversation.stop_reason == "goals_done" and conversation.score == {"reward": 1.0}
    assert conversation.started_at.tzinfo is not None


def test_every_node_is_on_disk_with_its_step(tmp_path):
    """After each step's write, another reader sees exactly the nodes made so far."""
    db = Database(tmp_path / "t.duckdb")
    cid = new_conversation(db)
    writer = writes.TreeWriter(db)
    search = JoshSearch(agent(), user(), ToyEnv(GOALS), conversation_id=cid, sink=writer)
    reader = Database(db.path)
    while not search.done:
        asyncio.run(search.step())
        writer.wait()  # a step's write runs beside the next step; it is on disk once waited for
        on_disk = reads.nodes_frame(reader, conversation_id=cid)
        assert sorted(on_disk["id"]) == sorted(search.tree.nodes)
        assert dict(zip(on_disk["id"], on_disk["status"])) == {
            nid: n.status for nid, n in search.tree.nodes.items()
        }
        assert reads.get_conversation(reader, cid).reward == search.tree.reward


def test_restarting_a_conversation_replaces_its_nodes(tmp_path):
    db = Database(tmp_path / "t.duckdb")
    cid = new_conversation(db)
    writer = writes.TreeWriter(db)
    partial = JoshSearch(agent(), user(), ToyEnv(GOALS), conversation_id=cid, sink=writer)
    for _ in range(3):
        asyncio.run(partial.step())  # interrupted after the first goal
    writer.wait()
    assert len(reads.nodes_frame(db, conversation_id=cid)) == 10
    env = ToyEnv(GOALS)
    writes.start_conversation(db, cid, system_prompt="SYSTEM", tools=env.tools(), seed=3, goals=env.goal_ids())
    assert len(reads.nodes_frame(db, conversation_id=cid)) == 0
    assert reads.reward_events_frame(db).empty
    assert reads.get_conversation(db, cid).status == "running"
    complete = stored_search(db, cid)
    assert reads.load_tree(db, cid).model_dump() == complete.tree.model_dump()


def test_reads_for_analysis_and_the_app(tmp_path):
    db = Database(tmp_path / "t.duckdb")
    cid = new_conversation(db)
    stored_search(db, cid)
    (run,) = reads.list_runs(db)
    assert run.kind == "josh" and run.config == {"beam": 8} and run.seed == 3
    assert run.agent_spec == "script:a.json" and run.status == "running"
    writes.set_run_status(db, run.id, "done")
    assert reads.get_run(db, run.id).status == "done" and reads.get_run(db, run.id).finished_at

    frame = reads.runs_frame(db)
    assert frame.loc[0, "conversations"] == 1 and frame.loc[0, "average_reward"] == 1.0
    conversations = reads.conversations_frame(db, run_id=run.id)
    assert conversations.loc[0, "n_goals"] == 2 and conversations.loc[0, "n_reached"] == 2

    calls = reads.api_calls_frame(db)
    assert len(calls) == 6
    goal_calls = calls[calls["goals"] != "[]"]
    assert sorted(goal_calls["node_id"]) == sorted(
        [f"{cid}:0.0.0.1", f"{cid}:0.1.0.1", f"{cid}:0.0.0.1.0.0"]
    )
    bogus = calls[calls["name"] == "bogus"].iloc[0]
    assert not bogus["ok"] and bogus["error_kind"] == "unknown_api" and bogus["node_status"] == "pruned"

    events = reads.reward_events_frame(db, run_id=run.id)
    assert list(events["kind"]) == ["goal", "partial", "goal"]
    assert reads.list_conversations(db, run_id="nope") == []
    with pytest.raises(KeyError):
        reads.load_tree(db, "nope")


def test_annotations_latest_label_wins_and_exports_are_recorded(tmp_path):
    db = Database(tmp_path / "t.duckdb")
    cid = new_conversation(db)
    node = f"{cid}:0.1"
    writes.add_annotation(db, node_id=node, conversation_id=cid, label="unexplored", author="ana")
    time.sleep(0.002)
    writes.add_annotation(db, node_id=node, conversation_id=cid, label="partial", comment="close", author="bo")
    writes.add_annotation(db, node_id=f"{cid}:0", conversation_id=cid, comment="just a note")
    assert reads.label_overrides(db) == {node: "partial"}
    assert reads.label_overrides(db, ["other"]) == {}
    assert [a.author for a in reads.list_annotations(db, cid)] == ["ana", "bo", None]
    with pytest.raises(ValueError):
        writes.add_annotation(db, node_id=node, conversation_id=cid, label="great")
    writes.record_export(db, kind="sft", format="trl", path="/x.jsonl", run_id=None, options={"a": 1},
                         rows=4, conversations=2)
    (export,) = reads.list_exports(db)
    assert export.rows == 4 and export.options == {"a": 1}


def test_migrations_are_versioned(tmp_path):
    db = Database(tmp_path / "t.duckdb")
    assert db.ensure_schema() == LATEST_VERSION
    assert reads.schema_version(db) == LATEST_VERSION

    extra = MIGRATIONS + (
        Migration(LATEST_VERSION + 1, "node notes", ("ALTER TABLE nodes ADD COLUMN note VARCHAR",)),
    )
    con = duckdb.connect(str(db.path))
    try:
        assert migrate(con, extra) == [LATEST_VERSION + 1]
        assert migrate(con, extra) == []  # idempotent
        assert current_version(con) == LATEST_VERSION + 1
        names = [r[0] for r in con.execute("SELECT name FROM schema_migrations ORDER BY version").fetchall()]
        assert len(names) == LATEST_VERSION + 1
    finally:
        con.close()


def test_a_path_with_quotes_is_safe(tmp_path):
    db = Database(tmp_path / "it's here.duckdb")
    cid = new_conversation(db, scenario_id="x'); DROP TABLE runs; --")
    assert reads.get_conversation(db, cid).scenario_id == "x'); DROP TABLE runs; --"


def test_missing_database_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        reads.list_runs(Database(tmp_path / "absent.duckdb"))


HOLDER = textwrap.dedent(
    """
    import sys, time, duckdb
    con = duckdb.connect(sys.argv[1])
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
    con.close()
    """
)


def test_writers_wait_for_a_lock_held_by_another_process(tmp_path, monkeypatch):
    db = Database(tmp_path / "t.duckdb")
    db.ensure_schema()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db.path), "0.6"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        started = time.monotonic()
        new_conversation(db)  # waits until the holder lets go
        assert time.monotonic() - started > 0.2
        assert db.stats["lock_waits"] > 0
    finally:
        holder.wait(timeout=30)

    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db.path), "3"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        monkeypatch.setenv("JOSH_DB_LOCK_TIMEOUT", "0.2")
        with pytest.raises(DatabaseBusy):
            reads.list_runs(Database(db.path))
    finally:
        holder.kill()
        holder.wait(timeout=30)


READER = textwrap.dedent(
    """
    import os, sys
    from josh_core.storage.db import Database
    from josh_core.storage import reads
    db = Database(sys.argv[1])
    seen = [len(reads.nodes_frame(db))]
    print("ready", flush=True)
    while not os.path.exists(sys.argv[2]):
        seen.append(len(reads.nodes_frame(db)))
    seen.append(len(reads.nodes_frame(db)))
    print(len(seen), min(seen), max(seen), db.stats["lock_waits"], flush=True)
    """
)


def test_another_process_reads_while_a_search_writes(tmp_path):
    db = Database(tmp_path / "t.duckdb")
    cid = new_conversation(db)
    stop = tmp_path / "stop"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(db.path), str(stop)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    assert reader.stdout.readline().strip() == "ready"
    search = stored_search(db, cid, agent_=chatty_agent(), config=SearchConfig(max_depth=5))
    stop.touch()
    out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err
    reads_done, first, last, waits = map(int, out.split())
    # The reader saw the tree grow from nothing to every node, without ever failing.
    assert reads_done > 5 and first == 0 and last == len(search.tree.nodes)
