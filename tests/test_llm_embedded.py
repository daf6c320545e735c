"""The embedded model through the transformers backend, and the OpenAI-compatible backend
through the real `openai` client against a local chat-completions server serving that model.

Slow (they load the embedded model once per session): generations are kept to a few tokens.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from model_fixtures import ChatServer

from josh_core.llm.base import ChatRequest, OutputConstraint, SamplingParams
from josh_core.llm.openai_backend import OpenAIBackend
from josh_core.llm.specs import build_backend
from josh_core.types import Message

pytestmark = pytest.mark.slow

HELLO = [Message(role="system", content="You are a helpful travel agent in Cambridge."),
         Message(role="user", content="Hi! Can you help me find a cheap restaurant in the north?")]


@pytest.fixture(scope="module")
def embedded():
    """The shared embedded backend (build_backend shares in-process backends per SPEC)."""
    backend = build_backend("embedded")
    backend.load()
    return backend


@pytest.fixture(scope="module")
def server(embedded):
    srv = ChatServer(embedded).start()
    yield srv
    srv.stop()


def greedy(max_tokens=8, **kw):
    return SamplingParams(temperature=0, max_tokens=max_tokens, **kw)


def test_embedded_model_is_cached_and_generates(embedded):
    from josh_core.llm.embedded import embedded_model_dir

    start = time.perf_counter()
    assert embedded_model_dir() == embedded_model_dir()  # converted once, then only looked up
    assert time.perf_counter() - start < 1.0
    response = asyncio.run(embedded.chat(ChatRequest(messages=HELLO, sampling=greedy())))
    choice = response.choices[0]
    assert choice.text.strip() and choice.finish_reason in ("length", "stop")
    assert response.prompt_tokens > 10 and 0 < response.completion_tokens <= 8
    again = asyncio.run(embedded.chat(ChatRequest(messages=HELLO, sampling=greedy())))
    assert again.choices[0].text == choice.text  # greedy is deterministic


def test_agents_on_the_embedded_model_sample_at_its_own_default(embedded):
    from josh_core.llm.base import EMBEDDED_MODEL_SAMPLING, LOCAL_MODEL_SAMPLING
    from josh_core.policies.react_agent import ReactAgent

    assert embedded.default_sampling == EMBEDDED_MODEL_SAMPLING != LOCAL_MODEL_SAMPLING
    agent = ReactAgent(embedded)
    assert agent.sampling(seed=1).temperature == EMBEDDED_MODEL_SAMPLING.temperature
    assert ReactAgent(embedded, temperature=1.5).sampling(seed=1).temperature == 1.5  # --temperature wins


def test_concurrent_requests_share_one_batch_and_seeds_do_not_depend_on_it(embedded):
    sampling = [SamplingParams(temperature=1.5, top_k=50, top_p=0.75, max_tokens=6, seed=s) for s in range(4)]

    async def together():
        return await asyncio.gather(*[embedded.chat(ChatRequest(messages=HELLO, sampling=s)) for s in sampling])

    before = len(embedded.batch_sizes)
    batched = asyncio.run(together())
    assert embedded.batch_sizes[before:] == [4]  # one generate for all four
    alone = asyncio.run(embedded.chat(ChatRequest(messages=HELLO, sampling=sampling[2])))
    assert alone.choices[0].text == batched[2].choices[0].text
    assert len({r.choices[0].text for r in batched}) > 1  # different seeds, different samples


def test_n_samples_stop_strings_and_budget(embedded):
    response = asyncio.run(embedded.chat(ChatRequest(
        messages=HELLO, n=3, sampling=SamplingParams(temperature=1.0, max_tokens=6, seed=11))))
    assert len(response.choices) == 3 and len({c.text for c in response.choices}) > 1
    base = asyncio.run(embedded.chat(ChatRequest(messages=HELLO, sampling=greedy(12)))).choices[0].text
    word = base.split()[2]
    cut = asyncio.run(embedded.chat(ChatRequest(messages=HELLO, sampling=greedy(12, stop=[word])))).choices[0]
    assert word not in cut.text and base.startswith(cut.text) and cut.finish_reason == "stop"


@pytest.fixture
def shared_prefix_path(embedded):
    """The shared-prefix path (the backend's path without per-sequence KV reuse)."""
    embedded.kv_reuse = False
    yield embedded
    embedded.kv_reuse = True


def test_shared_prefix_cache_gives_the_same_tokens(shared_prefix_path):
    embedded = shared_prefix_path
    long_system = Message(role="system", content="You are a travel agent. " * 20)
    request = ChatRequest(messages=[long_system, HELLO[1]], sampling=greedy(8))
    cached = asyncio.run(embedded.chat(request)).choices[0].text
    saved = embedded.min_prefix_tokens
    embedded.min_prefix_tokens = 10**9  # no prefix reuse
    try:
        plain = asyncio.run(embedded.chat(request)).choices[0].text
    finally:
        embedded.min_prefix_tokens = saved
    assert cached == plain


def test_kv_reuse_gives_the_same_samples_and_computes_each_prompt_once(embedded):
    """Per-sequence KV reuse: siblings with one prompt share one prefill, a follow-up prompt
    extends the stored sequence, and every sample is what the plain path draws."""
    sampling = SamplingParams(temperature=0.7, top_k=50, top_p=0.75, max_tokens=10)
    first = [ChatRequest(messages=HELLO, sampling=sampling.model_copy(update={"seed": s})) for s in (1, 2, 1)]

    embedded.kv_reuse = False
    try:
        plain = [r.choices[0].text for r in embedded.generate_batch(first)]
    finally:
        embedded.kv_reuse = True
    embedded.kv_store.clear()
    computed, reused = embedded.kv_store.computed_tokens, embedded.kv_store.reused_tokens
    reusing = [r.choices[0].text for r in embedded.generate_batch(first)]
    assert reusing == plain and reusing[0] == reusing[2]
    prompt_tokens = embedded.kv_store.computed_tokens - computed
    assert embedded.kv_store.reused_tokens == reused  # an empty store serves nothing
    # Three rows, one distinct prompt: it was computed once.
    assert prompt_tokens == len(embedded.tokenizer(embedded.render_prompt(first[0]), add_special_tokens=False)["input_ids"])

    follow = HELLO + [Message(role="assistant", content=reusing[0]), Message(role="user", content="In the north.")]
    request = ChatRequest(messages=follow, sampling=sampling.model_copy(update={"seed": 3}))
    before = embedded.kv_store.reused_tokens
    extended = embedded.generate_batch([request])[0].choices[0].text
    assert embedded.kv_store.reused_tokens - before >= prompt_tokens  # the conversation so far came from the store
    embedded.kv_reuse = False
    try:
        assert embedded.generate_batch([request])[0].choices[0].text == extended
    finally:
        embedded.kv_reuse = True


def test_shared_prefix_attention_matches_plain_batched_attention(shared_prefix_path):
    """Leaves with different suffix lengths (so with padding): the one-copy prefix attention
    and the per-row copy give the same greedy tokens."""
    embedded = shared_prefix_path
    system = Message(role="system", content="You are a travel agent in Cambridge. " * 6)
    asks = ["Hi.", "I need a cheap hotel in the north with free parking, please.", "Trains to ely?"]
    requests = [ChatRequest(messages=[system, Message(role="user", content=a)], sampling=greedy(6)) for a in asks]
    shared = [r.choices[0].text for r in embedded.generate_batch(requests)]
    embedded.shared_prefix_attention = False
    try:
        plain = [r.choices[0].text for r in embedded.generate_batch(requests)]
    finally:
        embedded.shared_prefix_attention = True
    assert shared == plain


def test_batched_decoder_draws_what_the_reference_loop_draws(embedded):
    """The batched decode loop (one prefix copy, vectorised sampling, batch grammar masks) gives
    every row the tokens and finish reason of the reference loop (per-row RowSampler): rows of
    different prompt lengths, a constrained row, n > 1, a stop string and spent budgets."""
    asks = ["Hi.", "I need a cheap hotel in the north with free parking, please.", "Trains to ely?"]
    sampling = SamplingParams(temperature=0.7, top_k=50, top_p=0.75, max_tokens=12)
    requests = [ChatRequest(messages=[HELLO[0], Message(role="user", content=a)],
                            sampling=sampling.model_copy(update={"seed": i})) for i, a in enumerate(asks)]
    requests.append(ChatRequest(messages=HELLO, sampling=SamplingParams(temperature=1.5, max_tokens=8, seed=3),
                                constraint=OutputConstraint(kind="json_schema", json_schema={"enum": ["yes", "no"]})))
    requests.append(ChatRequest(messages=HELLO, n=2, sampling=greedy(10, stop=["help"])))
    results = {}
    try:
        for decoder, one_prefix_copy in (("reference", True), ("batched", True), ("batched", False)):
            embedded.decoder = decoder
            embedded.shared_prefix_attention = one_prefix_copy
            embedded.kv_store.clear()
            results[decoder, one_prefix_copy] = [[(c.text, c.finish_reason) for c in r.choices]
                                                 for r in embedded.generate_batch(requests)]
    finally:
        embedded.decoder = "batched"
        embedded.shared_prefix_attention = True
    assert results["batched", True] == results["reference", True] == results["batched", False]
    results["batched"] = results["batched", True]
    finishes = {reason for choices in results["batched"] for _, reason in choices}
    assert {"stop", "length"} <= finishes
    assert results["batched"][3][0][0] in ('"yes"', '"no"')
    # The batched loop stored every row's sequence: asking again reuses all of the prompt.
    before = embedded.kv_store.reused_tokens
    embedded.generate_batch(requests[:1])
    assert embedded.kv_store.reused_tokens - before == len(
        embedded.tokenizer(embedded.render_prompt(requests[0]), add_special_tokens=False)["input_ids"]) - 1


def test_constraint_is_honoured(embedded):
    constraint = OutputConstraint(kind="json_schema", json_schema={"enum": ["yes", "no"]})
    response = asyncio.run(embedded.chat(ChatRequest(
        messages=HELLO, constraint=constraint, sampling=SamplingParams(temperature=1.5, max_tokens=8, seed=3))))
    assert response.choices[0].text in ('"yes"', '"no"')


# ------------------------------------------------------------ OpenAI client against a local server


def _client(server, **kw) -> OpenAIBackend:
    return OpenAIBackend("embedded", base_url=server.base_url, api_key="test", backoff_s=0.01, **kw)


def test_openai_backend_talks_to_a_real_model_server(server):
    backend = _client(server)
    server.requests.clear()

    async def main():
        one = await backend.chat(ChatRequest(messages=HELLO, sampling=greedy()))
        many = await backend.chat(ChatRequest(messages=HELLO, n=2, sampling=SamplingParams(temperature=1.0, max_tokens=5, seed=1)))
        await backend.aclose()
        return one, many

    one, many = asyncio.run(main())
    assert one.choices[0].text.strip() and one.prompt_tokens > 10 and one.completion_tokens > 0
    assert len(many.choices) == 2
    assert [r.get("n", 1) for r in server.requests] == [1, 2]  # n samples in one request
    assert server.requests[1]["seed"] == 1 and server.requests[0]["temperature"] == 0


def test_openai_backend_retries_429_and_5xx_with_backoff(server):
    backend = _client(server)
    server.requests.clear()
    server.faults.extend([(429, {"retry-after": "0.05"}), (500, {}), (503, {})])

    async def main():
        out = await backend.chat(ChatRequest(messages=[Message(role="user", content="hi")]))
        await backend.aclose()
        return out

    backend.model = "scripted"
    response = asyncio.run(main())
    assert response.choices[0].text == "scripted reply 0"
    assert len(server.requests) == 4 and backend.retries == 3


def test_openai_backend_gives_up_after_max_retries_and_never_retries_400(server):
    import openai

    server.faults.extend([(500, {})] * 3)
    backend = OpenAIBackend("scripted", base_url=server.base_url, api_key="t", backoff_s=0.01, max_retries=2)
    with pytest.raises(openai.InternalServerError):
        asyncio.run(backend.chat(ChatRequest(messages=[Message(role="user", content="hi")])))
    server.faults.clear()
    server.requests.clear()
    server.faults.append((400, {}))
    with pytest.raises(openai.BadRequestError):
        asyncio.run(_client(server).chat(ChatRequest(messages=[Message(role="user", content="hi")])))
    assert len(server.requests) == 1


def test_openai_backend_falls_back_when_the_server_refuses_n(embedded):
    srv = ChatServer(embedded, supports_n=False).start()
    try:
        backend = OpenAIBackend("scripted", base_url=srv.base_url, api_key="t")
        response = asyncio.run(backend.chat(ChatRequest(messages=[Message(role="user", content="hi")], n=3)))
        assert len(response.choices) == 3 and backend.supports_n is False
        assert [r.get("n", 1) for r in srv.requests] == [3, 1, 1, 1]
    finally:
        srv.stop()


def test_openai_backend_tool_calls_and_concurrency_limit(server):
    server.requests.clear()
    server.scripted.extend([
        {"content": None, "tool_calls": [{"name": "search_hotel", "arguments": {"area": "north", "stars": None}}]},
        {"content": None, "tool_calls": [{"name": "book_hotel", "arguments": "{not json"}]},
    ])
    backend = OpenAIBackend("scripted", base_url=server.base_url, api_key="t", concurrency=2)
    from josh_core.envs.toolwoz.apis import TOOLS

    async def main():
        first = await backend.chat(ChatRequest(messages=HELLO, tools=TOOLS))
        second = await backend.chat(ChatRequest(messages=HELLO, tools=TOOLS))
        server.delay_s = 0.2
        server.max_in_flight = 0
        await asyncio.gather(*[backend.chat(ChatRequest(messages=HELLO)) for _ in range(6)])
        server.delay_s = 0.0
        return first, second

    first, second = asyncio.run(main())
    call = first.choices[0].tool_calls[0]
    assert (call.name, call.parameters, call.id) == ("search_hotel", {"area": "north"}, "call_0")  # nulls dropped
    assert second.choices[0].tool_calls is None and "{not json" in second.choices[0].text
    assert server.requests[0]["tools"][0]["type"] == "function"
    assert server.max_in_flight <= 2


# --------------------------------------------- llama.cpp's OpenAI-compatible server (optional extra)


def test_openai_backend_against_llama_cpp_server():
    """The OpenAI backend against llama-cpp-python's own server on the embedded GGUF: text,
    n samples (the server returns one choice per request; the backend tops up), and the
    ReACT grammar sent as GBNF in the `grammar` field."""
    import importlib.util
    import os
    import subprocess
    import sys

    from model_fixtures import free_port

    from josh_core.llm.embedded import embedded_gguf_path
    from josh_core.llm.structured import react_constraint
    from josh_core.policies.parse import parse_react
    from josh_core.envs.toolwoz.apis import TOOLS

    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("sse_starlette") is None:
        if os.environ.get("JOSH_REQUIRE_LLAMACPP") == "1":
            pytest.fail("llama-cpp-python[server] is required here (JOSH_REQUIRE_LLAMACPP=1)")
        pytest.skip("llama-cpp-python[server] (optional extra 'llamacpp') is not installed")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_gguf_path()), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", "4096", "--model_alias", "embedded"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        backend = OpenAIBackend("embedded", base_url=f"http://127.0.0.1:{port}/v1", api_key="none",
                                server="llamacpp", backoff_s=0.2, max_retries=40)
        plain = asyncio.run(backend.chat(ChatRequest(messages=HELLO, n=2, sampling=SamplingParams(
            temperature=1.0, max_tokens=6, seed=1))))
        assert len(plain.choices) == 2 and all(c.text.strip() for c in plain.choices)
        react = ChatRequest(messages=HELLO, constraint=react_constraint(TOOLS),
                            sampling=SamplingParams(temperature=1.5, top_k=50, top_p=0.75, max_tokens=256, seed=2))
        text = asyncio.run(OpenAIBackend("embedded", base_url=f"http://127.0.0.1:{port}/v1", api_key="none",
                                         server="llamacpp").chat(react)).choices[0].text
        assert parse_react(text).kind in ("apicall", "speak")
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_lora_adapter_is_loaded_and_merged(embedded, tmp_path):
    """`embedded@ADAPTER_DIR`: a peft LoRA adapter (as `josh train` writes) is merged at load."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from josh_core.llm.embedded import embedded_model_dir

    base = AutoModelForCausalLM.from_pretrained(embedded_model_dir())
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)  # a fresh adapter is a no-op; make this one change the model
    peft_model.save_pretrained(tmp_path / "adapter")
    adapted = build_backend(f"embedded@{tmp_path / 'adapter'}", shared=False)
    assert adapted.name == f"embedded@{tmp_path / 'adapter'}"
    adapted.load()
    q_base = embedded.model.model.layers[0].self_attn.q_proj.weight
    q_adapted = adapted.model.model.layers[0].self_attn.q_proj.weight
    assert not torch.allclose(q_base, q_adapted)
    assert torch.equal(embedded.model.model.layers[0].mlp.up_proj.weight, adapted.model.model.layers[0].mlp.up_proj.weight)
    reply = asyncio.run(adapted.chat(ChatRequest(messages=HELLO, sampling=greedy(4))))
    assert reply.choices[0].text.strip()
