"""A run's configuration (`RolloutConfig`: everything that decides its trees, stored with the
run) and the policies and environments built from it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationInfo, field_validator, model_validator

from josh_core.envs import get_env
from josh_core.policies.agents import default_max_actions
from josh_core.policies.base import Agent, UserSimulator
from josh_core.policies.factory import (
    DEFAULT_USER_SPEC,
    AgentOptions,
    build_agent,
    build_user,
)
from josh_core.policies.styles import resolve_style
from josh_core.redact import redact, redact_url, url_secrets
from josh_core.rollout.options import RUN_OPTIONS
from josh_core.rollout.options import run_option as _option
from josh_core.search.engine import SearchConfig
from josh_core.search.tree import derive_seed
from josh_core.types import ToolEnvironment

EnvFactory = Callable[[Any], ToolEnvironment]  # a scenario of the run's environment -> its env

# The bounds of a run's sizes (declared with their options, options.py).
MAX_BEAM = RUN_OPTIONS["beam"].le
MAX_BRANCHING = RUN_OPTIONS["branching"].le
MAX_TURNS = RUN_OPTIONS["max_turns"].le
MAX_ACTIONS_PER_TURN = RUN_OPTIONS["max_actions_per_turn"].le
MAX_CONCURRENCY = RUN_OPTIONS["concurrency"].le
MAX_TEMPERATURE = RUN_OPTIONS["temperature"].le
SEED_RANGE = (RUN_OPTIONS["seed"].ge, RUN_OPTIONS["seed"].le)


class PolicyError(ValueError):
    """An agent or user SPEC (or its script file) that cannot be built; names its flag."""


class RolloutConfig(BaseModel):
    """Everything that decides a run's trees; stored with the run so it can be resumed."""

    # Each field's default, bounds and help are its run option's (options.py).
    # The environment (`josh envs`); declared first so that the user check below can see it.
    env: str = _option("env").field(validate_default=True)
    # Reward semantics, among the environment's `scoring_modes` (ToolWOZ: toolwoz | reference);
    # None resolves to its default, so stored runs always name the one they were played with.
    scoring: str | None = _option("scoring").field(validate_default=True)
    josh: bool = _option("josh").field()
    agent: str = _option("agent").field()
    user: str = _option("user").field(validate_default=True)  # None: the environment's default
    style: str = _option("style").field()  # `auto` is resolved on creation
    temperature: float | None = _option("temperature").field()
    max_actions_per_turn: int | None = _option("max_actions_per_turn").field()  # None: the style's own cap
    # The `decoding` option, as the pair it stands for (policies/factory.py DECODING_MODES).
    constrained: bool | None = None
    grounded: bool | None = None
    base_url: str | None = _option("base_url").field()
    max_turns: int = _option("max_turns").field()
    beam: int = _option("beam").field()
    branching: int = _option("branching").field()
    seed: int = _option("seed").field()
    concurrency: int = _option("concurrency").field()
    # Where the scenarios came from (for the record; the run stores the scenarios themselves).
    split: str | None = _option("split").field()
    limit: int | None = _option("limit").field()
    scenario_file: str | None = _option("scenario_file").field()

    @field_validator("env")
    @classmethod
    def _known_env(cls, value: str) -> str:
        return get_env(value).name  # UnknownEnvironment (a ValueError) names the registered ones

    @field_validator("scoring")
    @classmethod
    def _scoring_for_env(cls, value: str | None, info: ValidationInfo) -> str | None:
        if "env" not in info.data:  # the environment was refused: that error is the one to show
            return value
        return get_env(info.data["env"]).check_scoring(value)

    @field_validator("user", mode="before")
    @classmethod
    def _user_for_env(cls, value: Any, info: ValidationInfo) -> Any:
        if "env" not in info.data:  # the environment was refused: that error is the one to show
            return value or DEFAULT_USER_SPEC
        environment = get_env(info.data["env"])
        value = value or environment.default_user
        if not isinstance(value, str):
            return value  # the type check that follows names the problem
        problem = environment.check_user(value)
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _resolve_defaults(self) -> "RolloutConfig":
        # Stored runs record the concrete style and cap the agent played with, never "auto".
        if not self.agent.startswith("script:"):
            self.style = resolve_style(self.style, self.agent)
        elif self.style == "auto":
            self.style = "react"
        if self.max_actions_per_turn is None:
            self.max_actions_per_turn = default_max_actions(self.style)
        return self

    def agent_options(self) -> AgentOptions:
        return AgentOptions(
            style=self.style,
            temperature=self.temperature,
            max_actions_per_turn=self.max_actions_per_turn,
            constrained=self.constrained,
            grounded=self.grounded,
            base_url=self.base_url,
        )

    def search_config(self, scenario_id: str) -> SearchConfig:
        seed = derive_seed(self.seed, scenario_id)
        if not self.josh:
            plain = SearchConfig.plain(max_depth=self.max_turns, seed=seed)
            # Environments rewarded by the end state (τ²) play on after the goal calls.
            plain.stop_when_goals_done = not get_env(self.env).plays_to_the_end
            return plain
        return SearchConfig(
            max_depth=self.max_turns,
            branching_factor=self.branching,
            max_beam=self.beam,
            seed=seed,
        )

    def stored(self) -> dict[str, Any]:
        """The configuration as stored with the run: credentials in the base URL are not kept
        (a resume is given the URL again)."""
        data = self.model_dump()
        data["base_url"], _ = redact_url(self.base_url)
        data["agent_options"] = {
            "style": self.style,
            "temperature": self.temperature,
            "max_actions_per_turn": self.max_actions_per_turn,
            "constrained": self.constrained,
            "grounded": self.grounded,
        }
        return data


def environment_factory(config: RolloutConfig) -> EnvFactory:
    """How the run's scenarios become environments: its registered environment's `make_env`,
    with the run's scoring."""
    return get_env(config.env).env_factory(config.scoring)


def build_policies(config: RolloutConfig) -> tuple[Agent, UserSimulator]:
    """The agent and user of a configuration; PolicyError (naming --agent or --user) when a
    SPEC or its script file cannot be built."""
    options = config.agent_options()
    built: list[Any] = []
    for flag, spec, build in (("--agent", config.agent, build_agent), ("--user", config.user, build_user)):
        try:
            built.append(build(spec, options))
        except Exception as error:  # any failure to build is the SPEC's problem, told plainly
            shown = redact(spec)
            detail = " ".join(str(error).split()) or type(error).__name__
            raise PolicyError(f"{flag} {shown!r}: {redact(detail, url_secrets(config.base_url))}") from error
    return built[0], built[1]
