"""Build agents and user simulators from the SPEC strings the CLI and the app accept.

Agent SPEC: `embedded[@ADAPTER_DIR]` (default) | `openai:MODEL` | `hf:PATH_OR_ID[@ADAPTER_DIR]`
| `vllm:MODEL` | `llamacpp:GGUF_PATH` | `script:FILE`.
User SPEC: `agenda` (default) | `llm:<agent-style SPEC>` | `script:FILE`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from josh_core.policies.base import Agent, UserSimulator

DEFAULT_AGENT_SPEC = "embedded"
DEFAULT_USER_SPEC = "agenda"


@dataclass
class AgentOptions:
    """How an agent is built beside its model SPEC (CLI flags and app widgets map onto this)."""

    style: str = "auto"  # "auto" | "react" | "compact" | "fc" (function calling); see default_style
    temperature: float | None = None  # None: the backend's default (appendix B)
    max_actions_per_turn: int | None = None  # cap on generations in one agent turn; None: the style's
    constrained: bool | None = None  # structured action decoding; None: on for local models
    grounded: bool | None = None  # free-text values only from the conversation; None: = constrained
    base_url: str | None = None  # OpenAI-compatible endpoint (else OPENAI_BASE_URL)
    extra: dict[str, Any] = field(default_factory=dict)


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


AGENT_STYLES = ("auto", "react", "compact", "fc")


def default_style(agent_spec: str) -> str:
    """The agent style `auto` means for a SPEC: compact for the embedded model (a short prompt
    and no PLAN measured several times faster and no worse for it; bench/bench_player.py),
    ReACT (appendix E) for every other model."""
    spec = agent_spec.strip()
    if spec in ("embedded", "oracle") or spec.startswith(("embedded@", "llamacpp:embedded", "llamacpp-batched:embedded",
                                                                     "vllm:embedded")):
        return "compact"
    return "react"


def resolve_style(style: str | None, agent_spec: str) -> str:
    """`auto`/None -> default_style(spec); a named style is checked and kept."""
    if style in (None, "", "auto"):
        return default_style(agent_spec)
    if style not in AGENT_STYLES:
        raise ValueError(f"unknown agent style {style!r}: expected one of {', '.join(AGENT_STYLES)}")
    return style


def split_spec(spec: str) -> tuple[str, str]:
    """`"openai:gpt-4o"` -> `("openai", "gpt-4o")`; `"embedded@dir"` -> `("embedded", "@dir")`."""
    spec = spec.strip()
    if not spec:
        raise ValueError("empty SPEC")
    for kind in ("embedded", "agenda", "oracle"):
        if spec == kind or spec.startswith(kind + "@"):
            return kind, spec[len(kind) :]
    if ":" not in spec:
        raise ValueError(
            f"unknown SPEC {spec!r}: expected embedded[@ADAPTER], openai:MODEL, hf:PATH[@ADAPTER], "
            "vllm:MODEL, llamacpp:GGUF, llamacpp-batched:GGUF, script:FILE (agents) or agenda, llm:SPEC, script:FILE (users)"
        )
    kind, rest = spec.split(":", 1)
    return kind, rest


def build_agent(spec: str = DEFAULT_AGENT_SPEC, options: AgentOptions | None = None) -> Agent:
    options = options or AgentOptions()
    kind, rest = split_spec(spec)
    if kind == "script":
        from josh_core.policies.script import ScriptAgent

        return ScriptAgent.from_file(rest)
    if kind == "oracle":
        from josh_core.policies.oracle import OracleAgent

        return OracleAgent()
    from dataclasses import replace

    from josh_core.llm.specs import build_backend
    from josh_core.policies.agents import build_model_agent

    options = replace(options, style=resolve_style(options.style, spec))
    return build_model_agent(build_backend(spec, options), options)


def build_user(spec: str = DEFAULT_USER_SPEC, options: AgentOptions | None = None) -> UserSimulator:
    kind, rest = split_spec(spec)
    if kind == "agenda":
        from josh_core.policies.agenda_user import AgendaUser

        return AgendaUser()
    if kind == "script":
        from josh_core.policies.script import ScriptUser

        return ScriptUser.from_file(rest)
    if kind == "llm":
        from josh_core.llm.specs import build_backend
        from josh_core.policies.llm_user import LLMUser

        return LLMUser(build_backend(rest, options or AgentOptions()))
    raise ValueError(f"unknown user SPEC {spec!r}: expected agenda, llm:SPEC or script:FILE")
