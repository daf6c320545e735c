"""The self-training loop's stage records (`selftrain_stages`): what ran, with what result.

A stage is started (status 'running', its result so far, e.g. the run id it plays) before its
work and finished ('done' with its result) after, so a killed loop knows which stage to
resume and with which run."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from josh_core.storage.db import Database


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def get_stages(db: Database, experiment: str) -> dict[tuple[int, str], dict[str, Any]]:
    """(round, stage) -> {status, result, seconds, started_at, finished_at} of an experiment."""
    if not db.path.exists():
        return {}

    def read(con):
        exists = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_catalog = current_database() "
            "AND table_name = 'selftrain_stages'"
        ).fetchone()[0]
        if not exists:
            return []
        return con.execute(
            "SELECT round, stage, status, result, seconds, started_at, finished_at FROM selftrain_stages "
            "WHERE experiment = ? ORDER BY round, started_at",
            [experiment],
        ).fetchall()

    out = {}
    for rnd, stage, status, result, seconds, started, finished in db.read(read):
        out[(rnd, stage)] = {"status": status, "result": json.loads(result) if result else {},
                             "seconds": seconds, "started_at": started, "finished_at": finished}
    return out


def list_experiments(db: Database) -> list[str]:
    def read(con):
        exists = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_catalog = current_database() "
            "AND table_name = 'selftrain_stages'"
        ).fetchone()[0]
        if not exists:
            return []
        return [r[0] for r in con.execute(
            "SELECT experiment FROM selftrain_stages GROUP BY experiment ORDER BY min(started_at)").fetchall()]

    return db.read(read) if db.path.exists() else []


def start_stage(db: Database, experiment: str, rnd: int, stage: str, result: dict[str, Any]) -> None:
    """Mark a stage running (keeping its first start time when it is resumed)."""

    def write(con):
        row = con.execute(
            "SELECT started_at FROM selftrain_stages WHERE experiment = ? AND round = ? AND stage = ?",
            [experiment, rnd, stage],
        ).fetchone()
        if row is None:
            con.execute(
                "INSERT INTO selftrain_stages (experiment, round, stage, status, started_at, result) "
                "VALUES (?, ?, ?, 'running', ?, ?)",
                [experiment, rnd, stage, _now(), json.dumps(result)],
            )
        else:
            con.execute(
                "UPDATE selftrain_stages SET status = 'running', result = ?, finished_at = NULL "
                "WHERE experiment = ? AND round = ? AND stage = ?",
                [json.dumps(result), experiment, rnd, stage],
            )

    db.write(write)


def finish_stage(db: Database, experiment: str, rnd: int, stage: str, result: dict[str, Any],
                 seconds: float, status: str = "done") -> None:
    def write(con):
        con.execute(
            "UPDATE selftrain_stages SET status = ?, result = ?, seconds = coalesce(seconds, 0) + ?, "
            "finished_at = ? WHERE experiment = ? AND round = ? AND stage = ?",
            [status, json.dumps(result), seconds, _now(), experiment, rnd, stage],
        )

    db.write(write)
