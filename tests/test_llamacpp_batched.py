"""The batched llama.cpp player (`llamacpp-batched:GGUF`), on the embedded GGUF.

Like tests/test_llamacpp_backend.py these need the optional llama-cpp-python extra; without it
they are skipped with the reason in the report, and JOSH_REQUIRE_LLAMACPP=1 makes a missing
llama-cpp-python a failure instead. The SPEC checks that need no model run either way.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os

import pytest

from josh_core.envs.toolwoz.apis import API_EXAMPLES, TOOLS
from josh_core.llm.base import LOCAL_MODEL_SAMPLING, ChatRequest
from josh_core.llm.structured import REACT_MAX_TOKENS, check_react, react_constraint
from josh_core.policies.prompts import react_prompt_messages
from josh_core.types import Message

HAVE_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None
REQUIRED = os.environ.get("JOSH_REQUIRE_LLAMACPP") == "1"
needs_llama_cpp = pytest.mark.skipif(
    not HAVE_LLAMA_CPP and not REQUIRED,
    reason="llama-cpp-python is not installed: pip install 'josh-workbench[llamacpp]' "
    "(or pip install --find-links ~/.cache/josh-wheels llama-cpp-python)",
)


def chat_request(text: str, seed: int, *, n: int = 1, max_tokens: int = 24, stop: list[str] | None = None,
                 constrained: bool = False) -> ChatRequest:
    if constrained:
        messages = react_prompt_messages(TOOLS, API_EXAMPLES, True) + [Message(role="user", content=text)]
    else:
        messages = [Message(role="system", content="You are a helpful travel agent."),
                    Message(role="user", content=text)]
    return ChatRequest(
        messages=messages,
        sampling=LOCAL_MODEL_SAMPLING.model_copy(update={"seed": seed, "max_tokens": max_tokens, "stop": stop,
                                                         "temperature": 0.7}),
        n=n,
        constraint=react_constraint(TOOLS) if constrained else None,
    )


def test_lora_adapters_are_refused_clearly(tmp_path):
    from josh_core.launch import check_spec
    from josh_core.llm.llamacpp_batched import LlamaCppBatchedBackend

    with pytest.raises(ValueError, match="LoRA adapters are not supported"):
        LlamaCppBatchedBackend(f"embedded@{tmp_path}")
    assert any("LoRA adapters are not supported" in p for p in check_spec(f"llamacpp-batched:embedded@{tmp_path}", "agent"))
    assert check_spec("llamacpp-batched:embedded", "agent") == []
    assert any("no GGUF file" in p for p in check_spec("llamacpp-batched:/nowhere/x.gguf", "agent"))


def test_embedded_spec_plays_compact_by_default():
    from josh_core.policies.factory import default_style

    assert default_style("llamacpp-batched:embedded") == "compact"


@pytest.fixture(scope="module")
def backend():
    from josh_core.llm.llamacpp_batched import LlamaCppBatchedBackend

    b = LlamaCppBatchedBackend("embedded", n_ctx=4096, max_batch_rows=8)
    yield b
    asyncio.run(b.aclose())


@needs_llama_cpp
@pytest.mark.slow
def test_a_seeded_row_draws_the_same_text_alone_and_in_a_batch(backend):
    alone = backend.generate_batch([chat_request("Hi, I need a hotel in the north.", 5)])
    steps = dict(backend.stats)
    batch = backend.generate_batch([
        chat_request("Find me a train to Cambridge.", 1),
        chat_request("Hi, I need a hotel in the north.", 5),
        chat_request("Is there a cheap restaurant nearby?", 3, n=2),
    ])
    assert [len(r.choices) for r in batch] == [1, 1, 2]
    assert batch[1].choices[0].text == alone[0].choices[0].text
    assert batch[1].choices[0].finish_reason == alone[0].choices[0].finish_reason
    # The four rows decoded together: more row-steps than decode steps.
    assert backend.stats["row_steps"] - steps["row_steps"] > 2 * (backend.stats["decode_steps"] - steps["decode_steps"])


@needs_llama_cpp
@pytest.mark.slow
def test_constrained_rows_stay_in_their_grammar_beside_a_free_row(backend):
    responses = backend.generate_batch([
        chat_request("Hi, I need a cheap guesthouse in the north with free parking.", 7, n=2,
                     max_tokens=REACT_MAX_TOKENS, constrained=True),
        chat_request("Tell me about Cambridge.", 2, max_tokens=16),
    ])
    for choice in responses[0].choices:
        result = check_react(choice.text, TOOLS)
        assert result.ok, (choice.text, result.error)
    assert responses[1].choices[0].text


@needs_llama_cpp
@pytest.mark.slow
def test_budgets_and_stop_strings_give_their_finish_reasons(backend):
    capped, stopped = backend.generate_batch([
        chat_request("Describe the city of Cambridge in detail.", 4, max_tokens=5),
        chat_request("Describe the city of Cambridge in detail.", 4, max_tokens=60, stop=[" "]),
    ])
    assert capped.choices[0].finish_reason == "length"
    assert capped.completion_tokens == 5
    assert stopped.choices[0].finish_reason == "stop"
    assert " " not in stopped.choices[0].text
    assert stopped.completion_tokens < 60


@needs_llama_cpp
@pytest.mark.slow
def test_n_samples_are_distinct_rows(backend):
    (response,) = backend.generate_batch([chat_request("Suggest a museum to visit.", 9, n=2, max_tokens=20)])
    assert len(response.choices) == 2
    assert response.choices[0].text != response.choices[1].text
    again = backend.generate_batch([chat_request("Suggest a museum to visit.", 9, n=2, max_tokens=20)])[0]
    assert [c.text for c in again.choices] == [c.text for c in response.choices]


@needs_llama_cpp
@pytest.mark.slow
def test_a_josh_tree_plays_end_to_end_with_the_spec(tmp_path):
    from josh_core.envs import get_env
    from josh_core.llm.llamacpp_batched import LlamaCppBatchedBackend
    from josh_core.llm.specs import clear_shared_backends
    from josh_core.policies.factory import build_agent
    from josh_core.rollout import RolloutConfig, start_run
    from josh_core.storage import reads
    from josh_core.storage.db import Database

    config = RolloutConfig(josh=True, agent="llamacpp-batched:embedded", style="compact", beam=4, branching=2,
                           max_turns=2, seed=0)
    agent = build_agent(config.agent, config.agent_options())
    try:
        assert isinstance(agent.backend, LlamaCppBatchedBackend)
        scenario = get_env("toolwoz").load_split("train", 1)
        result = start_run(tmp_path / "josh.duckdb", scenario, config, agent=agent)
        assert len(result.conversations) == 1
        db = Database(tmp_path / "josh.duckdb", read_only=True)
        nodes = reads.nodes_frame(db, conversation_id=result.conversations[0].conversation_id)
        agent_nodes = nodes[nodes["kind"] == "agent"]
        assert len(agent_nodes) >= 2  # the root's children and at least one deeper turn
        assert agent_nodes["completion_tokens"].fillna(0).sum() > 0
        assert max(agent.backend.batch_sizes) >= 2  # the leaves of a depth went in one batch
    finally:
        asyncio.run(agent.backend.aclose())
        clear_shared_backends()
