"""The database schema as an ordered list of migrations.

JSON values are stored as VARCHAR holding JSON text (inserting into DuckDB's JSON type costs
a cast per row, several times the insert itself); queries cast with `::JSON` where they need
JSON functions. Timestamps are naive UTC (`TIMESTAMP`); reads attach the UTC zone.

A database records every migration applied in `schema_migrations`. Opening a database for
writing applies the ones it lacks, in order, each in its own transaction. To change the schema,
append a migration (never edit an applied one).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import duckdb


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "runs, conversations, tree nodes, api calls, reward events, annotations, exports",
        (
            """CREATE TABLE runs (
                id VARCHAR PRIMARY KEY,
                created_at TIMESTAMP NOT NULL,
                kind VARCHAR NOT NULL,          -- 'josh' | 'plain'
                status VARCHAR NOT NULL,        -- 'running' | 'done' | 'incomplete' (some failed)
                agent_spec VARCHAR,
                user_spec VARCHAR,
                agent_name VARCHAR,             -- the model behind the agent
                user_name VARCHAR,
                seed BIGINT,
                config VARCHAR,                 -- JSON: everything needed to resume the run
                code_revision VARCHAR,
                finished_at TIMESTAMP
            )""",
            """CREATE TABLE conversations (
                id VARCHAR PRIMARY KEY,
                run_id VARCHAR NOT NULL,
                position INTEGER NOT NULL,      -- order within the run
                scenario_id VARCHAR NOT NULL,
                scenario VARCHAR,               -- JSON
                status VARCHAR NOT NULL,        -- 'pending' | 'running' | 'done' | 'failed'
                stop_reason VARCHAR,            -- 'goals_done' | 'max_depth' | 'user_ended'
                reward DOUBLE,
                success BOOLEAN,
                goals VARCHAR,                  -- JSON: goal ids
                goals_reached VARCHAR,          -- JSON: goal ids removed from the goal set
                score VARCHAR,                  -- JSON: the environment's score of the ideal path
                system_prompt VARCHAR,          -- the agent's, so export needs no model
                tools VARCHAR,                  -- JSON: OpenAI tools schema of the environment
                seed BIGINT,
                steps INTEGER,
                node_count INTEGER,
                started_at TIMESTAMP,
                finished_at TIMESTAMP,
                seconds DOUBLE,
                error VARCHAR
            )""",
            """CREATE TABLE nodes (
                id VARCHAR PRIMARY KEY,
                conversation_id VARCHAR NOT NULL,
                parent_id VARCHAR,
                kind VARCHAR NOT NULL,          -- 'user' | 'agent'
                depth INTEGER NOT NULL,
                child_index INTEGER NOT NULL,
                path VARCHAR NOT NULL,
                step INTEGER NOT NULL,
                status VARCHAR NOT NULL,        -- 'alive' | 'pruned' | 'ended'
                text VARCHAR,
                ended BOOLEAN,
                internal VARCHAR,               -- JSON: agent's internal messages of the turn
                generations VARCHAR,            -- JSON
                call_goals VARCHAR,             -- JSON
                goals_hit VARCHAR,              -- JSON
                format_errors INTEGER,
                api_errors INTEGER,
                seed BIGINT,
                started_at TIMESTAMP,
                seconds DOUBLE,
                prompt_tokens INTEGER,
                completion_tokens INTEGER
            )""",
            """CREATE TABLE api_calls (
                node_id VARCHAR NOT NULL,
                position INTEGER NOT NULL,      -- order within the node's turn
                conversation_id VARCHAR NOT NULL,
                name VARCHAR,                   -- NULL when the call text did not parse
                parameters VARCHAR,             -- JSON
                call_id VARCHAR,
                raw VARCHAR,
                ok BOOLEAN NOT NULL,
                content VARCHAR,                -- JSON
                error_kind VARCHAR,
                error VARCHAR,
                goals VARCHAR,                  -- JSON: goals this call completed on its path
                PRIMARY KEY (node_id, position)
            )""",
            """CREATE TABLE reward_events (
                conversation_id VARCHAR NOT NULL,
                node_id VARCHAR NOT NULL,
                goal_id VARCHAR NOT NULL,
                kind VARCHAR NOT NULL,          -- 'goal' | 'partial'
                reward DOUBLE NOT NULL,
                step INTEGER NOT NULL,
                PRIMARY KEY (node_id, goal_id)
            )""",
            """CREATE TABLE annotations (
                id VARCHAR PRIMARY KEY,
                node_id VARCHAR NOT NULL,
                conversation_id VARCHAR NOT NULL,
                label VARCHAR,                  -- a label override, or NULL for a comment
                comment VARCHAR,
                author VARCHAR,
                created_at TIMESTAMP NOT NULL
            )""",
            """CREATE TABLE exports (
                id VARCHAR PRIMARY KEY,
                created_at TIMESTAMP NOT NULL,
                kind VARCHAR NOT NULL,          -- 'sft' | 'kto' | 'dpo'
                format VARCHAR NOT NULL,        -- 'trl' | 'openai'
                path VARCHAR NOT NULL,
                run_id VARCHAR,
                options VARCHAR,                -- JSON
                rows INTEGER NOT NULL,
                conversations INTEGER NOT NULL
            )""",
        ),
    ),
)

MIGRATIONS += (
    Migration(
        2,
        "conversations.prompt_messages: everything the agent sends before the conversation",
        (
            # JSON list of messages (system prompt, demonstration turns, fence), so exported
            # prompts are exactly what the agent saw at inference, demonstration included.
            "ALTER TABLE conversations ADD COLUMN prompt_messages VARCHAR",
        ),
    ),
)

MIGRATIONS += (
    Migration(
        3,
        "trainings (one row per trainer run, metrics streamed) and selftrain stages",
        (
            """CREATE TABLE trainings (
                id VARCHAR PRIMARY KEY,
                created_at TIMESTAMP NOT NULL,
                finished_at TIMESTAMP,
                kind VARCHAR NOT NULL,          -- 'sft' | 'kto' | 'dpo'
                base VARCHAR NOT NULL,          -- the base agent SPEC (may carry @ADAPTER)
                data_path VARCHAR NOT NULL,
                data_hash VARCHAR NOT NULL,     -- sha256 of the training JSONL
                examples INTEGER NOT NULL,
                config VARCHAR NOT NULL,        -- JSON: the resolved trainer config
                adapter_path VARCHAR NOT NULL,
                status VARCHAR NOT NULL,        -- 'running' | 'done' | 'failed'
                error VARCHAR,
                seconds DOUBLE,
                metrics VARCHAR                 -- JSON list of logged dicts (step, loss, ...)
            )""",
            """CREATE TABLE selftrain_stages (
                experiment VARCHAR NOT NULL,    -- the selftrain experiment's name
                round INTEGER NOT NULL,         -- 0: the base agent's evaluation
                stage VARCHAR NOT NULL,         -- 'rollout' | 'export' | 'train' | 'eval'
                status VARCHAR NOT NULL,        -- 'running' | 'done' | 'failed'
                started_at TIMESTAMP NOT NULL,
                finished_at TIMESTAMP,
                seconds DOUBLE,
                result VARCHAR,                 -- JSON: run ids, paths, counts, metrics
                PRIMARY KEY (experiment, round, stage)
            )""",
        ),
    ),
)

MIGRATIONS += (
    Migration(
        4,
        "annotations.verdict: the annotator's word for a pair (good, bad, dont_use, skip)",
        (
            # good -> label 'ideal', bad -> 'negative', dont_use -> 'unexplored', skip -> no
            # label (the annotator saw the pair and passed); NULL for comments and for rows
            # written before this column (their label alone counts).
            "ALTER TABLE annotations ADD COLUMN verdict VARCHAR",
        ),
    ),
)

MIGRATIONS += (
    Migration(
        5,
        "conversations.worker: the worker of a distributed run (--ray) that played it",
        (
            # e.g. "w2 on 10.0.0.5 (node 3f2a1b9c, pid 4242)"; NULL for runs played in one process.
            "ALTER TABLE conversations ADD COLUMN worker VARCHAR",
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables "
        "WHERE table_catalog = current_database() AND table_name = 'schema_migrations'"
    ).fetchone()[0]
    if not exists:
        return 0
    return con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0]


def migrate(
    con: duckdb.DuckDBPyConnection, migrations: tuple[Migration, ...] = MIGRATIONS
) -> list[int]:
    """Apply the migrations the database lacks; returns the versions applied."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        "version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)"
    )
    have = current_version(con)
    applied: list[int] = []
    for migration in migrations:
        if migration.version <= have:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            for statement in migration.statements:
                con.execute(statement)
            con.execute(
                "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                [migration.version, migration.name, datetime.now(timezone.utc)],
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        applied.append(migration.version)
    return applied
