"""A constrained generation from the embedded model always parses (transformers backend).

Appendix B's local sampling (temperature 1.5, top_k 50, top_p 0.75) on the real ReACT agent
prompt: unconstrained, this model rarely writes a command at all; constrained, every sample
must be a complete, valid action within the agent's token budget.
"""

from __future__ import annotations

import asyncio

import pytest

from josh_core.llm.base import LOCAL_MODEL_SAMPLING, ChatRequest
from josh_core.llm.structured import REACT_MAX_TOKENS, check_react, react_constraint
from josh_core.policies.parse import parse_react
from josh_core.policies.prompts import react_prompt_messages
from josh_core.envs.toolwoz.apis import API_EXAMPLES, TOOLS
from josh_core.types import Message

pytestmark = pytest.mark.slow

OPENERS = [
    "Hi, I need a cheap guesthouse in the north with free parking.",
    "Can you find me a train from ely to cambridge on tuesday? I have to arrive by 11:00.",
]


@pytest.fixture(scope="module")
def hf_backend():
    from josh_core.llm.embedded import embedded_model_dir
    from josh_core.llm.hf_backend import HFBackend

    backend = HFBackend(embedded_model_dir(), None, name="embedded")
    yield backend
    asyncio.run(backend.aclose())


def test_constrained_generations_always_parse(hf_backend):
    constraint = react_constraint(TOOLS)
    requests = [
        ChatRequest(
            messages=react_prompt_messages(TOOLS, API_EXAMPLES, True) + [Message(role="user", content=opener)],
            sampling=LOCAL_MODEL_SAMPLING.model_copy(update={"seed": 100 + i, "max_tokens": REACT_MAX_TOKENS}),
            n=2,
            constraint=constraint,
        )
        for i, opener in enumerate(OPENERS)
    ]

    async def run():
        return await asyncio.gather(*(hf_backend.chat(r) for r in requests))

    responses = asyncio.run(run())
    texts = [choice.text for response in responses for choice in response.choices]
    assert len(texts) == 4
    for text in texts:
        result = check_react(text, TOOLS)
        assert result.ok, (text, result.error)
        assert parse_react(text).kind in ("apicall", "speak"), text
