"""Goal completion (appendix A) and why a goal was missed.

A book goal is completed by a call of its API whose arguments contain the goal's book
parameters (entity id included). A search goal is completed by a call of its API that was
served an entity E (not an error, not empty), where E is the booking entity whenever the
scenario books in that domain, and either
- the goal parameters G ⊆ the call's arguments, or
- the arguments ⊆ G and E satisfies G, or
- the arguments and G each select exactly one database row, the same one.
Reward = completed goals / goal calls, each goal counted once whatever the order.

A missed goal keeps the closest executed attempt's per-parameter diff (fewest missing plus
wrong parameters; the latest on ties) and a reason: never_attempted (no executed call of
that API), wrong_value, missing_parameter, or wrong_entity (the parameters were right but
the entity served or booked was not the goal's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The report types are every environment's (envs/score.py); ScoreReport is re-exported for env.py.
from josh_core.envs.score import MissedGoal, ParamDiff, ScoreReport  # noqa: F401
from josh_core.envs.toolwoz.db import Database, entity_id_field
from josh_core.envs.toolwoz.normalize import is_normalized_subset, normalize
from josh_core.types import ApiCallRecord


@dataclass(frozen=True)
class GoalSpec:
    """A goal call with everything scoring compares against, normalised once."""

    goal_id: str
    name: str
    domain: str
    intent: str
    raw: dict[str, str]
    params: dict[str, str]  # normalised, ignored values dropped
    books_domain: bool  # the scenario books in this domain
    booking_id: str | None  # normalised id of the booking entity, when there is one
    goal_rows: tuple[int, ...]  # rows the goal parameters select (search goals)


@dataclass(frozen=True)
class Attempt:
    """An executed call, with what it was served."""

    index: int
    name: str
    raw: dict[str, Any]
    args: dict[str, str]  # normalised
    served_row: int | None  # search: row served; None when empty
    served_id: str | None  # as served (search) or booked (book)
    booked: bool  # book: success


def _raw_norm(raw: dict[str, Any]) -> dict[str, str]:
    out = {}
    for key, value in raw.items():
        norm = normalize(value)
        if norm is not None:
            out[key] = norm
    return out


def collect_attempts(records: list[ApiCallRecord], db: Database, normalized: Any) -> tuple[list[Attempt], dict[str, int]]:
    """Executed calls in order, plus the count of rejected calls per API name.

    `normalized(name, parameters)` returns the validated, normalised arguments (cached by
    the environment)."""
    attempts: list[Attempt] = []
    failed: dict[str, int] = {}
    for i, record in enumerate(records):
        call = record.call
        if call is None:
            continue
        if not record.result.ok:
            failed[call.name] = failed.get(call.name, 0) + 1
            continue
        args = normalized(call.name, call.parameters)
        if args is None:
            continue
        domain = call.name.split("_", 1)[-1]
        served_row = served_id = None
        booked = False
        content = record.result.content
        if call.name.startswith("search_") and isinstance(content, list) and content:
            first = content[0] if isinstance(content[0], dict) else {}
            served_id = str(first.get(entity_id_field(domain), "")) or None
            served_row = db.find_row(domain, first) if served_id else None
        elif call.name.startswith("book_") and isinstance(content, dict):
            booked = bool(content.get("success"))
            if booked and isinstance(content.get("return"), dict):
                served_id = str(content["return"].get(entity_id_field(domain), "")) or None
        attempts.append(Attempt(i, call.name, call.parameters, args, served_row, served_id, booked))
    return attempts, failed


def completes(goal: GoalSpec, attempt: Attempt, db: Database) -> bool:
    if attempt.name != goal.name:
        return False
    if goal.intent == "book":
        return is_normalized_subset(goal.params, attempt.args)
    if attempt.served_row is None:
        return False
    if goal.books_domain and db.norm_id(goal.domain, attempt.served_row) != goal.booking_id:
        return False
    if is_normalized_subset(goal.params, attempt.args):
        return True
    if is_normalized_subset(attempt.args, goal.params) and db.matches(goal.domain, goal.params, attempt.served_row):
        return True
    if len(goal.goal_rows) == 1:
        rows = db.query(goal.domain, attempt.args)
        return len(rows) == 1 and rows[0] == goal.goal_rows[0]
    return False


def diff(goal: GoalSpec, attempt: Attempt) -> list[ParamDiff]:
    out: list[ParamDiff] = []
    for key, value in goal.params.items():
        got = attempt.args.get(key)
        if got is None:
            out.append(ParamDiff(parameter=key, kind="missing", expected=goal.raw.get(key, value)))
        elif got != value:
            out.append(
                ParamDiff(parameter=key, kind="wrong_value", expected=goal.raw.get(key, value), got=str(attempt.raw.get(key)))
            )
    for key in attempt.args:
        if key not in goal.params:
            out.append(ParamDiff(parameter=key, kind="unexpected", got=str(attempt.raw.get(key))))
    return out


def explain_miss(goal: GoalSpec, attempts: list[Attempt], failed: dict[str, int]) -> MissedGoal:
    own = [a for a in attempts if a.name == goal.name]
    missed = MissedGoal(
        goal_id=goal.goal_id,
        api=goal.name,
        reason="never_attempted",
        attempts=len(own),
        failed_calls=failed.get(goal.name, 0),
    )
    if not own:
        return missed
    best: tuple[int, Attempt, list[ParamDiff]] | None = None
    for attempt in own:
        diffs = diff(goal, attempt)
        distance = sum(1 for d in diffs if d.kind != "unexpected")
        if best is None or distance <= best[0]:
            best = (distance, attempt, diffs)
    assert best is not None
    _, attempt, diffs = best
    kinds = {d.kind for d in diffs}
    missed.reason = (
        "wrong_value" if "wrong_value" in kinds else "missing_parameter" if "missing" in kinds else "wrong_entity"
    )
    missed.closest_call = attempt.index
    missed.served = attempt.served_id
    missed.details = diffs
    return missed
