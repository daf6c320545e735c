"""What an environment brings to the workbench (docs/environments.md).

An `Environment` is the registry entry of one benchmark: it prepares its data, lists its
splits and scenarios, turns a scenario into a `ToolEnvironment` (josh_core/types.py) the
engine and the agents talk to, says which user simulators can play its scenarios and which
metrics its runs are measured with. The engine, rollouts, evaluation, analysis, storage and
pages take an environment by name (`--env`, stored in each run's configuration), never
ToolWOZ by name.

A `ToolEnvironment` made by `make_env` is the per-scenario object: tools, goal ids,
`completed_goals`, `score`. Environments whose tools change a state (τ²'s databases) also
give `for_path(calls)`: a view of the scenario's initial state with a path's calls replayed,
whose `execute` applies its own calls to that private state. The engine gives every agent turn
such a view (search/engine.py), so sibling leaves never see each other's writes and the tree
does not depend on concurrency.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from josh_core.types import ToolEnvironment

if TYPE_CHECKING:
    import typer

Progress = Callable[[str, int, int], None]  # (step, done, total)

# Metric families (analysis/metrics.py): ToolWOZ's Average Reward and 100% Success Rate over
# goal calls, or τ²'s Pass^k over repeated trials of the same task.
METRICS = ("toolwoz", "pass^k")


class DataUnavailable(RuntimeError):
    """An environment's data could be neither found in the cache, nor fetched, nor read from
    --from. Each environment raises its own subclass; callers catch this one."""


class Scenario(Protocol):
    """What the engine, rollouts and evaluation read of any environment's scenario (each
    environment has its own pydantic model; docs/environments.md)."""

    id: str
    domains: list[str]
    instructions: list[str]
    goal_calls: list[Any]  # each with a `name` and `parameters`

    def goal_call_ids(self) -> list[str]: ...


class Environment:
    """One registered environment. Subclasses set the class attributes and implement the
    methods that raise NotImplementedError."""

    name: ClassVar[str]
    title: ClassVar[str] = ""
    description: ClassVar[str] = ""
    splits: ClassVar[tuple[str, ...]] = ()
    josh_split: ClassVar[str] = "train"  # default split of JOSH rollouts (harvesting)
    eval_split: ClassVar[str] = "test"  # default split of plain rollouts and evaluations
    # The split a self-training experiment evaluates its rounds on, held out from the JOSH split
    # and, where there is one, from the final test (None: `eval_split`).
    heldout_split: ClassVar[str | None] = None
    metrics: ClassVar[str] = "toolwoz"
    default_user: ClassVar[str] = "agenda"
    user_kinds: ClassVar[tuple[str, ...]] = ("agenda", "llm", "script")
    # Plain rollouts of an environment whose reward is the end state of the episode (τ²) play
    # on after the goal calls are made (the agent may still have to say something, or must
    # not write anything else); JOSH searches always stop when no goal is left.
    plays_to_the_end: ClassVar[bool] = False
    # Reward semantics a run may choose (`--scoring`), the default first; empty: the
    # environment has one way of scoring and no choice.
    scoring_modes: ClassVar[tuple[str, ...]] = ()

    # -- data -------------------------------------------------------------------------------
    def prepare(self, from_path: Path | None = None, force: bool = False,
                progress: Progress | None = None) -> dict[str, int]:
        """Fetch, verify and convert the data; the number of scenarios per split."""
        raise NotImplementedError

    def ensure_prepared(self) -> None:
        """Prepare what is missing (no network once the cache is complete)."""
        raise NotImplementedError

    # -- scenarios --------------------------------------------------------------------------
    def load_split(self, split: str, limit: int | None = None) -> list[Any]:
        raise NotImplementedError

    def load_scenario_file(self, path: str | Path) -> list[Any]:
        """Scenarios from a JSON file (one object or a list); ValueError naming the file."""
        raise NotImplementedError

    def scenario_from_json(self, data: Any) -> Any:
        """A stored scenario (the run's JSON) as this environment's scenario object."""
        raise NotImplementedError

    def scenario_id(self, scenario: Any) -> str:
        return scenario.id

    # -- playing ----------------------------------------------------------------------------
    def make_env(self, scenario: Any) -> ToolEnvironment:
        raise NotImplementedError

    @property
    def default_scoring(self) -> str | None:
        return self.scoring_modes[0] if self.scoring_modes else None

    def check_scoring(self, scoring: str | None) -> str | None:
        """The scoring a run plays with (None: the default); ValueError for one it lacks."""
        if scoring is None or scoring == self.default_scoring:
            return self.default_scoring
        if scoring not in self.scoring_modes:
            offered = ", ".join(self.scoring_modes) if self.scoring_modes else "none (it scores one way)"
            raise ValueError(f"{self.name} has no scoring {scoring!r}; its scoring modes: {offered}")
        return scoring

    def env_factory(self, scoring: str | None = None) -> Callable[[Any], ToolEnvironment]:
        """scenario -> ToolEnvironment with the given scoring (environments with modes override)."""
        self.check_scoring(scoring)
        return self.make_env

    def check_user(self, spec: str) -> str | None:
        """Why a user SPEC cannot play this environment's scenarios (None when it can)."""
        kind = spec.strip().split(":", 1)[0].split("@", 1)[0]
        if kind not in self.user_kinds:
            return (f"the {kind!r} user cannot play {self.name} scenarios; use one of "
                    + ", ".join(f"{k}:SPEC" if k == "llm" else f"{k}:FILE" if k == "script" else k
                                for k in self.user_kinds))
        return None

    def register_commands(self, app: typer.Typer) -> None:
        """Add this environment's own `josh` commands, if it has any (ToolWOZ: `josh toolwoz`)."""

    def default_split(self, josh: bool) -> str:
        return self.josh_split if josh else self.eval_split

    def check_split(self, split: str) -> None:
        if split not in self.splits:
            raise ValueError(f"unknown {self.name} split {split!r}; use one of {', '.join(self.splits)}")

    def describe(self) -> dict[str, Any]:
        """What `josh envs --json` prints for this environment."""
        return {
            "name": self.name, "title": self.title, "description": self.description,
            "splits": list(self.splits), "josh_split": self.josh_split, "eval_split": self.eval_split,
            "heldout_split": self.heldout_split or self.eval_split,
            "metrics": self.metrics, "default_user": self.default_user, "users": list(self.user_kinds),
            "scoring_modes": list(self.scoring_modes),
        }


def score_path(env: ToolEnvironment, nodes: Sequence[Any]) -> dict[str, Any] | None:
    """The environment's score of one path of a tree (the ideal path of a finished search),
    as stored with the conversation: `env.score_path(nodes)` when the environment scores
    what the agent said too (τ²'s required outputs), else `env.score(calls)` (ToolWOZ)."""
    if hasattr(env, "score_path"):
        return env.score_path(list(nodes)).model_dump(mode="json")
    if hasattr(env, "score"):
        calls = [call for node in nodes for call in node.api_calls]
        return env.score(calls).model_dump(mode="json")
    return None
