"""The model backend registry (josh_core/llm/specs.py): a backend is one module and one
registration, and everything that asks about backends reads that registration: the SPEC
parser, the agent factory and styles, the Launch page's checks and help, Ray's GPU planning."""

from __future__ import annotations

import pytest
from model_fixtures import ScriptedBackend

from josh_core.distributed.ray_rollout import loads_a_model
from josh_core.launch import check_decoding, check_spec
from josh_core.llm import specs
from josh_core.llm.base import BackendKind, BackendOptions
from josh_core.policies.compact_agent import CompactAgent
from josh_core.policies.factory import AGENT_KINDS, AgentOptions, agent_kinds, build_agent
from josh_core.policies.react_agent import ReactAgent
from josh_core.policies.styles import default_style
from josh_core.rollout import RolloutConfig


class ToyOptions(BackendOptions):
    replies: int = 1


def _toy_backend(rest: str, options: ToyOptions, base_url: str | None) -> ScriptedBackend:
    return ScriptedBackend(["SPEAK hello <COMMAND_END>"] * options.replies, name=f"toy:{rest}")


TOY = BackendKind(
    kind="toy", usage="toy:NAME", summary="a scripted model", options=ToyOptions, build=_toy_backend,
    in_process=True, grammar=lambda options, base_url: False,
    default_style=lambda rest: "compact" if rest == "small" else "react",
    check=lambda rest, base_url: [] if rest else ["needs a name, toy:NAME"],
)  # fmt: skip


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setattr(specs, "_LOADED", dict(specs._LOADED))
    specs.clear_shared_backends()
    yield specs.register_backend(TOY)
    specs.clear_shared_backends()


def test_a_registered_backend_is_known_everywhere_without_other_edits(toy):
    assert "toy" in specs.backend_kinds() and "toy" in agent_kinds()
    assert "toy:NAME" in specs.spec_usages()  # the Launch page's SPEC help
    assert specs.split_spec("toy:small") == ("toy", "small")
    # The factory builds it, with the style its registration gives `auto`.
    agent = build_agent("toy:small", AgentOptions(backends={"toy": {"replies": 3}}))
    assert isinstance(agent, CompactAgent) and agent.backend.name == "toy:small"
    assert len(agent.backend.replies) == 3
    assert isinstance(build_agent("toy:large"), ReactAgent)
    assert default_style("toy:small") == "compact" and default_style("toy:large") == "react"
    # The Launch page's checks: the kind is accepted, its own check speaks.
    assert check_spec("toy:small") == []
    assert check_spec("toy:") == ["agent SPEC toy:: needs a name, toy:NAME"]
    assert check_spec("llm:toy:small", "user") == []
    # Ray asks a GPU for workers that load it.
    assert loads_a_model("toy:small") and not loads_a_model("openai:gpt-4o") and not loads_a_model("script:x")
    # A decoding that needs the grammar is refused before a process starts.
    grounded = RolloutConfig(agent="toy:small", constrained=True, grounded=True)
    assert "cannot apply the action grammar" in check_decoding(grounded)[0]
    assert check_decoding(RolloutConfig(agent="toy:small")) == []


def test_every_built_in_backend_is_registered_once_and_whole():
    kinds = specs.backend_kinds()
    assert kinds[: len(specs.MODEL_KINDS)] == list(specs.MODEL_KINDS)
    assert set(AGENT_KINDS) == {*kinds, "script", "oracle"}
    for kind in kinds:
        entry = specs.get_backend(kind)
        assert entry.kind == kind and entry.usage.startswith(kind)
        assert issubclass(entry.options, BackendOptions)
        entry.options()  # every setting has a default
    # Every backend that loads its model here asks Ray for a GPU (the batched llama.cpp player
    # was once left out of Ray's hand-kept list).
    assert set(specs.in_process_kinds()) == {"embedded", "hf", "vllm", "llamacpp", "llamacpp-batched"}
    with pytest.raises(specs.UnknownBackend, match="unknown model SPEC kind 'bogus'"):
        specs.get_backend("bogus")


def test_the_openai_backend_applies_grammars_only_on_servers_that_take_them(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    grammar = RolloutConfig(agent="openai:gpt-4o", constrained=True, grounded=False)
    assert "decoding grammar: openai:gpt-4o cannot apply the action grammar" in check_decoding(grammar)[0]
    served = grammar.model_copy(update={"base_url": "http://127.0.0.1:8000/v1"})
    assert check_decoding(served) == []
    assert check_decoding(RolloutConfig(agent="openai:gpt-4o")) == []  # auto: free for API models
