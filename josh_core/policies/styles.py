"""Agent styles, and the one rule for what style `auto` means.

The factory (building an agent from a SPEC), the agents (building one from a backend) and the
rollout configuration all ask `resolve_style`, so a SPEC gets the same style however its agent
is built.
"""

from __future__ import annotations

from josh_core.llm.specs import get_backend, split_spec

AGENT_STYLES = ("auto", "react", "compact", "fc")


def default_style(agent_spec: str) -> str:
    """The agent style `auto` means for a SPEC (or a backend's name, which has a SPEC's shape):
    its backend's `default_style` (llm/specs.py): compact for the embedded model on any backend
    (a short prompt and no PLAN measured several times faster and no worse for it;
    bench/bench_player.py), ReACT (appendix E) for every other model. The oracle plays compact
    actions; a name that is no model SPEC gets ReACT."""
    try:
        kind, rest = split_spec(agent_spec)
        if kind == "oracle":
            return "compact"
        return get_backend(kind).default_style(rest)
    except ValueError:  # not a model SPEC (script:, a backend's own name)
        return "react"


def resolve_style(style: str | None, agent_spec: str) -> str:
    """`auto`/None -> default_style(spec); a named style is checked and kept."""
    if style in (None, "", "auto"):
        return default_style(agent_spec)
    if style not in AGENT_STYLES:
        raise ValueError(f"unknown agent style {style!r}: expected one of {', '.join(AGENT_STYLES)}")
    return style
