"""Build agents and user simulators from the SPEC strings the CLI and the app accept.

Agent SPEC: a model SPEC of the backend registry (`llm/specs.py`: `embedded[@ADAPTER_DIR]`, the
default, `openai:MODEL`, `hf:PATH_OR_ID[@ADAPTER_DIR]`, ...) | `script:FILE` | `oracle` (agent_kinds()).
User SPEC: `agenda` (default) | `llm:<model SPEC>` | `script:FILE` (USER_KINDS).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from josh_core.llm.specs import MODEL_KINDS, backend_kinds, build_backend, split_spec
from josh_core.policies.agenda_user import AgendaUser
from josh_core.policies.agents import build_model_agent
from josh_core.policies.base import Agent, UserSimulator
from josh_core.policies.llm_user import LLMUser
from josh_core.policies.oracle import OracleAgent
from josh_core.policies.script import ScriptAgent, ScriptUser
from josh_core.policies.styles import AGENT_STYLES, default_style, resolve_style

# Importable from here as before: the SPEC parser lives with the backends (llm/specs.py), the
# style rule in policies/styles.py.
__all__ = [
    "AGENT_KINDS", "AGENT_STYLES", "DECODING_MODES", "DEFAULT_AGENT_SPEC", "DEFAULT_USER_SPEC", "USER_KINDS",
    "AgentOptions", "agent_kinds", "build_agent", "build_user", "decoding_flags", "decoding_mode", "default_style",
    "resolve_style", "split_spec",
]

DEFAULT_AGENT_SPEC = "embedded"
DEFAULT_USER_SPEC = "agenda"
# The SPEC kinds build_agent and build_user take (the CLI builds through them, the app's Launch
# page checks against them: josh_core/launch.py).
POLICY_KINDS = ("script", "oracle")  # agents that are no model
AGENT_KINDS = (*MODEL_KINDS, *POLICY_KINDS)
USER_KINDS = ("agenda", "llm", "script")


def agent_kinds() -> tuple[str, ...]:
    """AGENT_KINDS with any backend registered at run time (llm/specs.register_backend)."""
    return (*backend_kinds(), *POLICY_KINDS)


@dataclass
class AgentOptions:
    """How an agent is built beside its model SPEC (CLI flags and app widgets map onto this)."""

    style: str = "auto"  # "auto" | "react" | "compact" | "fc" (function calling); see default_style
    temperature: float | None = None  # None: the backend's default (appendix B)
    max_actions_per_turn: int | None = None  # cap on generations in one agent turn; None: the style's
    constrained: bool | None = None  # structured action decoding; None: on for local models
    grounded: bool | None = None  # free-text values only from the conversation; None: = constrained
    base_url: str | None = None  # OpenAI-compatible endpoint (else OPENAI_BASE_URL)
    max_tokens: int | None = None  # per generation; None: the style's budget
    demonstrate: bool = True  # ReACT: the demonstration conversation in the prompt
    # Per backend kind, its own settings (llm/specs.py): {"hf": {"device": "cpu"}} or the typed
    # options class ({"hf": HFOptions(device="cpu")}); checked when the backend is built.
    backends: dict[str, Any] = field(default_factory=dict)


# How agent actions are decoded (`--decoding`): (constrained, grounded) per mode.
# auto: the grammar with grounded values for local models, free text for API models.
DECODING_MODES: dict[str, tuple[bool | None, bool | None]] = {
    "auto": (None, None),
    "grounded": (True, True),  # action grammar + free-text values taken from the conversation
    "grammar": (True, False),  # action grammar over the API schemas only
    "free": (False, False),  # unconstrained text (the paper's "incorrect API format" stays measurable)
}


def decoding_flags(mode: str) -> tuple[bool | None, bool | None]:
    """`"grounded"` -> `(constrained, grounded)`; raises ValueError for an unknown mode."""
    if mode not in DECODING_MODES:
        raise ValueError(f"unknown decoding mode {mode!r}: expected one of {', '.join(DECODING_MODES)}")
    return DECODING_MODES[mode]


def decoding_mode(constrained: bool | None, grounded: bool | None) -> str:
    """The `--decoding` mode of a (constrained, grounded) pair (inverse of decoding_flags)."""
    for mode, flags in DECODING_MODES.items():
        if flags == (constrained, grounded):
            return mode
    if constrained is False:
        return "free"
    return "grounded" if grounded or (grounded is None and constrained) else "grammar"


def build_agent(spec: str = DEFAULT_AGENT_SPEC, options: AgentOptions | None = None) -> Agent:
    options = options or AgentOptions()
    kind, rest = split_spec(spec)
    if kind == "script":
        return ScriptAgent.from_file(rest)
    if kind == "oracle":
        return OracleAgent()
    options = replace(options, style=resolve_style(options.style, spec))
    return build_model_agent(build_backend(spec, options), options)


def build_user(spec: str = DEFAULT_USER_SPEC, options: AgentOptions | None = None) -> UserSimulator:
    kind, rest = split_spec(spec)
    if kind == "agenda":
        return AgendaUser()
    if kind == "script":
        return ScriptUser.from_file(rest)
    if kind == "llm":
        return LLMUser(build_backend(rest, options or AgentOptions()))
    raise ValueError(f"unknown user SPEC {spec!r}: expected agenda, llm:SPEC or script:FILE")
