"""ToolWOZ's registry entry: what the workbench asks of every environment (envs/base.py).

The registry imports this module by name (`josh_core.envs._BUILTIN`); the rest of the
workbench reaches ToolWOZ through it (`get_env("toolwoz")`), never through its modules.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from josh_core.envs.base import Environment, Progress
from josh_core.envs.toolwoz import data
from josh_core.envs.toolwoz.env import ToolWOZEnv
from josh_core.envs.toolwoz.reference_scoring import SCORING_MODES
from josh_core.envs.toolwoz.scenarios import load_scenario_file, load_split
from josh_core.envs.toolwoz.types import Scenario
from josh_core.types import ToolEnvironment

if TYPE_CHECKING:
    import typer


class ToolWOZEnvironment(Environment):
    name = "toolwoz"
    title = "ToolWOZ"
    description = ("MultiWOZ restaurants, hotels, attractions and trains as 7 APIs; goal API calls as the "
                   "sparse reward (toolwoz-synth, or the official scenarios with --official)")
    splits = ("train", "val", "test", "official-test")
    josh_split = "train"
    eval_split = "official-test"
    heldout_split = "val"  # self-training's rounds are compared on val, the official test kept apart
    metrics = "toolwoz"
    default_user = "agenda"
    user_kinds = ("agenda", "llm", "script")
    plays_to_the_end = False
    scoring_modes = SCORING_MODES

    def prepare(self, from_path: Path | None = None, force: bool = False,
                progress: Progress | None = None) -> dict[str, int]:
        return data.prepare(from_path=from_path, progress=progress, force=force)

    def prepare_official(self, folder: Path) -> dict[str, int]:
        """`josh data prepare --official DIR`: store the official ToolWOZ splits (docs/toolwoz.md)."""
        return data.prepare_official(folder)

    def ensure_prepared(self) -> None:
        data.ensure_prepared()

    def load_split(self, split: str, limit: int | None = None) -> list[Any]:
        self.ensure_prepared()
        return load_split(split, limit)

    def load_scenario_file(self, path: str | Path) -> list[Any]:
        loaded = load_scenario_file(path)
        return loaded if isinstance(loaded, list) else [loaded]

    def scenario_from_json(self, data: Any) -> Any:
        return Scenario.model_validate(data)

    def make_env(self, scenario: Any, scoring: str | None = None) -> ToolEnvironment:
        self.ensure_prepared()
        return ToolWOZEnv(scenario, scoring=self.check_scoring(scoring) or self.scoring_modes[0])

    def env_factory(self, scoring: str | None = None) -> Callable[[Any], ToolEnvironment]:
        return partial(self.make_env, scoring=self.check_scoring(scoring))

    def register_commands(self, app: typer.Typer) -> None:
        """`josh toolwoz list | show | score | schema | stats`, imported only when the `josh`
        command is built (the app never loads typer's commands)."""
        from josh_core.envs.toolwoz import cli

        cli.register(app)


ENVIRONMENT = ToolWOZEnvironment()
