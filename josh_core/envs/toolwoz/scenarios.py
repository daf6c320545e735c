"""Reading scenarios: splits, single scenarios by id, scenario files.

    load_split(split, limit=None, source=None) -> list[Scenario]
    get_scenario(id) -> Scenario
    load_scenario_file(path) -> Scenario | list[Scenario]

`source` is "synth" (toolwoz-synth, the default) or "official" (stored by
`josh data prepare --official DIR`); `JOSH_TOOLWOZ_SOURCE` changes the default.
Parsed splits are cached in memory; callers share the objects and must not mutate them.
"""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path

from pydantic import ValidationError

from josh_core.envs.toolwoz import store
from josh_core.envs.toolwoz.apis import API_NAMES, CallError, validate_call
from josh_core.envs.toolwoz.data import ensure_prepared
from josh_core.envs.toolwoz.types import DOMAINS, Scenario
from josh_core.paths import data_dir

_SYNTH_ID = re.compile(r"^synth-(train|val|test)-(\d+)$")


def default_source() -> str:
    source = os.environ.get("JOSH_TOOLWOZ_SOURCE") or "synth"
    if source not in store.SOURCES:
        raise ValueError(f"JOSH_TOOLWOZ_SOURCE must be one of {', '.join(store.SOURCES)}")
    return source


def _check_split(split: str) -> None:
    if split not in store.SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(store.SPLITS)}")


@lru_cache(maxsize=16)
def _parsed(root: str, source: str, split: str) -> tuple[Scenario, ...]:
    return tuple(Scenario.model_validate_json(line) for line in store.read_split_lines(source, split))


def _stored(source: str, split: str) -> tuple[Scenario, ...]:
    if source == "synth":
        ensure_prepared()
    elif not store.split_path(source, split).exists():
        raise FileNotFoundError(
            f"No official ToolWOZ {split} split under {store.source_dir(source)}. "
            "Store one with `josh data prepare --official DIR` (DIR holding MultiWOZ's "
            "data.json and testListFile.json/valListFile.json, or ground_truth_apis.json)."
        )
    return _parsed(str(data_dir()), source, split)


def load_split(split: str, limit: int | None = None, source: str | None = None) -> list[Scenario]:
    """Scenarios of a split in order; official-test is the first 450 of test."""
    _check_split(split)
    source = source or default_source()
    stored = _stored(source, "test" if split == "official-test" else split)
    if split == "official-test":
        stored = stored[: store.OFFICIAL_TEST_SIZE]
    if limit is not None:
        stored = stored[: max(limit, 0)]
    return list(stored)


def get_scenario(scenario_id: str) -> Scenario:
    """A scenario by id, from whichever stored source has it."""
    match = _SYNTH_ID.match(scenario_id)
    if match:
        split, index = match.group(1), int(match.group(2))
        scenarios = _stored("synth", split)
        if index < len(scenarios) and scenarios[index].id == scenario_id:
            return scenarios[index]
    else:
        for split in store.STORED_SPLITS:
            if store.split_path("official", split).exists():
                for scenario in _stored("official", split):
                    if scenario.id == scenario_id:
                        return scenario
    raise KeyError(f"no scenario with id {scenario_id!r}")


class ScenarioFileError(ValueError):
    """A scenario file that cannot be read, or holds a scenario that could never be won."""


def scenario_problems(scenario: Scenario) -> list[str]:
    """Why a scenario could never be won here (empty when it can): domains and goal calls must
    be ToolWOZ's, and every goal call must be a call the environment accepts."""
    problems = []
    for domain in dict.fromkeys([*scenario.domains, *scenario.goal]):
        if domain not in DOMAINS:
            problems.append(f"unknown domain {domain!r} (ToolWOZ's domains: {', '.join(DOMAINS)})")
    if not scenario.goal_calls:
        problems.append("no goal call: the scenario has nothing to achieve")
    for i, call in enumerate(scenario.goal_calls):
        if call.name not in API_NAMES:
            problems.append(f"goal call {i}: unknown API {call.name!r} (APIs: {', '.join(API_NAMES)})")
            continue
        try:
            validate_call(call.name, call.parameters)
        except CallError as error:
            problems.append(f"goal call {i} ({call.name}) could never be made: {error.message}")
            continue
        if call.domain not in scenario.domains:
            problems.append(f"goal call {i} ({call.name}) is in domain {call.domain!r}, not one of the scenario's")
    return problems


def _validated(item: object, where: str) -> Scenario:
    try:
        scenario = Scenario.model_validate(item)
    except ValidationError as error:
        details = "; ".join(
            f"{'.'.join(str(part) for part in e['loc']) or 'scenario'}: {e['msg']}" for e in error.errors()[:5]
        )
        raise ScenarioFileError(f"{where} is not a scenario: {details}") from None
    problems = scenario_problems(scenario)
    if problems:
        raise ScenarioFileError(f"{where} ({scenario.id}) could never be won: " + "; ".join(problems))
    return scenario


def load_scenario_file(path: str | Path) -> Scenario | list[Scenario]:
    """A JSON file holding one scenario object or a list of them. ScenarioFileError (a
    ValueError naming the file) when it cannot be read, is not scenarios, or holds a
    scenario with unknown domains, APIs or parameters."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError) as error:
        raise ScenarioFileError(f"{path} could not be read: {error}") from None
    except RecursionError:
        raise ScenarioFileError(f"{path} is nested too deeply to be a scenario file") from None
    except ValueError as error:
        raise ScenarioFileError(f"{path} is not JSON: {error}") from None
    if isinstance(value, list):
        return [_validated(item, f"{path} [{i}]") for i, item in enumerate(value)]
    if not isinstance(value, dict):
        raise ScenarioFileError(f"{path} must hold a scenario object or a list of them")
    return _validated(value, str(path))


def clear_cache() -> None:
    """Forget parsed splits (after they were regenerated)."""
    _parsed.cache_clear()
