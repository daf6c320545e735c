"""The environment registry: `josh envs` lists it, `--env NAME` picks from it.

    get_env(name) -> Environment        names() -> registered names, in order
    register(env)                       add an environment (a plugin or a test)
    scenario_from_json(data, env=None)  a stored scenario as its environment's object

Built-in environments are imported when first asked for, so listing them loads nothing
heavy. Each lives in its own package under `josh_core/envs/` (ToolWOZ: `envs/toolwoz/`, its
registry entry `environment.py`); code outside a package reaches it only through here.
"""

from __future__ import annotations

import importlib
from typing import Any

from josh_core.envs.base import Environment, score_path  # noqa: F401  (re-exported)

DEFAULT_ENV = "toolwoz"

# name -> "module:attribute" of the Environment instance, imported on first use.
_BUILTIN: dict[str, str] = {
    "toolwoz": "josh_core.envs.toolwoz.environment:ENVIRONMENT",
    "tau2-retail": "josh_core.envs.tau2_retail:ENVIRONMENT",
    "tau2-airline": "josh_core.envs.tau2_airline:ENVIRONMENT",
}
_LOADED: dict[str, Environment] = {}


class UnknownEnvironment(ValueError):
    """An environment name that is not registered."""


def names() -> list[str]:
    return list(dict.fromkeys([*_BUILTIN, *_LOADED]))


def register(env: Environment) -> Environment:
    _LOADED[env.name] = env
    return env


def get_env(name: str | None = None) -> Environment:
    name = (name or DEFAULT_ENV).strip()
    if name in _LOADED:
        return _LOADED[name]
    if name not in _BUILTIN:
        raise UnknownEnvironment(f"unknown environment {name!r}; use one of {', '.join(names())}")
    module, attribute = _BUILTIN[name].split(":")
    env = getattr(importlib.import_module(module), attribute)
    _LOADED[name] = env
    return env


def env_of_scenario(data: Any) -> str:
    """The environment a stored scenario belongs to: its `env` field (τ² tasks carry one),
    else ToolWOZ (whose scenarios predate environments)."""
    if isinstance(data, dict) and isinstance(data.get("env"), str):
        return data["env"]
    return DEFAULT_ENV


def scenario_from_json(data: Any, env: str | None = None) -> Any:
    """A stored scenario as its environment's object (`env` overrides what the data says)."""
    return get_env(env or env_of_scenario(data)).scenario_from_json(data)
