"""`--scoring reference`: the original ToolWOZ code's serving and scoring semantics.

The published ToolWOZ numbers were made with the original code (asappresearch/josh-llm-
simulation-training, `utils.py` and `conversation_state*.py`), whose rules differ from ours
(`scoring.py`, `apis.py`, `db.py`) in ways that change rewards; docs/toolwoz.md lists them
(classes A-I). This module reimplements those rules, read from that code, so that a run can be
compared with the paper:

- values: a call's string values are lower-cased and their ASCII apostrophes removed, nothing
  else (no whitespace clean-up); the database side is compared raw (A, B); the "no constraint"
  values are tested after that clean-up in a query (so `do n't care` filters) but on the raw
  value when scoring (C); non-string values are never filters and stay as they are when
  scoring (D);
- serving: a query filters rows by equality, `leaveAt` / `arriveBy` by string comparison (H);
  nothing validates enums or times, an impossible value just finds no row (I); the "wrong
  answer" of Algorithm 2 is the last row that does not satisfy the goal by the subset test,
  which may be the booking entity (F2); the "correct answer" is the last row with the booking
  id (several train rows share an id); a failed booking returns `{}`; `book_attraction` and the
  taxi and hospital APIs are accepted;
- scoring: a book goal is met by any call of its API whose arguments contain the goal's, even
  one that got an error (E); a search goal by a call served a row, with the goal's arguments
  contained in the call's (then the booking entity must have been served, when there is one),
  or the call's in the goal's (then the served row must contain the goal's values, time values
  included, or be the booking entity) (F1); there is no single-result equivalence (G).

Only what decides rewards is reproduced: the served rows are our cleaned database rows, and
error texts are the original's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from josh_core.envs.toolwoz.db import Database, entity_id_field
from josh_core.envs.toolwoz.types import Scenario
from josh_core.types import ApiCallRecord, ApiResult, ToolCall

# The scoring modes of a ToolWOZ environment, the default first: ours (docs/toolwoz.md says
# why). The registry entry (envs/toolwoz), the CLI flags and RolloutConfig all read these.
TOOLWOZ = "toolwoz"
REFERENCE = "reference"
SCORING_MODES: tuple[str, ...] = (TOOLWOZ, REFERENCE)
DEFAULT_SCORING = SCORING_MODES[0]

# The original's `valid_api_defs.json`: every API it executes, with its parameters. Taxi and
# hospital are searchable there but have no table here, so their searches find nothing.
REFERENCE_APIS: dict[str, tuple[str, ...]] = {
    "search_restaurant": ("food", "pricerange", "name", "area"),
    "book_restaurant": ("time", "day", "people", "name"),
    "search_hotel": ("name", "area", "parking", "pricerange", "stars", "internet", "type"),
    "book_hotel": ("stay", "day", "people", "name"),
    "search_attraction": ("type", "name", "area"),
    "book_attraction": (),
    "search_train": ("leaveAt", "destination", "day", "arriveBy", "departure"),
    "book_train": ("people", "trainID"),
    "search_taxi": ("leaveAt", "destination", "departure", "arriveBy"),
    "book_taxi": (),
    "search_hospital": ("department",),
    "book_hospital": (),
}
_SEARCHABLE = ("restaurant", "hotel", "attraction", "train")

# Compared exactly (case and apostrophes included): "Don't care" or "dont care " constrain.
_EMPTY_VALUES = frozenset({"", "dont care", "not mentioned", "don't care", "dontcare", "do n't care"})

_BAD_CALL = "INVALID API CALL! YOUR REQUEST CONTAINED PARAMETERS THAT ARE NOT ALLOWED FOR THIS API or AN IMPROPER API NAME!"
_BAD_VALUE = "INVALID API CALL! LISTS AND DICTS ARE NOT ALLOWED AS VALUES!"


def is_empty(value: Any) -> bool:
    """The original's test for a value that constrains nothing: exact strings only."""
    return isinstance(value, str) and value in _EMPTY_VALUES


def clean(value: Any) -> Any:
    """Lower case and ASCII apostrophes removed, for strings; anything else as it is."""
    return value.lower().replace("'", "") if isinstance(value, str) else value


def reference_subset(subset: Mapping[str, Any], main: Mapping[str, Any]) -> bool:
    """The original `is_subset`: every non-empty item of `subset` equals `main`'s, both
    cleaned; a value's type matters (the int 2 is not "2")."""
    cleaned_main = {k: clean(v) for k, v in main.items() if not is_empty(v)}
    for key, value in subset.items():
        if is_empty(value):
            continue
        if key not in cleaned_main or cleaned_main[key] != clean(value):
            return False
    return True


def _row_passes(row: Mapping[str, Any], key: str, value: str) -> bool:
    if key not in row or not isinstance(row[key], str):  # a missing column matches nothing
        return False
    if key == "leaveAt":
        return row[key] > value
    if key == "arriveBy":
        return row[key] < value
    return row[key] == value


def query_rows(db: Database, domain: str, cleaned_args: Mapping[str, Any]) -> list[int]:
    """Row indices of the original's query: cleaned string values filter raw row values;
    values that are not strings, falsy or "empty" filter nothing."""
    if domain not in db.tables:
        return []
    filters = [
        (key, value) for key, value in cleaned_args.items()
        if isinstance(value, str) and value and value not in _EMPTY_VALUES
    ]  # fmt: skip
    rows = db.tables[domain]
    return [i for i, row in enumerate(rows) if all(_row_passes(row, k, v) for k, v in filters)]


@dataclass
class ReferenceGoals:
    """The scenario's goal calls as the original keeps them: raw parameters."""

    search: dict[str, dict[str, Any]] = field(default_factory=dict)  # domain -> search goal params
    book: dict[str, dict[str, Any]] = field(default_factory=dict)  # domain -> book goal params
    book_returns: dict[str, Any] = field(default_factory=dict)
    booking_ids: dict[str, str] = field(default_factory=dict)  # domain -> raw unique id
    domains: set[str] = field(default_factory=set)  # domains with a goal: others are served freely

    @classmethod
    def of(cls, scenario: Scenario) -> "ReferenceGoals":
        goals = cls(domains=set(scenario.domains))
        for call in scenario.goal_calls:
            goals.domains.add(call.domain)
            if call.intent == "search":
                goals.search[call.domain] = dict(call.parameters)
            elif call.intent == "book":
                goals.book[call.domain] = dict(call.parameters)
                goals.book_returns[call.domain] = call.returns
                goals.booking_ids[call.domain] = str(call.unique_id or "")
        return goals


class ReferenceSemantics:
    """One scenario's API executor and goal scorer with the original code's rules."""

    def __init__(self, scenario: Scenario, db: Database):
        self.scenario = scenario
        self.db = db
        self.goals = ReferenceGoals.of(scenario)

    # ------------------------------------------------------------------ serving
    def execute(self, call: ToolCall) -> ApiResult:
        allowed = REFERENCE_APIS.get(call.name)
        if allowed is None:
            return ApiResult(ok=False, error_kind="unknown_api", error=_BAD_CALL)
        if not set(call.parameters) <= set(allowed):
            return ApiResult(ok=False, error_kind="unknown_parameter", error=_BAD_CALL)
        if any(isinstance(v, (list, dict)) for v in call.parameters.values()):
            return ApiResult(ok=False, error_kind="invalid_value", error=_BAD_VALUE)
        action, domain = call.name.split("_", 1)
        args = {key: clean(value) for key, value in call.parameters.items()}
        if action == "search":
            return ApiResult(ok=True, content=self._search(domain, args))
        return ApiResult(ok=True, content=self._book(domain, args))

    def _book(self, domain: str, args: dict[str, Any]) -> dict[str, Any]:
        goal = self.goals.book.get(domain)
        if goal is not None and reference_subset(goal, args):
            return {"success": True, "return": self.goals.book_returns[domain]}
        return {"success": False, "return": {}}

    def _search(self, domain: str, args: dict[str, Any]) -> list[dict[str, Any]]:
        if domain not in _SEARCHABLE:
            return []
        found = query_rows(self.db, domain, args)
        if not found:
            return []
        rows = [self.db.row(domain, i) for i in found]
        if domain not in self.goals.domains:
            return [dict(rows[0])]
        served = self._choose(domain, args, rows)
        return [dict(served)] if served is not None else []

    def _choose(self, domain: str, args: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any] | None:
        """Algorithm 2 as the original wrote it."""
        goal = self.goals.search.get(domain, {})
        books = domain in self.goals.book
        id_field = entity_id_field(domain)
        correct = wrong = None
        for row in rows:  # the last of each kind wins
            if books and row.get(id_field) == self.goals.booking_ids[domain]:
                correct = row
            if not reference_subset(goal, row):
                wrong = row
        if reference_subset(goal, args):
            if books:
                return correct or wrong
        elif reference_subset(args, goal):
            if wrong is not None:
                return wrong
            if books and correct is not None:
                return correct
        return rows[0]

    # ------------------------------------------------------------------ scoring
    def completed_goals(self, records: list[ApiCallRecord]) -> set[str]:
        ids = self.scenario.goal_call_ids()
        return {goal_id for goal_id, call in zip(ids, self.scenario.goal_calls)
                if self._met(call.name, call.domain, call.intent, records)}  # fmt: skip

    def _met(self, name: str, domain: str, intent: str, records: list[ApiCallRecord]) -> bool:
        calls = [r for r in records if r.call is not None and r.call.name == name]
        if intent == "book":
            goal = self.goals.book[domain]
            return any(reference_subset(goal, r.call.parameters) for r in calls)  # type: ignore[union-attr]
        goal = self.goals.search.get(domain, {})
        booking_id = self.goals.booking_ids.get(domain, "")
        id_field = entity_id_field(domain)
        for record in calls:
            served = _served_row(record)
            if served is None:
                continue
            params = record.call.parameters  # type: ignore[union-attr]
            if reference_subset(goal, params):
                if not booking_id or served.get(id_field) == booking_id:
                    return True
            elif reference_subset(params, goal):
                if booking_id:
                    if served.get(id_field) == booking_id:
                        return True
                elif reference_subset(goal, served):
                    return True
        return False


def _served_row(record: ApiCallRecord) -> dict[str, Any] | None:
    """The row a search call was served; None for an error or an empty result."""
    content = record.result.content
    if not record.result.ok or not isinstance(content, list) or not content or not isinstance(content[0], dict):
        return None
    return content[0]
