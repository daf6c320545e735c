"""The llama.cpp backend (`llamacpp:GGUF`), on the embedded GGUF.

These tests need the optional extra (`pip install 'josh-workbench[llamacpp]'`; llama-cpp-python
compiles from source, ~12 minutes on 2 cores, or installs from a cached wheel). Without it they
are skipped with that reason in the report; set JOSH_REQUIRE_LLAMACPP=1 (CI does, when the
wheel is cached) to make a missing llama-cpp-python a failure instead. The import guard test
runs either way.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from josh_core.llm.base import LOCAL_MODEL_SAMPLING, ChatRequest
from josh_core.llm.structured import (
    GBNF_REACT_MAX_TOKENS,
    REACT_MAX_TOKENS,
    check_react,
    fc_constraint,
    react_constraint,
)
from josh_core.policies.parse import parse_react
from josh_core.policies.prompts import react_prompt_messages
from josh_core.envs.toolwoz.apis import API_EXAMPLES, TOOLS
from josh_core.types import Message

HAVE_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None
REQUIRED = os.environ.get("JOSH_REQUIRE_LLAMACPP") == "1"
needs_llama_cpp = pytest.mark.skipif(
    not HAVE_LLAMA_CPP and not REQUIRED,
    reason="llama-cpp-python is not installed: pip install 'josh-workbench[llamacpp]' "
    "(or pip install --find-links ~/.cache/josh-wheels llama-cpp-python)",
)


def react_request(opener: str, seed: int, n: int = 1, constrained: bool = True,
                  max_tokens: int = REACT_MAX_TOKENS) -> ChatRequest:
    return ChatRequest(
        messages=react_prompt_messages(TOOLS, API_EXAMPLES, True) + [Message(role="user", content=opener)],
        sampling=LOCAL_MODEL_SAMPLING.model_copy(update={"seed": seed, "max_tokens": max_tokens}),
        n=n,
        constraint=react_constraint(TOOLS) if constrained else None,
    )


def test_missing_llama_cpp_names_the_extra(monkeypatch):
    from josh_core.llm import llamacpp_backend

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # makes `import llama_cpp` fail
    with pytest.raises(llamacpp_backend.LlamaCppUnavailable, match=r"josh-workbench\[llamacpp\]"):
        llamacpp_backend.LlamaCppBackend("embedded")


@pytest.fixture(scope="module")
def backend():
    from josh_core.llm.llamacpp_backend import LlamaCppBackend

    b = LlamaCppBackend("embedded", n_ctx=4096)
    yield b
    asyncio.run(b.aclose())


@needs_llama_cpp
@pytest.mark.slow
def test_prompt_is_the_models_chat_template(backend):
    """llama.cpp renders the same prompt as transformers' tokenizer for the same messages."""
    from transformers import AutoTokenizer

    from josh_core.llm.embedded import embedded_model_dir
    from josh_core.llm.local_chat import to_template_messages

    request = react_request("Hello, I need a hotel.", seed=1)
    tok = AutoTokenizer.from_pretrained(embedded_model_dir())
    expected = tok.apply_chat_template(to_template_messages(request.messages, None), tokenize=False,
                                       add_generation_prompt=True)
    assert backend.render_prompt(request) == expected


@needs_llama_cpp
@pytest.mark.slow
def test_constrained_generations_always_parse(backend):
    async def run():
        return await asyncio.gather(
            backend.chat(react_request("Hi, I need a cheap guesthouse in the north with free parking.", 7, n=2)),
            backend.chat(react_request("Find me a train from ely to cambridge on tuesday, arriving by 11:00.", 8, n=2)),
        )

    texts = [c.text for r in asyncio.run(run()) for c in r.choices]
    assert len(texts) == 4
    for text in texts:
        result = check_react(text, TOOLS)
        assert result.ok, (text, result.error)
        assert parse_react(text).kind in ("apicall", "speak")


@needs_llama_cpp
@pytest.mark.slow
def test_gbnf_engine_gives_the_exact_layout(backend):
    """llama.cpp's own GBNF sampler with the GBNF twin (character caps: a larger budget)."""
    backend.grammar_engine = "gbnf"
    try:
        response = backend.generate_sync(react_request("I want to book a table for 2 at 19:00 on friday.", 3, n=1,
                                                       max_tokens=GBNF_REACT_MAX_TOKENS))
    finally:
        backend.grammar_engine = "llguidance"
    for choice in response.choices:
        assert check_react(choice.text, TOOLS).canonical, choice.text


@needs_llama_cpp
@pytest.mark.slow
def test_seeds_reproduce_and_differ(backend):
    first = backend.generate_sync(react_request("Hello!", 42, constrained=False))
    again = backend.generate_sync(react_request("Hello!", 42, constrained=False))
    other = backend.generate_sync(react_request("Hello!", 43, constrained=False))
    assert first.choices[0].text == again.choices[0].text
    assert first.choices[0].text != other.choices[0].text


@needs_llama_cpp
@pytest.mark.slow
def test_leaves_sharing_a_prefix_reuse_the_kv_cache(backend):
    """Requests gathered together run ordered by prompt, each reusing its predecessor's prefix."""
    before = dict(backend.stats)
    openers = ["I need a hotel.", "I need a train.", "I need a restaurant.", "I need an attraction."]

    async def run():
        return await asyncio.gather(*(backend.chat(react_request(o, i, n=2, constrained=False, max_tokens=4))
                                      for i, o in enumerate(openers)))

    responses = asyncio.run(run())
    assert [len(r.choices) for r in responses] == [2, 2, 2, 2]
    prompt = backend.stats["prompt_tokens"] - before["prompt_tokens"]
    reused = backend.stats["reused_prompt_tokens"] - before["reused_prompt_tokens"]
    assert backend.stats["requests"] - before["requests"] == 8
    # Every generation after the first reuses at least the shared system prompt + demonstration.
    assert reused > 0.8 * prompt


@needs_llama_cpp
@pytest.mark.slow
def test_function_calling_output_becomes_tool_calls(backend):
    request = ChatRequest(
        messages=[Message(role="system", content="You help customers of a travel desk."),
                  Message(role="user", content="Find me a hotel in the north.")],
        tools=TOOLS,
        sampling=LOCAL_MODEL_SAMPLING.model_copy(update={"seed": 5, "max_tokens": 160}),
        n=2,
        constraint=fc_constraint(TOOLS),
    )
    response = backend.generate_sync(request)
    names = {t["function"]["name"] for t in TOOLS}
    for choice in response.choices:
        if choice.tool_calls:
            assert choice.tool_calls[0].name in names
            assert choice.finish_reason == "tool_calls"
        else:
            assert choice.text  # a {"content": ...} reply, unwrapped


@needs_llama_cpp
@pytest.mark.slow
def test_spec_builds_the_backend():
    from josh_core.llm.base import EMBEDDED_MODEL_SAMPLING
    from josh_core.llm.llamacpp_backend import LlamaCppBackend
    from josh_core.llm.specs import build_backend

    b = build_backend("llamacpp:embedded", None, shared=False)
    try:
        assert isinstance(b, LlamaCppBackend) and b.is_local
        assert b.default_sampling == EMBEDDED_MODEL_SAMPLING  # the embedded model's own default
    finally:
        asyncio.run(b.aclose())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_llama_cpp
@pytest.mark.slow
def test_llama_cpp_server_enforces_the_gbnf_grammar():
    """llama-cpp-python's OpenAI-compatible server with the request fields we send it."""
    pytest.importorskip("sse_starlette", reason="llama-cpp-python[server] extras are not installed")
    import openai

    from josh_core.llm.embedded import embedded_gguf_path
    from josh_core.llm.openai_backend import constraint_for_openai

    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_gguf_path()), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", "4096", "--verbose", "False"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        deadline = time.time() + 120
        while True:
            try:
                client.models.list()
                break
            except openai.APIConnectionError:
                if time.time() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.5)
        # A short prompt: this is about the request fields reaching the server's sampler.
        messages = [{"role": "system", "content": "You are a travel agent. Reply with PLAN, then APICALL or SPEAK."},
                    {"role": "user", "content": "Hi, I need an expensive restaurant in the centre."}]
        fields = constraint_for_openai(react_constraint(TOOLS), "llamacpp")
        completion = client.chat.completions.create(
            model="embedded", messages=messages,
            temperature=0.7, max_tokens=GBNF_REACT_MAX_TOKENS, seed=11, **fields,
        )
        text = completion.choices[0].message.content
        assert check_react(text, TOOLS).canonical, text
        assert json.loads(json.dumps(fields))["extra_body"]["grammar"].startswith("root ::=")
    finally:
        server.terminate()
        server.wait(timeout=30)
