"""Every read from the database, as pydantic records, trees or pandas DataFrames.

Each function attaches the file read-only for the duration of one call (see db.py), so the
app can call them while a rollout in another process is writing.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import duckdb
import pandas as pd

from josh_core.search.tree import ConversationTree
from josh_core.storage.annotations import resolved_labels
from josh_core.storage.codec import (
    API_CALL_COLUMNS,
    NODE_COLUMNS,
    REWARD_EVENT_COLUMNS,
    api_call_from_row,
    from_db_time,
    loads,
    node_from_row,
    reward_event_from_row,
)
from josh_core.storage.db import Database
from josh_core.storage.models import AnnotationRecord, ConversationRecord, ExportRecord, RunRecord

_RUN_JSON = ("config",)
_CONVERSATION_JSON = ("scenario", "goals", "goals_reached", "score", "tools", "prompt_messages")


def _dicts(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> list[dict]:
    cursor = con.execute(sql, params or [])
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def _decode(row: dict[str, Any], json_columns: tuple[str, ...]) -> dict[str, Any]:
    for column, value in row.items():
        row[column] = loads(value) if column in json_columns else from_db_time(value)
    return row


# -- runs -------------------------------------------------------------------------------------


def list_runs(db: Database) -> list[RunRecord]:
    rows = db.read(lambda con: _dicts(con, "SELECT * FROM runs ORDER BY created_at, id"))
    return [RunRecord(**_decode(row, _RUN_JSON)) for row in rows]


def get_run(db: Database, run_id: str) -> RunRecord:
    rows = db.read(lambda con: _dicts(con, "SELECT * FROM runs WHERE id = ?", [run_id]))
    if not rows:
        raise KeyError(f"no run {run_id!r} in {db.path}")
    return RunRecord(**_decode(rows[0], _RUN_JSON))


def runs_frame(db: Database) -> pd.DataFrame:
    """One row per run with its conversation counts and average reward of finished ones."""
    return db.read(
        lambda con: con.execute(
            "SELECT r.id, r.created_at, r.kind, r.status, r.agent_spec, r.user_spec, "
            "r.agent_name, r.seed, count(c.id) AS conversations, "
            "count(c.id) FILTER (WHERE c.status = 'done') AS done, "
            "avg(c.reward) FILTER (WHERE c.status = 'done') AS average_reward, "
            "avg(CASE WHEN c.success THEN 1.0 ELSE 0.0 END) FILTER (WHERE c.status = 'done') "
            "AS success_rate "
            "FROM runs r LEFT JOIN conversations c ON c.run_id = r.id "
            "GROUP BY ALL ORDER BY r.created_at, r.id"
        ).df()
    )


# -- conversations ----------------------------------------------------------------------------


def _conversation_filter(run_id: str | None, status: str | None) -> tuple[str, list[Any]]:
    clauses, params = [], []
    if run_id is not None:
        clauses.append("run_id = ?")
        params.append(run_id)
    if status is not None:
        clauses.append("status = ?")
        params.append(status)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def list_conversations(
    db: Database, run_id: str | None = None, status: str | None = None
) -> list[ConversationRecord]:
    where, params = _conversation_filter(run_id, status)
    rows = db.read(
        lambda con: _dicts(
            con, f"SELECT * FROM conversations{where} ORDER BY run_id, position", params
        )
    )
    return [ConversationRecord(**_decode(row, _CONVERSATION_JSON)) for row in rows]


def conversation_list_frame(db: Database) -> pd.DataFrame:
    """One row per conversation for the conversation list: its run and agent, environment,
    outcome, size, the APIs its tree called and the kinds of error its calls got (every node
    of the tree), and its tokens."""
    return db.read(
        lambda con: con.execute(
            "WITH calls AS (SELECT conversation_id, "
            "list_sort(list_distinct(list(name) FILTER (WHERE name IS NOT NULL))) AS apis, "
            "list_sort(list_distinct(list(error_kind) FILTER (WHERE NOT ok))) AS error_kinds, "
            "count(*) AS calls, count(*) FILTER (WHERE NOT ok) AS failed_calls "
            "FROM api_calls GROUP BY conversation_id), "
            "tokens AS (SELECT conversation_id, sum(prompt_tokens) AS prompt_tokens, "
            "sum(completion_tokens) AS completion_tokens, sum(format_errors) AS format_errors "
            "FROM nodes GROUP BY conversation_id) "
            "SELECT c.id, c.run_id, r.agent_spec, "
            "coalesce(json_extract_string(c.scenario, '$.env'), json_extract_string(r.config, '$.env'), 'toolwoz') AS env, "
            "c.scenario_id, c.status, c.reward, c.success, c.node_count, c.seconds, "
            "coalesce(k.apis, []) AS apis, coalesce(k.error_kinds, []) AS error_kinds, "
            "coalesce(k.calls, 0) AS calls, coalesce(k.failed_calls, 0) AS failed_calls, "
            "coalesce(t.format_errors, 0) AS format_errors, t.prompt_tokens, t.completion_tokens "
            "FROM conversations c JOIN runs r ON r.id = c.run_id "
            "LEFT JOIN calls k ON k.conversation_id = c.id LEFT JOIN tokens t ON t.conversation_id = c.id "
            "ORDER BY c.run_id, c.position"
        ).df()
    )


def get_conversation(db: Database, conversation_id: str) -> ConversationRecord:
    rows = db.read(
        lambda con: _dicts(con, "SELECT * FROM conversations WHERE id = ?", [conversation_id])
    )
    if not rows:
        raise KeyError(f"no conversation {conversation_id!r} in {db.path}")
    return ConversationRecord(**_decode(rows[0], _CONVERSATION_JSON))


def conversations_frame(
    db: Database, run_id: str | None = None, status: str | None = None
) -> pd.DataFrame:
    """Conversations without the bulky JSON columns (scenario, prompt, tools)."""
    where, params = _conversation_filter(run_id, status)
    return db.read(
        lambda con: con.execute(
            "SELECT id, run_id, position, scenario_id, status, stop_reason, reward, success, "
            "json_array_length(goals::JSON) AS n_goals, "
            "json_array_length(goals_reached::JSON) AS n_reached, "
            f"steps, node_count, started_at, finished_at, seconds, error FROM conversations{where} "
            "ORDER BY run_id, position",
            params,
        ).df()
    )


def worker_progress(db: Database, run_id: str) -> pd.DataFrame:
    """Per worker of a distributed run (`--ray`): conversations done, failed and running, nodes
    written, and the scenarios it is playing now. Empty for a run played in one process (and for
    databases older than the `worker` column). A conversation a dead worker left is counted for
    the worker that played it again."""

    def read(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
        has_column = con.execute(
            "SELECT count(*) FROM information_schema.columns WHERE table_catalog = current_database() "
            "AND table_name = 'conversations' AND column_name = 'worker'"
        ).fetchone()[0]
        if not has_column:
            return pd.DataFrame(columns=["worker", "done", "failed", "running", "nodes", "playing"])
        return con.execute(
            "SELECT worker, count(*) FILTER (WHERE status = 'done') AS done, "
            "count(*) FILTER (WHERE status = 'failed') AS failed, "
            "count(*) FILTER (WHERE status = 'running') AS running, "
            "coalesce(sum(node_count), 0) AS nodes, "
            "coalesce(string_agg(scenario_id, ', ' ORDER BY position) FILTER (WHERE status = 'running'), '') "
            "AS playing FROM conversations WHERE run_id = ? AND worker IS NOT NULL "
            "GROUP BY worker ORDER BY min(started_at), worker",
            [run_id],
        ).df()

    return db.read(read)


# -- trees ------------------------------------------------------------------------------------


def load_trees(db: Database, conversation_ids: list[str]) -> dict[str, ConversationTree]:
    """Trees of the given conversations (one query per table for all of them)."""
    if not conversation_ids:
        return {}

    def read(con: duckdb.DuckDBPyConnection) -> tuple[list, list, list, list]:
        ids = list(conversation_ids)
        conversations = _dicts(
            con,
            "SELECT id, goals, stop_reason, status, reward, steps FROM conversations "
            "WHERE list_contains(?, id)",
            [ids],
        )
        nodes = _dicts(
            con,
            f"SELECT {NODE_COLUMNS} FROM nodes WHERE list_contains(?, conversation_id) "
            "ORDER BY conversation_id, step, depth, path",
            [ids],
        )
        calls = _dicts(
            con,
            f"SELECT {API_CALL_COLUMNS} FROM api_calls WHERE list_contains(?, conversation_id) "
            "ORDER BY node_id, position",
            [ids],
        )
        events = _dicts(
            con,
            f"SELECT {REWARD_EVENT_COLUMNS} FROM reward_events "
            "WHERE list_contains(?, conversation_id) ORDER BY conversation_id, step, kind, node_id, goal_id",
            [ids],
        )
        return conversations, nodes, calls, events

    conversations, node_rows, call_rows, event_rows = db.read(read)
    calls_by_node: dict[str, list] = defaultdict(list)
    for row in call_rows:
        calls_by_node[row["node_id"]].append(api_call_from_row(row))
    nodes_by_conversation: dict[str, list] = defaultdict(list)
    for row in node_rows:
        nodes_by_conversation[row["conversation_id"]].append(
            node_from_row(row, calls_by_node.get(row["id"], []))
        )
    events_by_conversation: dict[str, list] = defaultdict(list)
    for row in event_rows:
        events_by_conversation[row["conversation_id"]].append(reward_event_from_row(row))

    trees: dict[str, ConversationTree] = {}
    for conversation in conversations:
        cid = conversation["id"]
        trees[cid] = _assemble(
            cid,
            loads(conversation["goals"]) or [],
            nodes_by_conversation.get(cid, []),
            events_by_conversation.get(cid, []),
            conversation,
        )
    return {cid: trees[cid] for cid in conversation_ids if cid in trees}


def load_tree(db: Database, conversation_id: str) -> ConversationTree:
    trees = load_trees(db, [conversation_id])
    if conversation_id not in trees:
        raise KeyError(f"no conversation {conversation_id!r} in {db.path}")
    return trees[conversation_id]


def _assemble(cid: str, goals: list[str], nodes: list, events: list, conversation: dict) -> ConversationTree:
    # Creation order: by step, then agent turns before user turns, each in beam/child order.
    nodes.sort(key=lambda n: (n.step, n.kind != "agent", n.path_key()))
    # Reward events as the search made them: by step, the root's goals, then partial credit in
    # tree order; goals in goal-list order.
    path_of = {n.id: n.path_key() for n in nodes}
    goal_order = {g: i for i, g in enumerate(goals)}
    events = sorted(
        events,
        key=lambda e: (e.step, e.kind != "goal", path_of.get(e.node_id, ()), goal_order.get(e.goal_id, 0)),
    )
    goal_events = [e for e in events if e.kind == "goal"]
    reached = [e.goal_id for e in goal_events]
    roots = [n.id for n in nodes if n.depth == 0]
    for event in goal_events:
        if event.node_id not in roots:
            roots.append(event.node_id)
    children = {n.parent_id for n in nodes}
    leaves = [n.id for n in nodes if n.id not in children and n.status == "alive"]
    tree = ConversationTree(
        conversation_id=cid,
        goal_ids=goals,
        nodes={n.id: n for n in nodes},
        reward_events=events,
        roots=roots,
        leaves=leaves,
        remaining_goals=[g for g in goals if g not in reached],
        reward=conversation.get("reward") or 0.0,
        step=conversation.get("steps") or 0,
        done=conversation.get("status") == "done",
        stop_reason=conversation.get("stop_reason"),
    )
    return tree


def nodes_frame(
    db: Database, conversation_id: str | None = None, run_id: str | None = None
) -> pd.DataFrame:
    """Flat node table (no internal messages) for analysis and the app."""
    clauses, params = [], []
    if conversation_id is not None:
        clauses.append("n.conversation_id = ?")
        params.append(conversation_id)
    if run_id is not None:
        clauses.append("c.run_id = ?")
        params.append(run_id)
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    return db.read(
        lambda con: con.execute(
            "SELECT n.id, n.conversation_id, c.run_id, c.scenario_id, n.parent_id, n.kind, "
            "n.depth, n.child_index, n.path, n.step, n.status, n.text, n.ended, n.goals_hit, "
            "n.format_errors, n.api_errors, n.seconds, n.prompt_tokens, n.completion_tokens "
            f"FROM nodes n JOIN conversations c ON c.id = n.conversation_id{where} "
            "ORDER BY n.conversation_id, n.step, n.path",
            params,
        ).df()
    )


def api_calls_frame(
    db: Database, run_id: str | None = None, status: str | None = "done"
) -> pd.DataFrame:
    """Every API call with its goal information, conversation and run, for analysis.

    `goals` lists the goals the call completed (given the calls before it on its path);
    `node_goals_hit` the goals its node removed or shared; `scenario_goal_calls` the
    scenario's goal calls (from the stored scenario JSON).
    """
    clauses, params = [], []
    if run_id is not None:
        clauses.append("c.run_id = ?")
        params.append(run_id)
    if status is not None:
        clauses.append("c.status = ?")
        params.append(status)
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    return db.read(
        lambda con: con.execute(
            "SELECT a.conversation_id, c.run_id, c.scenario_id, a.node_id, n.step, n.depth, "
            "n.path, n.status AS node_status, a.position, a.name, a.parameters, a.raw, a.ok, "
            "a.error_kind, a.error, a.content, a.goals, n.goals_hit AS node_goals_hit, "
            "c.goals AS conversation_goals, c.reward AS conversation_reward, "
            "c.scenario::JSON -> 'goal_calls' AS scenario_goal_calls "
            "FROM api_calls a JOIN nodes n ON n.id = a.node_id "
            f"JOIN conversations c ON c.id = a.conversation_id{where} "
            "ORDER BY a.conversation_id, n.step, n.path, a.position",
            params,
        ).df()
    )


def reward_events_frame(db: Database, run_id: str | None = None) -> pd.DataFrame:
    where, params = ("", []) if run_id is None else (" WHERE c.run_id = ?", [run_id])
    return db.read(
        lambda con: con.execute(
            "SELECT e.*, c.run_id, c.scenario_id FROM reward_events e "
            f"JOIN conversations c ON c.id = e.conversation_id{where} "
            "ORDER BY e.conversation_id, e.step, e.kind, e.node_id",
            params,
        ).df()
    )


# -- annotations and exports ----------------------------------------------------------------


def list_annotations(db: Database, conversation_id: str | None = None) -> list[AnnotationRecord]:
    where, params = ("", []) if conversation_id is None else (" WHERE conversation_id = ?", [conversation_id])
    rows = db.read(
        lambda con: _dicts(con, f"SELECT * FROM annotations{where} ORDER BY created_at, id", params)
    )
    return [AnnotationRecord(**_decode(row, ())) for row in rows]


def label_overrides(db: Database, conversation_ids: list[str] | None = None) -> dict[str, str]:
    """The annotators' resolved label of every annotated node (node id -> label): each
    annotator's latest word counts once, the most given label wins, a tie goes to the latest
    (josh_core/storage/annotations.py)."""
    return resolved_labels(db, conversation_ids)


def list_exports(db: Database) -> list[ExportRecord]:
    rows = db.read(lambda con: _dicts(con, "SELECT * FROM exports ORDER BY created_at, id"))
    return [ExportRecord(**_decode(row, ("options",))) for row in rows]


def schema_version(db: Database) -> int:
    return db.read(
        lambda con: con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0]
    )
