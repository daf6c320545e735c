"""Model-backed agents from a backend and AgentOptions (the factory's `build_agent` lands here)."""

from __future__ import annotations

from typing import Any

from josh_core.llm.base import ChatBackend
from josh_core.policies.base import Agent
from josh_core.policies.compact_agent import COMPACT_MAX_ACTIONS, CompactAgent
from josh_core.policies.fc_agent import FunctionCallingAgent
from josh_core.policies.react_agent import ReactAgent
from josh_core.policies.styles import AGENT_STYLES, resolve_style


def default_max_actions(style: str) -> int:
    """Cap on generations per agent turn: ReACT's 5 (the original code), compact's 3."""
    return COMPACT_MAX_ACTIONS if style == "compact" else 5


def build_model_agent(backend: ChatBackend, options: Any = None) -> Agent:
    """A ReACT, compact or function-calling agent over `backend`.

    `options` is an AgentOptions: style (`auto` or None: resolve_style's choice for the
    backend's name), temperature (None: appendix B's default for the
    backend), max_actions_per_turn, constrained (None: on for local models),
    grounded (None: with constrained), max_tokens and, for ReACT, demonstrate (False drops the
    demonstration conversation).
    """
    # The backend's name has its SPEC's shape (vllm:embedded, llamacpp:embedded, embedded@dir),
    # so `auto` means here what it means for the SPEC (policies/styles.py).
    style = resolve_style(getattr(options, "style", None), backend.name)
    common = {
        "temperature": getattr(options, "temperature", None),
        "max_actions_per_turn": getattr(options, "max_actions_per_turn", None) or default_max_actions(style),
        "constrained": getattr(options, "constrained", None),
        "grounded": getattr(options, "grounded", None),
        "max_tokens": getattr(options, "max_tokens", None),
    }
    if style == "react":
        return ReactAgent(backend, demonstrate=getattr(options, "demonstrate", True), **common)
    if style == "compact":
        return CompactAgent(backend, **common)
    if style == "fc":
        return FunctionCallingAgent(backend, **common)
    raise ValueError(f"unknown agent style {style!r}: expected one of {AGENT_STYLES}")
