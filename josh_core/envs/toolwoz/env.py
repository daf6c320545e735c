"""ToolWOZEnv: one scenario's API executor and goal scorer (a `ToolEnvironment`).

Serving and booking are stateless (they depend only on the call and the scenario), so any
path of a conversation tree can be scored from its own call records alone.

`scoring="reference"` serves and scores with the original ToolWOZ code's rules instead
(reference_scoring.py); why a goal was missed is still explained with ours.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from josh_core.envs.toolwoz.apis import API_EXAMPLES, TOOLS, CallError, ServingContext, validate_call
from josh_core.envs.toolwoz.data import load_database
from josh_core.envs.toolwoz.db import Database
from josh_core.envs.toolwoz.normalize import normalize, normalize_params
from josh_core.envs.toolwoz.reference_scoring import DEFAULT_SCORING, REFERENCE, SCORING_MODES, ReferenceSemantics
from josh_core.envs.toolwoz.scoring import (
    GoalSpec,
    ScoreReport,
    collect_attempts,
    completes,
    explain_miss,
)
from josh_core.envs.toolwoz.types import Scenario
from josh_core.types import ApiCallRecord, ApiResult, ToolCall

_BAD_FORMAT_HINT = 'Write the call as JSON: {"name": "<api name>", "parameters": {"<parameter>": "<value>"}}.'


class ToolWOZEnv:
    # Optional ToolEnvironment features it has (josh_core/types.py): stateless tools, so no
    # for_path; scored from the calls alone.
    features = frozenset({"score", "api_examples"})

    def __init__(self, scenario: Scenario, db: Database | None = None, scoring: str = DEFAULT_SCORING):
        if scoring not in SCORING_MODES:
            raise ValueError(f"unknown ToolWOZ scoring {scoring!r}; use one of {', '.join(SCORING_MODES)}")
        if db is None:
            db = load_database()
        self.scenario = scenario
        self.db = db
        self.context = ServingContext(db=db)
        self._goals: list[GoalSpec] = []
        self._args_cache: dict[str, dict[str, str] | None] = {}
        self.scoring = scoring
        self._reference = ReferenceSemantics(scenario, db) if scoring == REFERENCE else None
        self._build_goals()

    def _build_goals(self) -> None:
        ctx = self.context
        for call in self.scenario.goal_calls:
            if call.intent == "book":
                ctx.book_goals[call.domain] = normalize_params(call.parameters)
                ctx.book_returns[call.domain] = call.returns
                booking_id = normalize(call.unique_id)
                if booking_id is not None:
                    ctx.booking_ids[call.domain] = booking_id
            elif call.intent == "search":
                ctx.search_goals[call.domain] = normalize_params(call.parameters)
        for goal_id, call in zip(self.scenario.goal_call_ids(), self.scenario.goal_calls):
            params = normalize_params(call.parameters)
            self._goals.append(
                GoalSpec(
                    goal_id=goal_id,
                    name=call.name,
                    domain=call.domain,
                    intent=call.intent,
                    raw={k: str(v) for k, v in call.parameters.items()},
                    params=params,
                    books_domain=call.domain in ctx.booking_ids,
                    booking_id=ctx.booking_ids.get(call.domain),
                    goal_rows=self.db.query(call.domain, params) if call.intent == "search" else (),
                )
            )

    # ------------------------------------------------------------------ ToolEnvironment
    def tools(self) -> list[dict[str, Any]]:
        """The OpenAI tools schema (a copy: callers may edit it)."""
        return copy.deepcopy(TOOLS)

    @property
    def api_examples(self) -> list[dict[str, Any]]:
        """One filled call per API, for the ReACT prompt (shared: do not mutate)."""
        return API_EXAMPLES

    def execute(self, call: ToolCall | None, raw: str | None = None) -> ApiCallRecord:
        """Run one call. Bad calls get an error result (and are recorded); nothing raises."""
        if call is None:
            shown = (raw or "").strip()
            shown = shown[:200] + ("..." if len(shown) > 200 else "")
            result = ApiResult(
                ok=False,
                error_kind="bad_format",
                error=f"Could not read an API call from {shown!r}. {_BAD_FORMAT_HINT}",
            )
            return ApiCallRecord(call=None, raw=raw, result=result)
        if self._reference is not None:
            return ApiCallRecord(call=call, raw=raw, result=self._reference.execute(call))
        try:
            tool, args = validate_call(call.name, call.parameters)
        except CallError as error:
            result = ApiResult(ok=False, error_kind=error.kind, error=error.message)
        else:
            result = ApiResult(ok=True, content=tool.invoke(self.context, args))
        return ApiCallRecord(call=call, raw=raw, result=result)

    def execute_call(self, name: str, parameters: dict[str, Any] | None = None) -> ApiCallRecord:
        return self.execute(ToolCall(name=name, parameters=parameters or {}))

    def goal_ids(self) -> list[str]:
        return self.scenario.goal_call_ids()

    def completed_goals(self, calls: list[ApiCallRecord]) -> set[str]:
        if self._reference is not None:
            return self._reference.completed_goals(calls)
        attempts, _ = collect_attempts(calls, self.db, self._normalized_args)
        return {
            goal.goal_id
            for goal in self._goals
            if any(completes(goal, attempt, self.db) for attempt in attempts)
        }

    # ------------------------------------------------------------------ scoring
    def score(self, calls: list[ApiCallRecord]) -> ScoreReport:
        attempts, failed = collect_attempts(calls, self.db, self._normalized_args)
        reference = self._reference.completed_goals(calls) if self._reference is not None else None
        completed, missed = [], []
        for goal in self._goals:
            if reference is not None:
                met = goal.goal_id in reference
            else:
                met = any(completes(goal, attempt, self.db) for attempt in attempts)
            if met:
                completed.append(goal.goal_id)
            else:
                missed.append(explain_miss(goal, attempts, failed))
        total = len(self._goals)
        reward = len(completed) / total if total else 0.0
        return ScoreReport(reward=reward, success=bool(total) and len(completed) == total, completed=completed, missed=missed)

    def _normalized_args(self, name: str, parameters: dict[str, Any]) -> dict[str, str] | None:
        """Validated, normalised arguments of a call (None for a bad call), cached."""
        try:
            key: str | None = name + "\x00" + json.dumps(parameters, sort_keys=True, default=str)
        except (ValueError, TypeError, RecursionError):  # unusual values: validate without the cache
            key = None
        if key is None or key not in self._args_cache:
            try:
                args: dict[str, str] | None = validate_call(name, parameters)[1]
            except CallError:
                args = None
            if key is None:
                return args
            self._args_cache[key] = args
        return self._args_cache[key]


def as_tool_call(call: Any) -> ToolCall | None:
    """A ToolCall from a ToolCall or a {name, parameters} dict; None when it is not a call
    (no string name, parameters not an object): it is then executed as a bad-format call."""
    if isinstance(call, ToolCall):
        return call
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return None
    parameters = call.get("parameters")
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, dict):
        return None
    return ToolCall(name=call["name"], parameters=parameters)


def _raw_text(call: Any) -> str:
    try:
        return json.dumps(call, default=str)[:2000]
    except (ValueError, TypeError, RecursionError):
        return type(call).__name__


def score_calls(
    scenario: Scenario, calls: list[ToolCall | dict[str, Any]], db: Database | None = None,
    scoring: str = DEFAULT_SCORING,
) -> ScoreReport:
    """Execute plain calls ({name, parameters}) in a fresh environment and score them. A call
    that is not one (no string name, parameters not an object) counts as a bad-format call."""
    env = ToolWOZEnv(scenario, db=db, scoring=scoring)
    records = []
    for call in calls:
        tool_call = as_tool_call(call)
        records.append(env.execute(tool_call, None if tool_call is not None else _raw_text(call)))
    return env.score(records)
