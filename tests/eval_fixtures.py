"""Stored evaluations with planted mistakes, made through the real path: scenario files and
script policies played by `josh eval` (plain rollouts against the real ToolWOZ environment
and MultiWOZ databases), so the expected numbers below can be checked by hand.

Runs (one `josh eval` each; every scenario of a run plays the same agent script):

- perfect:  eval-restaurant        search + book da vinci pizzeria correctly -> reward 1.0
- hotel:    eval-hotel, eval-hotel-2   search_hotel with pricerange=expensive (goal: moderate),
            then a call with an unknown parameter "wifi"                       -> reward 0.0 each
- train:    eval-train             a generation with no command (format error), then
            search_train without departure and leaveAt; never books            -> reward 0.0
- mixed:    eval-mixed             search_restaurant with area=all (invalid value), an APICALL
            that is not JSON (bad format), search_restaurant with food="modern chinese"
            (goal: chinese); then the attraction search, correctly         -> reward 0.5
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from engine_fixtures import call, speak
from josh_core.cli import app
from josh_core.envs.toolwoz.types import DomainGoal, GoalCall, Scenario


def _scenario(sid: str, goal: dict[str, DomainGoal], calls: list[GoalCall]) -> Scenario:
    return Scenario(
        id=sid,
        domains=list(goal),
        goal=goal,
        instructions=[f"Goal of {sid}."],
        goal_calls=calls,
    )


RESTAURANT = _scenario(
    "eval-restaurant",
    {"restaurant": DomainGoal(info={"food": "italian", "pricerange": "cheap", "area": "north"},
                              book={"time": "12:15", "day": "saturday", "people": "6"})},
    [
        GoalCall(name="search_restaurant", parameters={"food": "italian", "pricerange": "cheap", "area": "north"}),
        GoalCall(name="book_restaurant",
                 parameters={"time": "12:15", "day": "saturday", "people": "6", "name": "da vinci pizzeria"},
                 returns={"name": "da vinci pizzeria", "reference": "EVAL0001"}, unique_id="da vinci pizzeria"),
    ],
)  # fmt: skip


def _hotel(sid: str) -> Scenario:
    return _scenario(
        sid,
        {"hotel": DomainGoal(info={"type": "hotel", "pricerange": "moderate", "area": "north"})},
        [GoalCall(name="search_hotel", parameters={"type": "hotel", "pricerange": "moderate", "area": "north"})],
    )


HOTEL, HOTEL_2 = _hotel("eval-hotel"), _hotel("eval-hotel-2")

TRAIN = _scenario(
    "eval-train",
    {"train": DomainGoal(info={"departure": "kings lynn", "destination": "cambridge", "day": "wednesday",
                               "leaveAt": "10:15"}, book={"people": "4"})},
    [
        GoalCall(name="search_train", parameters={"departure": "kings lynn", "destination": "cambridge",
                                                  "day": "wednesday", "leaveAt": "10:15"}),
        GoalCall(name="book_train", parameters={"people": "4", "trainID": "TR3478"},
                 returns={"trainID": "TR3478", "reference": "EVAL0002"}, unique_id="TR3478"),
    ],
)  # fmt: skip

MIXED = _scenario(
    "eval-mixed",
    {"restaurant": DomainGoal(info={"food": "chinese", "area": "centre"}),
     "attraction": DomainGoal(info={"area": "east", "type": "entertainment"})},
    [
        GoalCall(name="search_restaurant", parameters={"food": "chinese", "area": "centre"}),
        GoalCall(name="search_attraction", parameters={"area": "east", "type": "entertainment"}),
    ],
)  # fmt: skip

NOT_JSON = 'PLAN look it up <COMMAND_END> APICALL {"name": "search_restaurant", "parameters": {"food": <COMMAND_END>'

AGENT_SCRIPTS: dict[str, list[list[list[str]]]] = {
    "perfect": [
        [[call("search_restaurant", food="italian", pricerange="cheap", area="north"), speak("da vinci pizzeria")]],
        [[call("book_restaurant", time="12:15", day="saturday", people="6", name="da vinci pizzeria"),
          speak("booked")]],
    ],
    "hotel": [
        [[call("search_hotel", type="hotel", pricerange="expensive", area="north"),
          call("search_hotel", type="hotel", wifi="yes"), speak("no luck")]],
        [[speak("sorry")]],
    ],
    "train": [
        [["I should look for a train first.",
          call("search_train", destination="cambridge", day="wednesday"), speak("found one")]],
        [[speak("anything else?")]],
    ],
    "mixed": [
        [[call("search_restaurant", food="chinese", area="all"), NOT_JSON,
          call("search_restaurant", food="modern chinese", area="centre"), speak("nothing found")]],
        [[call("search_attraction", area="east", type="entertainment"), speak("cherry hinton hall")]],
        [[speak("anything else?")]],
    ],
}  # fmt: skip

RUN_SCENARIOS: dict[str, list[Scenario]] = {
    "perfect": [RESTAURANT],
    "hotel": [HOTEL, HOTEL_2],
    "train": [TRAIN],
    "mixed": [MIXED],
}
USER_TURNS = ["hello, I need some help", "yes please", "that is all", "thanks"]


def write_json(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value, indent=1))
    return path


def run_cli(*args: str) -> Any:
    """Run a `josh` command in-process; returns the result (exit code, stdout)."""
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def eval_json(directory: Path, db: Path, name: str, *extra: str) -> dict:
    """`josh eval --json` of one planted run; returns the printed evaluation."""
    scenarios = write_json(directory / f"{name}.scenarios.json",
                           [s.model_dump(mode="json") for s in RUN_SCENARIOS[name]])  # fmt: skip
    agent = write_json(directory / f"{name}.agent.json", {"turns": AGENT_SCRIPTS[name]})
    user = write_json(directory / "user.json", {"turns": USER_TURNS})
    result = run_cli(
        "eval", "--scenario-file", str(scenarios), "--agent", f"script:{agent}", "--user", f"script:{user}",
        "--db", str(db), "--seed", "7", "--resamples", "50", "--json", *extra,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


_BUILT: dict[str, tuple[Path, dict[str, dict]]] = {}


def planted_database(tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    """The database with the four planted runs (built once per test session), and each
    run's `josh eval --json` output by run name."""
    if "db" not in _BUILT:
        directory = tmp_path_factory.mktemp("planted")
        db = directory / "eval.duckdb"
        outputs = {name: eval_json(directory, db, name) for name in RUN_SCENARIOS}
        _BUILT["db"] = (db, outputs)
    return _BUILT["db"]
