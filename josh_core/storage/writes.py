"""Every write to the database: runs, conversations, tree nodes as they are made, annotations,
exports. All statements are parameterised."""

from __future__ import annotations

import asyncio
import concurrent.futures
import secrets
from datetime import datetime, timezone
from typing import Any

import duckdb

from josh_core.search.engine import StepEvent
from josh_core.search.labels import LABELS
from josh_core.search.tree import ConversationTree, Node
from josh_core.storage.codec import (
    API_CALL_COLUMNS,
    NODE_COLUMNS,
    REWARD_EVENT_COLUMNS,
    api_call_rows,
    dumps,
    node_row,
    text,
    reward_event_row,
)
from josh_core.storage.db import Database


def _now() -> datetime:
    """Naive UTC, as stored."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def insert_rows(
    con: duckdb.DuckDBPyConnection, table: str, columns: str, rows: list[list[Any]], chunk: int = 100
) -> None:
    """Insert rows with one multi-row VALUES statement per chunk (several times faster than
    `executemany` in DuckDB). `table` and `columns` are constants of this module."""
    width = len(columns.split(","))
    row_placeholder = "(" + ", ".join("?" for _ in range(width)) + ")"
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        con.execute(
            f"INSERT INTO {table} ({columns}) VALUES " + ", ".join([row_placeholder] * len(part)),
            [value for row in part for value in row],
        )


def new_run_id() -> str:
    return f"run-{_now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"  # UTC time


def conversation_id(run_id: str, position: int) -> str:
    return f"{run_id}:{position}"


# -- runs and conversations -----------------------------------------------------------------


def create_run(
    db: Database,
    *,
    kind: str,
    config: dict[str, Any],
    scenarios: list[tuple[str, dict[str, Any] | None]],
    agent_spec: str | None = None,
    user_spec: str | None = None,
    agent_name: str | None = None,
    user_name: str | None = None,
    seed: int | None = None,
    code_revision: str | None = None,
    run_id: str | None = None,
) -> str:
    """Record a run and its conversations (one per (scenario id, scenario JSON), pending)."""
    run_id = run_id or new_run_id()

    def write(con: duckdb.DuckDBPyConnection) -> None:
        con.execute(
            "INSERT INTO runs (id, created_at, kind, status, agent_spec, user_spec, agent_name, "
            "user_name, seed, config, code_revision) VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?)",
            [run_id, _now(), kind, agent_spec, user_spec, agent_name, user_name, seed,
             dumps(config), code_revision],
        )
        insert_rows(
            con,
            "conversations",
            "id, run_id, position, scenario_id, scenario, status",
            [
                [conversation_id(run_id, i), run_id, i, scenario_id, dumps(scenario), "pending"]
                for i, (scenario_id, scenario) in enumerate(scenarios)
            ],
        )

    db.write(write)
    return run_id


def set_run_status(db: Database, run_id: str, status: str) -> None:
    finished = _now() if status == "done" else None
    db.write(
        lambda con: con.execute(
            "UPDATE runs SET status = ?, finished_at = ? WHERE id = ?", [status, finished, run_id]
        ),
        checkpoint=True,
    )


def mark_interrupted(db: Database, run_id: str) -> None:
    """A run stopped by a signal: the run and its conversations in flight are `interrupted`
    (a resume replays those conversations from their start)."""

    def write(con: duckdb.DuckDBPyConnection) -> None:
        con.execute("UPDATE runs SET status = 'interrupted', finished_at = NULL WHERE id = ?", [run_id])
        con.execute(
            "UPDATE conversations SET status = 'interrupted' WHERE run_id = ? AND status = 'running'", [run_id]
        )

    db.write(write, checkpoint=True)


def start_conversation(
    db: Database,
    conversation_id: str,
    *,
    system_prompt: str | None,
    tools: list[dict[str, Any]] | None,
    prompt_messages: list[dict[str, Any]] | None = None,
    seed: int,
    goals: list[str],
    worker: str | None = None,
) -> None:
    """Mark a conversation running, dropping whatever an interrupted attempt left of it.
    `worker`: the worker of a distributed run that plays it (None in one process)."""

    def write(con: duckdb.DuckDBPyConnection) -> None:
        for table in ("api_calls", "reward_events", "nodes"):
            con.execute(f"DELETE FROM {table} WHERE conversation_id = ?", [conversation_id])
        con.execute(
            "UPDATE conversations SET status = 'running', stop_reason = NULL, reward = 0, "
            "success = NULL, goals = ?, goals_reached = '[]', score = NULL, system_prompt = ?, "
            "prompt_messages = ?, tools = ?, seed = ?, steps = 0, node_count = 0, started_at = ?, finished_at = NULL, "
            "seconds = NULL, error = NULL, worker = ? WHERE id = ?",
            [dumps(goals), text(system_prompt), dumps(prompt_messages), dumps(tools), seed, _now(), worker,
             conversation_id],
        )

    db.write(write)


def finish_conversation(
    db: Database, tree: ConversationTree, *, seconds: float, score: dict[str, Any] | None = None,
    reward: float | None = None, success: bool | None = None,
) -> None:
    """Mark a conversation done. Its reward and success are the tree's (goal calls reached)
    unless given: plain runs of environments rewarded by the end state store that (τ²)."""
    reached = [e.goal_id for e in tree.goal_events()]
    if success is None:
        success = bool(tree.goal_ids) and not tree.remaining_goals
    if reward is None:
        reward = tree.reward
    db.write(
        lambda con: con.execute(
            "UPDATE conversations SET status = 'done', stop_reason = ?, reward = ?, success = ?, "
            "goals_reached = ?, score = ?, steps = ?, node_count = ?, finished_at = ?, seconds = ? "
            "WHERE id = ?",
            [tree.stop_reason, reward, success, dumps(reached), dumps(score), tree.step,
             len(tree.nodes), _now(), seconds, tree.conversation_id],
        ),
        checkpoint=True,
    )


def fail_conversation(db: Database, conversation_id: str, error: str) -> None:
    db.write(
        lambda con: con.execute(
            "UPDATE conversations SET status = 'failed', error = ?, finished_at = ? WHERE id = ?",
            [text(error), _now(), conversation_id],
        ),
        checkpoint=True,
    )


# -- tree nodes -------------------------------------------------------------------------------


def insert_nodes(con: duckdb.DuckDBPyConnection, nodes: list[Node]) -> None:
    insert_rows(con, "nodes", NODE_COLUMNS, [node_row(node) for node in nodes])
    insert_rows(con, "api_calls", API_CALL_COLUMNS, [r for node in nodes for r in api_call_rows(node)])


def save_tree(db: Database, tree: ConversationTree) -> None:
    """Write a whole tree at once (trees built in memory, e.g. by tests or imports)."""

    def write(con: duckdb.DuckDBPyConnection) -> None:
        insert_nodes(con, list(tree.nodes.values()))
        _write_step_state(con, tree, tree.reward_events)

    db.write(write)


def _write_step_state(con: duckdb.DuckDBPyConnection, tree: ConversationTree, events: list) -> None:
    insert_rows(con, "reward_events", REWARD_EVENT_COLUMNS, [reward_event_row(e) for e in events])
    con.execute(
        "UPDATE conversations SET reward = ?, steps = ?, node_count = ? WHERE id = ?",
        [tree.reward, tree.step, len(tree.nodes), tree.conversation_id],
    )


class TreeWriter:
    """The search's `TreeSink` for storage, off the search's critical path.

    Nodes are buffered as they are made and written with their step: one transaction per step
    (nodes, status changes, reward events, the conversation's counters), run in a worker thread
    while the search goes on with the next step. Writes stay in step order: a step's write waits
    for the previous one. The last step's write is awaited (`flush`), so a finished
    conversation is on disk before it is marked done. A killed run loses the conversation in
    flight, which a resume replays from its start, as before.

    Measured (bench/bench_engine.py, 100 ms per policy call): writing every node as it was made,
    each awaited by its node, added 40-70% to the in-memory wall time; per-step background
    writes add a few percent.
    """

    def __init__(self, db: Database):
        self.db = db
        self._pending: list[Node] = []
        self._events_written = 0
        # One writer thread per conversation, not an event-loop task: a caller may drive each
        # step with its own asyncio.run(), and a write must outlive the loop that started it.
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tree-writer")
        self._write: concurrent.futures.Future | None = None

    async def node_created(self, node: Node) -> None:
        self._pending.append(node)  # written with its step, by step_done

    async def step_done(self, tree: ConversationTree, event: StepEvent) -> None:
        # Snapshot now: nodes are mutable and the next step may change their status.
        nodes, self._pending = self._pending, []
        node_rows = [node_row(node) for node in nodes]
        call_rows = [r for node in nodes for r in api_call_rows(node)]
        new_events = tree.reward_events[self._events_written :]
        self._events_written = len(tree.reward_events)
        by_status: dict[str, list[str]] = {}
        fresh = {node.id for node in nodes}
        for nid in [*event.pruned, *event.ended]:
            if nid not in fresh:  # fresh rows already carry their status
                by_status.setdefault(tree.nodes[nid].status, []).append(nid)
        counters = (tree.reward, tree.step, len(tree.nodes), tree.conversation_id)
        event_rows = [reward_event_row(e) for e in new_events]

        def write(con: duckdb.DuckDBPyConnection) -> None:
            insert_rows(con, "nodes", NODE_COLUMNS, node_rows)
            insert_rows(con, "api_calls", API_CALL_COLUMNS, call_rows)
            for status, ids in by_status.items():
                con.execute("UPDATE nodes SET status = ? WHERE list_contains(?, id)", [status, ids])
            insert_rows(con, "reward_events", REWARD_EVENT_COLUMNS, event_rows)
            con.execute(
                "UPDATE conversations SET reward = ?, steps = ?, node_count = ? WHERE id = ?",
                list(counters),
            )

        await self.flush()
        self._write = self._executor.submit(self.db.write, write)
        if event.done:
            await self.flush()

    async def flush(self) -> None:
        """Wait for the write under way (re-raising its error)."""
        if self._write is not None:
            write, self._write = self._write, None
            await asyncio.wrap_future(write)

    def wait(self) -> None:
        """`flush` for code outside an event loop."""
        if self._write is not None:
            write, self._write = self._write, None
            write.result()


# -- annotations and exports ----------------------------------------------------------------


def add_annotation(
    db: Database,
    *,
    node_id: str,
    conversation_id: str,
    label: str | None = None,
    comment: str | None = None,
    author: str | None = None,
) -> str:
    """A label override and/or comment on a node; the latest override of a node wins."""
    if label is not None:
        if label not in LABELS:
            raise ValueError(f"unknown label {label!r}; expected one of {', '.join(LABELS)}")
    annotation_id = f"ann-{secrets.token_hex(6)}"
    db.write(
        lambda con: con.execute(
            "INSERT INTO annotations (id, node_id, conversation_id, label, comment, author, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [annotation_id, node_id, conversation_id, label, comment, author, _now()],
        )
    )
    return annotation_id


def record_export(
    db: Database,
    *,
    kind: str,
    format: str,
    path: str,
    run_id: str | None,
    options: dict[str, Any],
    rows: int,
    conversations: int,
) -> str:
    export_id = f"exp-{secrets.token_hex(6)}"
    db.write(
        lambda con: con.execute(
            "INSERT INTO exports (id, created_at, kind, format, path, run_id, options, rows, "
            "conversations) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [export_id, _now(), kind, format, path, run_id, dumps(options), rows, conversations],
        ),
        checkpoint=True,
    )
    return export_id
