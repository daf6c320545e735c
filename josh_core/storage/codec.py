"""Tree objects <-> table rows (column order matches the INSERT statements in writes.py)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from pydantic import TypeAdapter
from pydantic_core import PydanticSerializationError

from josh_core.safe_text import valid_json, valid_text
from josh_core.search.tree import Node, RewardEvent
from josh_core.types import ApiCallRecord, ApiResult, Generation, Message, ToolCall

_messages = TypeAdapter(list[Message])
_generations = TypeAdapter(list[Generation])

NODE_COLUMNS = (
    "id, conversation_id, parent_id, kind, depth, child_index, path, step, status, text, ended, "
    "internal, generations, call_goals, goals_hit, format_errors, api_errors, seed, started_at, "
    "seconds, prompt_tokens, completion_tokens"
)
API_CALL_COLUMNS = (
    "node_id, position, conversation_id, name, parameters, call_id, raw, ok, content, "
    "error_kind, error, goals"
)
REWARD_EVENT_COLUMNS = "conversation_id, node_id, goal_id, kind, reward, step"


def to_db_time(value: datetime | None) -> datetime | None:
    """Timestamps are stored as naive UTC."""
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(timezone.utc).replace(tzinfo=None)


def from_db_time(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


# Text stored here comes from models, users, tools and files: a lone surrogate (a JSON escape
# like \ud800 in a model's action) cannot be encoded as UTF-8, and one such character would
# fail the write of a whole step, ending the conversation. Every text column goes through
# `text` and every JSON column through `dumps`, which store U+FFFD in its place.


def text(value: str | None) -> str | None:
    return None if value is None else valid_text(value)


def dumps(value: Any) -> str | None:
    # ensure_ascii=False passes lone surrogates through, and only those fail to encode.
    return None if value is None else valid_text(json.dumps(value, ensure_ascii=False))


def _dump_json(adapter: TypeAdapter, value: Any) -> str:
    try:
        return adapter.dump_json(value, exclude_none=True).decode()
    except PydanticSerializationError:  # a lone surrogate somewhere in it
        return json.dumps(valid_json(adapter.dump_python(value, mode="json", exclude_none=True)), ensure_ascii=False)


def loads(value: Any) -> Any:
    if value is None or not isinstance(value, str):
        return value
    return json.loads(value)


def node_row(node: Node) -> list[Any]:
    return [
        node.id,
        node.conversation_id,
        node.parent_id,
        node.kind,
        node.depth,
        node.child_index,
        node.path,
        node.step,
        node.status,
        text(node.text),
        node.ended,
        _dump_json(_messages, node.internal),
        _dump_json(_generations, node.generations),
        dumps(node.call_goals),
        dumps(node.goals_hit),
        node.format_errors,
        node.api_errors,
        node.seed,
        to_db_time(node.started_at),
        node.seconds,
        node.prompt_tokens,
        node.completion_tokens,
    ]


def api_call_rows(node: Node) -> list[list[Any]]:
    rows = []
    for position, record in enumerate(node.api_calls):
        call = record.call
        goals = node.call_goals[position] if position < len(node.call_goals) else []
        rows.append(
            [
                node.id,
                position,
                node.conversation_id,
                text(call.name) if call else None,
                dumps(call.parameters) if call else None,
                text(call.id) if call else None,
                text(record.raw),
                record.result.ok,
                dumps(record.result.content),
                record.result.error_kind,
                text(record.result.error),
                dumps(goals),
            ]
        )
    return rows


def reward_event_row(event: RewardEvent) -> list[Any]:
    return [event.conversation_id, event.node_id, event.goal_id, event.kind, event.reward, event.step]


def api_call_from_row(row: dict[str, Any]) -> ApiCallRecord:
    call = None
    if row["name"] is not None:
        call = ToolCall(name=row["name"], parameters=loads(row["parameters"]) or {}, id=row["call_id"])
    return ApiCallRecord(
        call=call,
        raw=row["raw"],
        result=ApiResult(
            ok=row["ok"],
            content=loads(row["content"]),
            error_kind=row["error_kind"],
            error=row["error"],
        ),
    )


def node_from_row(row: dict[str, Any], api_calls: list[ApiCallRecord]) -> Node:
    return Node(
        id=row["id"],
        conversation_id=row["conversation_id"],
        parent_id=row["parent_id"],
        kind=row["kind"],
        depth=row["depth"],
        child_index=row["child_index"],
        path=row["path"],
        step=row["step"],
        status=row["status"],
        text=row["text"] or "",
        ended=bool(row["ended"]),
        internal=_messages.validate_json(row["internal"]) if row["internal"] else [],
        generations=_generations.validate_json(row["generations"]) if row["generations"] else [],
        api_calls=api_calls,
        call_goals=loads(row["call_goals"]) or [],
        goals_hit=loads(row["goals_hit"]) or [],
        format_errors=row["format_errors"] or 0,
        seed=row["seed"] or 0,
        started_at=from_db_time(row["started_at"]),
        seconds=row["seconds"],
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
    )


def reward_event_from_row(row: dict[str, Any]) -> RewardEvent:
    return RewardEvent(**{key: row[key] for key in REWARD_EVENT_COLUMNS.split(", ")})
