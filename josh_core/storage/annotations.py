"""Annotators' verdicts on tree nodes, and the one rule that turns them into labels.

A verdict is a person's word on an agent turn shown beside the ideal turn (the Pairs page):

- "good": as good as the ideal turn: used as a positive (label "ideal");
- "bad": worse than the ideal turn: used as a negative (label "negative");
- "dont_use": neither: left out of the training data (label "unexplored");
- "skip": seen, no opinion: no label.

Resolution (export, the app and `label_overrides` all use it): each annotator's latest
verdict or label on a node counts once (a later "skip" withdraws that annotator's earlier
label; unnamed annotators count together as one); the label given by the most annotators wins;
a tie goes to the label given most recently. Nodes no annotator labelled keep the label the
tree gives them (josh_core.search.labels).
"""

from __future__ import annotations

import secrets
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any

import duckdb
from pydantic import BaseModel

from josh_core.storage.db import Database

VERDICT_LABELS: dict[str, str | None] = {"good": "ideal", "bad": "negative", "dont_use": "unexplored", "skip": None}
VERDICTS: tuple[str, ...] = tuple(VERDICT_LABELS)
ANONYMOUS = ""  # the author of annotations without a name


class Vote(BaseModel):
    """One annotator's latest word on one node."""

    node_id: str
    conversation_id: str
    author: str  # ANONYMOUS for unnamed
    verdict: str | None  # None for rows with a label only (written before verdicts)
    label: str | None  # None: a skip
    created_at: datetime


def _has_verdict(con: duckdb.DuckDBPyConnection) -> bool:
    """Databases opened read-only are not migrated: one before migration 4 has no verdicts."""
    return bool(
        con.execute(
            "SELECT count(*) FROM information_schema.columns WHERE table_catalog = current_database() "
            "AND table_name = 'annotations' AND column_name = 'verdict'"
        ).fetchone()[0]
    )


def latest_votes(db: Database, conversation_ids: list[str] | None = None) -> list[Vote]:
    """Each annotator's latest verdict or label per node (comments alone are not votes)."""

    def read(con: duckdb.DuckDBPyConnection) -> list[tuple]:
        verdict = "verdict" if _has_verdict(con) else "CAST(NULL AS VARCHAR)"
        where, params = "", []
        if conversation_ids is not None:
            where, params = " AND list_contains(?, conversation_id)", [list(conversation_ids)]
        return con.execute(
            "SELECT node_id, conversation_id, who, v, label, created_at FROM ("
            f"SELECT node_id, conversation_id, coalesce(author, '') AS who, {verdict} AS v, label, created_at, "
            "row_number() OVER (PARTITION BY node_id, coalesce(author, '') ORDER BY created_at DESC, id DESC) AS r "
            f"FROM annotations WHERE (label IS NOT NULL OR {verdict} IS NOT NULL){where}) "
            "WHERE r = 1 ORDER BY node_id, who",
            params,
        ).fetchall()

    rows = db.read(read)
    return [
        Vote(node_id=n, conversation_id=c, author=a, verdict=v, label=lab,
             created_at=t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t)
        for n, c, a, v, lab, t in rows
    ]  # fmt: skip


def resolve(votes: list[Vote]) -> str | None:
    """The label the votes on one node give (None: no annotator gave a label)."""
    counted = [v for v in votes if v.label is not None]
    if not counted:
        return None
    tally: dict[str, list[datetime]] = defaultdict(list)
    for vote in counted:
        tally[vote.label].append(vote.created_at)  # type: ignore[index]
    return max(tally, key=lambda label: (len(tally[label]), max(tally[label])))


def resolved_labels(db: Database, conversation_ids: list[str] | None = None) -> dict[str, str]:
    """node id -> resolved label, for every node some annotator labelled."""
    by_node: dict[str, list[Vote]] = defaultdict(list)
    for vote in latest_votes(db, conversation_ids):
        by_node[vote.node_id].append(vote)
    out = {}
    for node_id, votes in by_node.items():
        label = resolve(votes)
        if label is not None:
            out[node_id] = label
    return out


def add_verdict(
    db: Database,
    *,
    node_id: str,
    conversation_id: str,
    verdict: str,
    author: str | None = None,
    comment: str | None = None,
) -> str:
    """Record an annotator's verdict on a node (and an optional comment with it)."""
    if verdict not in VERDICT_LABELS:
        raise ValueError(f"unknown verdict {verdict!r}; expected one of {', '.join(VERDICTS)}")
    annotation_id = f"ann-{secrets.token_hex(6)}"
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    db.write(
        lambda con: con.execute(
            "INSERT INTO annotations (id, node_id, conversation_id, label, comment, author, created_at, verdict) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [annotation_id, node_id, conversation_id, VERDICT_LABELS[verdict], comment or None,
             (author or "").strip() or None, now, verdict],
        )
    )  # fmt: skip
    return annotation_id


def comments(db: Database, conversation_ids: list[str] | None = None) -> list[dict[str, Any]]:
    """Every annotation with a comment: node, author, time, text (oldest first)."""
    where, params = "", []
    if conversation_ids is not None:
        where, params = " AND list_contains(?, conversation_id)", [list(conversation_ids)]
    rows = db.read(
        lambda con: con.execute(
            "SELECT node_id, conversation_id, author, created_at, comment FROM annotations "
            f"WHERE comment IS NOT NULL{where} ORDER BY created_at, id",
            params,
        ).fetchall()
    )
    return [
        {"node_id": n, "conversation_id": c, "author": a or ANONYMOUS,
         "created_at": t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t, "comment": text}
        for n, c, a, t, text in rows
    ]  # fmt: skip
