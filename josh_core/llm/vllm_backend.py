"""vLLM offline engine backend (`vllm:MODEL[@ADAPTER]`), for machines with a GPU.

Install with `pip install 'josh-workbench[vllm]'`. The engine (`vllm.LLM`) lives in this
process; concurrent `chat` calls are merged by the micro-batcher into one `LLM.generate`
call, and vLLM's own continuous batching and prefix caching take it from there. A LoRA
adapter (for example one `josh train` wrote) is served through `LoRARequest` on top of the
base weights, without merging. Structured decoding uses vLLM's structured outputs (the
grammar from `josh_core.llm.structured`).

The request building below is plain functions so it is tested without vLLM installed; only
`VLLMBackend.load` imports vLLM.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from josh_core.llm.base import LOCAL_MODEL_SAMPLING, ChatRequest, ChatResponse, Choice
from josh_core.llm.batching import MicroBatcher
from josh_core.llm.local_chat import cut_at_stop, parse_tool_calls, to_template_messages

log = logging.getLogger(__name__)

VLLM_INSTALL_HINT = "vLLM is not installed: pip install 'josh-workbench[vllm]' (needs a CUDA GPU)"


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


def structured_kwargs(request: ChatRequest) -> dict[str, Any]:
    """The structured-output fields of `SamplingParams` for the request's constraint."""
    if request.constraint is None:
        return {}
    from josh_core.llm.structured import vllm_sampling_kwargs

    return vllm_sampling_kwargs(request.constraint)


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
        self.default_sampling = LOCAL_MODEL_SAMPLING
        self.engine_kwargs = dict(engine_kwargs or {})
        self._llm = None
        self._batcher = MicroBatcher(self.generate_batch, max_rows=max_batch_rows)

    def engine_args(self) -> dict[str, Any]:
        """Keyword arguments for `vllm.LLM` (LoRA enabled when an adapter is given)."""
        args: dict[str, Any] = {"model": self.model, "enable_prefix_caching": True}
        if self.adapter:
            args.update(enable_lora=True, max_lora_rank=64)
        args.update(self.engine_kwargs)
        return args

    def load(self) -> None:
        if self._llm is not None:
            return
        try:
            from vllm import LLM  # type: ignore[import-not-found]
        except ImportError as exc:
            raise RuntimeError(VLLM_INSTALL_HINT) from exc
        self._llm = LLM(**self.engine_args())

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

    async def aclose(self) -> None:
        await self._batcher.aclose()
