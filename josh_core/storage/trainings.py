"""The `trainings` table (schema migration 3): one row per trainer run, metrics streamed.

A training row is created when the trainer starts (status 'running'), its `metrics` column
(a JSON list of logged dicts: step, loss, learning rate, ...) is rewritten as logs arrive so an
app can follow a run live, and it is closed with status 'done' or 'failed'. All statements
are parameterised.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timezone
from typing import Any, Literal

import duckdb
from pydantic import BaseModel, Field, field_validator

from josh_core.storage.codec import dumps, from_db_time, loads
from josh_core.storage.db import Database

TrainingStatus = Literal["running", "done", "failed"]

_JSON_COLUMNS = ("config", "metrics")
_COLUMNS = (
    "id, created_at, finished_at, kind, base, data_path, data_hash, examples, config, "
    "adapter_path, status, error, seconds, metrics"
)


class TrainingRecord(BaseModel):
    id: str
    created_at: datetime
    finished_at: datetime | None = None
    kind: str
    base: str
    data_path: str
    data_hash: str
    examples: int
    config: dict[str, Any] = Field(default_factory=dict)
    adapter_path: str
    status: TrainingStatus
    error: str | None = None
    seconds: float | None = None
    metrics: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("metrics", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value

    @property
    def losses(self) -> list[float]:
        return [float(m["loss"]) for m in self.metrics if m.get("loss") is not None]


def _now() -> datetime:
    """Naive UTC, as stored."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def new_training_id() -> str:
    return f"train-{_now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"  # UTC time


def create_training(
    db: Database,
    *,
    kind: str,
    base: str,
    data_path: str,
    data_hash: str,
    examples: int,
    config: dict[str, Any],
    adapter_path: str,
    training_id: str | None = None,
) -> str:
    """Record a training that is starting (status 'running'); returns its id."""
    training_id = training_id or new_training_id()

    def write(con: duckdb.DuckDBPyConnection) -> None:
        con.execute(
            "INSERT INTO trainings (id, created_at, kind, base, data_path, data_hash, examples, config, "
            "adapter_path, status, metrics) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'running', ?)",
            [training_id, _now(), kind, base, data_path, data_hash, examples, dumps(config),
             adapter_path, dumps([])],
        )

    db.write(write)
    return training_id


def update_training_metrics(db: Database, training_id: str, metrics: list[dict[str, Any]]) -> None:
    """Replace the logged metrics of a running training (called as logs arrive)."""
    db.write(
        lambda con: con.execute(
            "UPDATE trainings SET metrics = ? WHERE id = ?", [dumps(metrics), training_id]
        )
    )


def finish_training(
    db: Database,
    training_id: str,
    *,
    status: TrainingStatus,
    seconds: float,
    metrics: list[dict[str, Any]] | None = None,
    error: str | None = None,
) -> None:
    """Close a training with status 'done' or 'failed' (metrics are kept when not given)."""

    def write(con: duckdb.DuckDBPyConnection) -> None:
        if metrics is None:
            con.execute(
                "UPDATE trainings SET status = ?, finished_at = ?, seconds = ?, error = ? WHERE id = ?",
                [status, _now(), seconds, error, training_id],
            )
        else:
            con.execute(
                "UPDATE trainings SET status = ?, finished_at = ?, seconds = ?, error = ?, metrics = ? "
                "WHERE id = ?",
                [status, _now(), seconds, error, dumps(metrics), training_id],
            )

    db.write(write, checkpoint=True)


def _record(cursor: duckdb.DuckDBPyConnection) -> list[TrainingRecord]:
    names = [d[0] for d in cursor.description]
    records = []
    for row in cursor.fetchall():
        values = dict(zip(names, row))
        for column, value in values.items():
            values[column] = loads(value) if column in _JSON_COLUMNS else from_db_time(value)
        records.append(TrainingRecord(**values))
    return records


def get_training(db: Database, training_id: str) -> TrainingRecord:
    rows = db.read(lambda con: _record(con.execute(f"SELECT {_COLUMNS} FROM trainings WHERE id = ?",
                                                   [training_id])))
    if not rows:
        raise KeyError(f"no training {training_id!r} in {db.path}")
    return rows[0]


def list_trainings(db: Database) -> list[TrainingRecord]:
    """Every training, oldest first."""
    return db.read(lambda con: _record(con.execute(f"SELECT {_COLUMNS} FROM trainings ORDER BY created_at, id")))
