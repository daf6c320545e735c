"""A tiny registered environment for the online-training tests: one API call earns the reward.

Each scenario's goal is one call of `goal` (book_hotel or search_other, both without
parameters); the user says one line and hangs up. With the compact agent and its grammar, a
policy's first generation is SPEAK or an APICALL of one of the two APIs, so "which API the
policy calls" is an action whose probability a test can measure before and after training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from engine_fixtures import ToyEnv
from josh_core.envs import register
from josh_core.envs.base import Environment

APIS = ["book_hotel", "search_other"]


class ToyScenario(BaseModel):
    id: str
    domains: list[str] = ["hotel"]
    instructions: list[str] = ["Book a hotel."]
    goal_calls: list[dict[str, Any]] = []
    goal: str = "book_hotel"

    def goal_call_ids(self) -> list[str]:
        return [f"0:{self.goal}"]


class ToyEnvironment(Environment):
    name = "toy-online"
    title = "toy"
    splits = ("train",)
    josh_split = "train"
    eval_split = "train"
    user_kinds = ("script",)

    def __init__(self, goal: str = "book_hotel", scenarios: int = 4):
        self.goal = goal
        self.count = scenarios

    def ensure_prepared(self) -> None:
        pass

    def load_split(self, split: str, limit: int | None = None) -> list[ToyScenario]:
        self.check_split(split)
        out = [ToyScenario(id=f"toy-{i}", goal=self.goal) for i in range(self.count)]
        return out[:limit] if limit is not None else out

    def load_scenario_file(self, path) -> list[ToyScenario]:
        data = json.loads(Path(path).read_text())
        return [ToyScenario.model_validate(d) for d in (data if isinstance(data, list) else [data])]

    def scenario_from_json(self, data: Any) -> ToyScenario:
        return ToyScenario.model_validate(data)

    def make_env(self, scenario: ToyScenario) -> ToyEnv:
        return ToyEnv([(scenario.goal, {})], apis=APIS)


def use_toy_environment(goal: str = "book_hotel", scenarios: int = 4) -> ToyEnvironment:
    """Register (or re-register) the toy environment with this goal."""
    return register(ToyEnvironment(goal, scenarios))  # type: ignore[return-value]


def user_script(folder: Path) -> str:
    """A user SPEC that asks once and hangs up."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "user.json"
    path.write_text(json.dumps({"turns": ["I need a hotel booked."]}))
    return f"script:{path}"
