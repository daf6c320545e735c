"""ToolWOZ as a registered environment: a thin adapter over `josh_core/toolwoz/`.

The ToolWOZ code stays where it is for now (many modules import it); this adapter gives the
registry what it asks of every environment. Moving the package here is left for later.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Callable

from josh_core.envs.base import Environment, Progress
from josh_core.toolwoz.reference_scoring import SCORING_MODES
from josh_core.types import ToolEnvironment


class ToolWOZEnvironment(Environment):
    name = "toolwoz"
    title = "ToolWOZ"
    description = ("MultiWOZ restaurants, hotels, attractions and trains as 7 APIs; goal API calls as the "
                   "sparse reward (toolwoz-synth, or the official scenarios with --official)")
    splits = ("train", "val", "test", "official-test")
    josh_split = "train"
    eval_split = "official-test"
    metrics = "toolwoz"
    default_user = "agenda"
    user_kinds = ("agenda", "llm", "script")
    plays_to_the_end = False
    scoring_modes = SCORING_MODES

    def prepare(self, from_path: Path | None = None, force: bool = False,
                progress: Progress | None = None) -> dict[str, int]:
        from josh_core.toolwoz.data import prepare

        return prepare(from_path=from_path, progress=progress, force=force)

    def ensure_prepared(self) -> None:
        from josh_core.toolwoz.data import ensure_prepared

        ensure_prepared()

    def load_split(self, split: str, limit: int | None = None) -> list[Any]:
        from josh_core.toolwoz.scenarios import load_split

        self.ensure_prepared()
        return load_split(split, limit)

    def load_scenario_file(self, path: str | Path) -> list[Any]:
        from josh_core.toolwoz.scenarios import load_scenario_file

        loaded = load_scenario_file(path)
        return loaded if isinstance(loaded, list) else [loaded]

    def scenario_from_json(self, data: Any) -> Any:
        from josh_core.toolwoz.types import Scenario

        return Scenario.model_validate(data)

    def make_env(self, scenario: Any, scoring: str | None = None) -> ToolEnvironment:
        from josh_core.toolwoz.env import ToolWOZEnv

        self.ensure_prepared()
        return ToolWOZEnv(scenario, scoring=self.check_scoring(scoring) or self.scoring_modes[0])

    def env_factory(self, scoring: str | None = None) -> Callable[[Any], ToolEnvironment]:
        return partial(self.make_env, scoring=self.check_scoring(scoring))


ENVIRONMENT = ToolWOZEnvironment()
