"""Error analysis (paper section 5.2: Table 4a, Figure 4c, Figure 5).

Definitions (docs/evaluation.md says the same in prose):

- Bad API use: a conversation has it when at least one of its API calls was rejected as
  `unknown_api` (no such API), `unknown_parameter` (a key outside the API's definition) or
  `invalid_value` (a value outside an enum, an unreadable time, a list/dict/boolean value).
- Incorrect API format: a conversation has it when at least one agent generation could not be
  read as an action (`Generation.action == "format_error"`: no APICALL/SPEAK command, or for
  function calling an unreadable tool call), or at least one API call could not be read as a
  call (`bad_format`: not JSON, no name, parameters not an object).
- Errors per API (Figure 4c): for each API name, the calls rejected as bad (any error kind)
  plus the goal calls of that API the agent attempted and still missed (`errors`). Goals never
  attempted are counted beside it, not in it.
- Parameter errors (Figure 5): for every goal call that the conversation missed although the
  agent made at least one executed call of that API, the parameters where the closest such
  call (the environment's choice: fewest missing plus wrong parameters, latest on ties)
  differs from the goal: a goal parameter left out (missing parameter) or given another value
  (wrong value). One call can carry several. Missing parameters are counted per API and
  parameter, wrong values per API, parameter and expected value (e.g. "food=chinese");
  percentages are of all parameter errors.

All of it reads the conversation's analysed nodes (the ideal path by default, every agent turn
of the tree with `nodes="all"`, see conversations.py): the calls, the generations, whether a
goal's API was attempted and the parameters of its closest attempt. A share is "n/a" when its
basis is empty (no API call analysed: no API use to call bad), never a reassuring 0%.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import pandas as pd
from pydantic import BaseModel, Field

from josh_core.analysis.conversations import AnalysedConversation, NodeScope, load_conversations
from josh_core.analysis.metrics import records
from josh_core.storage.db import Database

BAD_API_USE_KINDS = ("unknown_api", "unknown_parameter", "invalid_value")
ERROR_KINDS = (*BAD_API_USE_KINDS, "bad_format")
UNPARSED_API = "(unparsed)"  # the name shown for calls whose text did not parse at all
DEFAULT_TOP = 10


class ErrorRates(BaseModel):
    n: int  # finished conversations
    bad_api_use: float  # share of conversations with bad API use
    incorrect_format: float  # share with an incorrectly formatted API call / generation
    conversations_with_bad_api_use: int
    conversations_with_incorrect_format: int
    calls: int
    failed_calls: int
    error_kinds: dict[str, int]  # rejected calls per error kind
    format_error_generations: int
    agent_turns: int = 0  # agent turns analysed
    generations: int = 0  # agent generations analysed


class ErrorReport(BaseModel):
    """Everything `josh errors --json` prints."""

    nodes: NodeScope
    rates: ErrorRates
    parameter_errors_total: int
    per_api: list[dict] = Field(default_factory=list)
    parameter_errors: list[dict] = Field(default_factory=list)  # the top ones
    run_ids: list[str] = Field(default_factory=list)
    not_done: dict[str, int] = Field(default_factory=dict)


def _call_name(record) -> str:
    return record.call.name if record.call is not None else UNPARSED_API


def conversation_errors(conversations: Sequence[AnalysedConversation]) -> pd.DataFrame:
    """One row per conversation: counts of each error and the two Table 4a flags."""
    columns = ["run_id", "conversation_id", "scenario_id", "calls", "failed_calls",
               *ERROR_KINDS, "format_error_generations", "bad_api_use", "incorrect_format"]  # fmt: skip
    rows = []
    for c in conversations:
        kinds = Counter(r.result.error_kind for r in c.calls if not r.result.ok)
        row = {
            "run_id": c.run_id,
            "conversation_id": c.conversation_id,
            "scenario_id": c.scenario_id,
            "calls": len(c.calls),
            "failed_calls": sum(1 for r in c.calls if not r.result.ok),
            **{kind: kinds.get(kind, 0) for kind in ERROR_KINDS},
            "format_error_generations": c.format_error_generations,
        }
        row["bad_api_use"] = any(row[kind] for kind in BAD_API_USE_KINDS)
        row["incorrect_format"] = bool(row["bad_format"] or c.format_error_generations)
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def error_rates(conversations: Sequence[AnalysedConversation]) -> ErrorRates:
    """Table 4a: the shares of conversations with bad API use and with incorrect format."""
    frame = conversation_errors(conversations)
    n = len(frame)
    bad_use = int(frame["bad_api_use"].sum()) if n else 0
    bad_format = int(frame["incorrect_format"].sum()) if n else 0
    return ErrorRates(
        n=n,
        bad_api_use=bad_use / n if n else 0.0,
        incorrect_format=bad_format / n if n else 0.0,
        conversations_with_bad_api_use=bad_use,
        conversations_with_incorrect_format=bad_format,
        calls=int(frame["calls"].sum()) if n else 0,
        failed_calls=int(frame["failed_calls"].sum()) if n else 0,
        error_kinds={kind: int(frame[kind].sum()) if n else 0 for kind in ERROR_KINDS},
        format_error_generations=int(frame["format_error_generations"].sum()) if n else 0,
        agent_turns=sum(c.agent_turns for c in conversations),
        generations=sum(c.generations for c in conversations),
    )


def share_words(count: int, total: int, basis: int, basis_word: str) -> str:
    """"2 of 18 (11%)", or "n/a (no API calls analysed)" when the thing measured never
    happened (`basis` 0): 0 of 3 conversations with bad API use means nothing when none of
    them called an API."""
    if not basis:
        return f"n/a (no {basis_word} analysed)"
    if not total:
        return f"{count} of 0"
    return f"{count} of {total} ({100 * count / total:.0f}%)"


def errors_per_api(conversations: Sequence[AnalysedConversation]) -> pd.DataFrame:
    """Figure 4c: per API name, its calls, rejected calls by kind, its goal calls and how
    they were missed; `errors` = rejected calls + goal calls attempted but missed.
    Sorted by errors (most first), then name."""
    columns = ["api", "calls", "failed_calls", *ERROR_KINDS, "goal_calls", "missed_goals",
               "missed_attempted", "never_attempted", "errors"]  # fmt: skip
    stats: dict[str, Counter] = {}
    for c in conversations:
        for record in c.calls:
            s = stats.setdefault(_call_name(record), Counter())
            s["calls"] += 1
            if not record.result.ok:
                s["failed_calls"] += 1
                s[record.result.error_kind or "bad_format"] += 1
        for goal in c.goals:
            s = stats.setdefault(goal.api, Counter())
            s["goal_calls"] += 1
            if not goal.completed:
                s["missed_goals"] += 1
                if goal.reason == "never_attempted" or goal.reason is None:
                    s["never_attempted"] += 1
                else:
                    s["missed_attempted"] += 1
    rows = []
    for api, s in stats.items():
        row = {"api": api, **{column: int(s[column]) for column in columns[1:-1]}}
        row["errors"] = row["failed_calls"] + row["missed_attempted"]
        rows.append(row)
    rows.sort(key=lambda r: (-r["errors"], r["api"]))
    return pd.DataFrame(rows, columns=columns)


def parameter_error_rows(conversations: Sequence[AnalysedConversation]) -> pd.DataFrame:
    """Every parameter error of every attempted-but-missed goal call (one row each)."""
    columns = ["run_id", "conversation_id", "goal_id", "api", "parameter", "error", "expected",
               "got", "call_index"]  # fmt: skip
    rows = []
    for c in conversations:
        for miss in c.missed:
            if miss.attempts == 0:
                continue
            for d in miss.details:
                if d.kind == "unexpected":  # an extra parameter does not miss a goal by itself
                    continue
                rows.append(
                    {
                        "run_id": c.run_id,
                        "conversation_id": c.conversation_id,
                        "goal_id": miss.goal_id,
                        "api": miss.api,
                        "parameter": d.parameter,
                        "error": "missing_parameter" if d.kind == "missing" else "wrong_value",
                        "expected": d.expected,
                        "got": d.got,
                        "call_index": miss.closest_call,
                    }
                )
    return pd.DataFrame(rows, columns=columns)


def parameter_errors(
    conversations: Sequence[AnalysedConversation], top: int | None = DEFAULT_TOP
) -> pd.DataFrame:
    """Figure 5: the most frequent parameter errors with counts and percentages of all
    parameter errors. Missing parameters group by (API, parameter); wrong values by (API,
    parameter, expected value), with the most frequent value the agent gave instead."""
    columns = ["label", "error", "api", "parameter", "expected", "count", "percent", "most_common_got"]
    detail = parameter_error_rows(conversations)
    total = len(detail)
    if not total:
        return pd.DataFrame(columns=columns)
    groups: dict[tuple, list] = {}
    for row in detail.itertuples(index=False):
        expected = row.expected if row.error == "wrong_value" else None
        groups.setdefault((row.error, row.api, row.parameter, expected), []).append(row.got)
    rows = []
    for (error, api, parameter, expected), gots in groups.items():
        if error == "wrong_value":
            label = f"{api}: {parameter}={expected} (wrong value)"
            # Ties go to the value seen first, so the output does not depend on hashing.
            got = Counter(gots).most_common(1)[0][0]
        else:
            label = f"{api}: {parameter} (missing)"
            got = None
        rows.append(
            {"label": label, "error": error, "api": api, "parameter": parameter,
             "expected": expected, "count": len(gots), "percent": 100.0 * len(gots) / total,
             "most_common_got": got}
        )  # fmt: skip
    rows.sort(key=lambda r: (-r["count"], r["label"]))
    if top is not None:
        rows = rows[:top]
    return pd.DataFrame(rows, columns=columns)


def error_report(
    db: Database | str,
    run_id: str | None = None,
    *,
    nodes: NodeScope = "ideal",
    top: int | None = DEFAULT_TOP,
) -> ErrorReport:
    """The error analysis of the stored conversations of a database (or one run)."""
    loaded = load_conversations(db, run_id, nodes=nodes)
    return error_report_from(loaded.conversations, loaded.run_ids, loaded.not_done, nodes=nodes, top=top)


def error_report_from(
    conversations: Sequence[AnalysedConversation],
    run_ids: list[str],
    not_done: dict[str, int] | None = None,
    *,
    nodes: NodeScope = "ideal",
    top: int | None = DEFAULT_TOP,
) -> ErrorReport:
    return ErrorReport(
        nodes=nodes,
        rates=error_rates(conversations),
        parameter_errors_total=len(parameter_error_rows(conversations)),
        per_api=records(errors_per_api(conversations)),
        parameter_errors=records(parameter_errors(conversations, top=top)),
        run_ids=run_ids,
        not_done=not_done or {},
    )
