"""In-process llama.cpp backend (`llamacpp:GGUF_PATH`, `llamacpp:embedded`), optional extra.

Why it exists: it loads the embedded GGUF in a fraction of a second (transformers needs half a
minute to de-quantise it) and samples quickly on CPU. Install with
`pip install 'josh-workbench[llamacpp]'` (llama-cpp-python builds from source).

How requests run: one llama.cpp context serves every request, one at a time, on a worker
thread. Requests that arrive together (the leaves of a JOSH tree, gathered by the engine) are
ordered by their prompt tokens before they run, so consecutive prompts share the longest
possible prefix and llama.cpp re-evaluates only the part after it: the KV cache of the shared
conversation prefix is reused rather than recomputed. An optional RAM prompt cache
(`prompt_cache_bytes`) also keeps whole states so a leaf's next turn can resume from its own
last one.

Constraints are enforced by llguidance through a logits processor (the same Lark grammar and
token caps as the transformers backend; measured here as fast as llama.cpp's own GBNF sampler
or faster), or, with `grammar_engine="gbnf"`, by llama.cpp's GBNF sampler with the GBNF twin
from `josh_core.llm.structured`. The GBNF twin caps lines in characters, not tokens, so it
needs a larger token budget (`GBNF_REACT_MAX_TOKENS`) to be sure to finish.

Sampling note: llama.cpp applies top-k / top-p before temperature (transformers applies the
temperature first), so the same parameters give a somewhat peakier distribution here.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

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
    compact_for_embedded,
)
from josh_core.llm.local_chat import cut_at_stop, parse_tool_calls, to_template_messages
from josh_core.llm.structured import gbnf_for

INSTALL_HINT = (
    "the llama.cpp backend needs llama-cpp-python: pip install 'josh-workbench[llamacpp]' "
    "(it compiles llama.cpp from source, about 12 minutes on 2 cores; a prebuilt wheel may be "
    "in ~/.cache/josh-wheels: pip install --find-links ~/.cache/josh-wheels llama-cpp-python)"
)


class LlamaCppUnavailable(ImportError):
    """llama-cpp-python is not installed."""


def import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise LlamaCppUnavailable(INSTALL_HINT) from exc
    return llama_cpp


def resolve_model_path(target: str) -> Path:
    """`embedded` -> the embedded GGUF (fetched on first use); otherwise a GGUF file path."""
    if target in ("", "embedded"):
        from josh_core.llm.embedded import embedded_gguf_path

        return embedded_gguf_path()
    path = Path(target).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no GGUF file at {path}")
    return path


@dataclass
class _Job:
    request: ChatRequest
    prompt_tokens: list[int]
    future: asyncio.Future


class LlamaCppBackend:
    """ChatBackend over llama-cpp-python (see module docstring)."""

    is_local = True

    def __init__(
        self,
        model_path: str | os.PathLike[str] = "embedded",
        *,
        n_ctx: int = 8192,
        n_threads: int | None = None,
        seed: int = 0,
        grammar_engine: str = "llguidance",
        prompt_cache_bytes: int = 0,
        verbose: bool = False,
    ) -> None:
        if grammar_engine not in ("gbnf", "llguidance"):
            raise ValueError("grammar_engine must be 'gbnf' or 'llguidance'")
        llama_cpp = import_llama_cpp()
        from llama_cpp import llama_chat_format

        self.model_path = resolve_model_path(str(model_path))
        self.name = f"llamacpp:{model_path}"
        # The embedded model samples at its own default (see EMBEDDED_MODEL_SAMPLING).
        self.default_sampling = (EMBEDDED_MODEL_SAMPLING if str(model_path) in ("", "embedded")
                                 else LOCAL_MODEL_SAMPLING)
        self.grammar_engine = grammar_engine
        # Half the cores, for generation and prompt alike: llama.cpp's worker threads spin while
        # they wait, so on shared cores (tests, other jobs) more threads than free cores is
        # disastrous (measured on 2 busy cores: 1 thread 42 tokens/s, 2 threads 1 token/s).
        threads = n_threads or max(1, (os.cpu_count() or 2) // 2)
        self._llm = llama_cpp.Llama(
            model_path=str(self.model_path),
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            seed=seed,
            verbose=verbose,
        )
        if prompt_cache_bytes > 0:
            self._llm.set_cache(llama_cpp.LlamaRAMCache(capacity_bytes=prompt_cache_bytes))
        template = self._llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ValueError(f"{self.model_path} has no chat template in its metadata")
        vocab = self._llm._model.vocab
        self._formatter = llama_chat_format.Jinja2ChatFormatter(
            template=template,
            eos_token=self._llm._model.token_get_text(llama_cpp.llama_vocab_eos(vocab)),
            bos_token=self._llm._model.token_get_text(llama_cpp.llama_vocab_bos(vocab)),
        )
        self._seeds = random.Random(seed)
        self._grammars: dict[str, Any] = {}
        self._lltokenizer: Any = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llamacpp")
        self._lock = threading.Lock()  # the context is not thread-safe
        self._pending: list[_Job] = []
        self._worker: asyncio.Task | None = None
        self.stats = {"requests": 0, "prompt_tokens": 0, "reused_prompt_tokens": 0, "completion_tokens": 0}

    # --- prompts --------------------------------------------------------------------------

    def _render(self, request: ChatRequest) -> tuple[str, bool]:
        # Tools are described in the system text, and calls written back, the way every
        # in-process backend does it (local_chat), so prompt and fc_constraint agree.
        result = self._formatter(messages=to_template_messages(request.messages, request.tools))
        return result.prompt, bool(result.added_special)

    def render_prompt(self, request: ChatRequest) -> str:
        """The prompt text: the model's own chat template over the messages."""
        return self._render(request)[0]

    def tokenize_prompt(self, request: ChatRequest) -> list[int]:
        text, added_special = self._render(request)
        return self._llm.tokenize(text.encode("utf-8"), add_bos=not added_special, special=True)

    # --- constraints ----------------------------------------------------------------------

    def _grammar(self, constraint: OutputConstraint) -> Any:
        from llama_cpp import LlamaGrammar

        gbnf = gbnf_for(constraint)
        if gbnf not in self._grammars:
            self._grammars[gbnf] = LlamaGrammar.from_string(gbnf, verbose=False)
        return self._grammars[gbnf]

    def _llguidance_processor(self, constraint: OutputConstraint, prompt_len: int) -> Any:
        return _LLGuidanceLlamaProcessor(self, constraint, prompt_len)

    # --- generation -----------------------------------------------------------------------

    def _complete(self, request: ChatRequest, prompt: list[int], seed: int) -> dict[str, Any]:
        sampling = request.sampling
        kwargs: dict[str, Any] = {}
        if request.constraint is not None:
            use_gbnf = self.grammar_engine == "gbnf"  # else llguidance
            if use_gbnf:
                try:
                    kwargs["grammar"] = self._grammar(request.constraint)
                except ConstraintUnsupported:
                    use_gbnf = False  # a Lark grammar with no GBNF twin: llguidance reads it
            if not use_gbnf:
                kwargs["logits_processor"] = [self._llguidance_processor(request.constraint, len(prompt))]
        reusable = _common_prefix(self._llm._input_ids.tolist(), prompt) if self._llm.n_tokens else 0
        out = self._llm.create_completion(
            prompt=prompt,
            max_tokens=sampling.max_tokens,
            temperature=sampling.temperature,
            top_p=1.0 if sampling.top_p is None else sampling.top_p,
            top_k=0 if sampling.top_k is None else sampling.top_k,
            min_p=0.0,
            typical_p=1.0,
            repeat_penalty=1.0,
            stop=sampling.stop or [],
            seed=seed,
            **kwargs,
        )
        self.stats["requests"] += 1
        self.stats["prompt_tokens"] += len(prompt)
        self.stats["reused_prompt_tokens"] += reusable
        self.stats["completion_tokens"] += out["usage"]["completion_tokens"]
        return out

    def _run_job(self, job: _Job) -> ChatResponse:
        request = job.request
        base = request.sampling.seed if request.sampling.seed is not None else self._seeds.randrange(2**31)
        start = time.perf_counter()
        choices: list[Choice] = []
        completion_tokens = 0
        with self._lock:
            for i in range(max(1, request.n)):
                out = self._complete(request, job.prompt_tokens, base + i)
                choice = out["choices"][0]
                completion_tokens += out["usage"]["completion_tokens"]
                choices.append(_choice(choice["text"], choice.get("finish_reason"), request))
        return ChatResponse(
            choices=choices,
            prompt_tokens=len(job.prompt_tokens),
            completion_tokens=completion_tokens,
            seconds=time.perf_counter() - start,
            model=self.name,
        )

    def generate_sync(self, request: ChatRequest) -> ChatResponse:
        """One request, run now on the calling thread (scripts, tests)."""
        return self._run_job(_Job(request, self.tokenize_prompt(request), future=None))  # type: ignore[arg-type]

    async def chat(self, request: ChatRequest) -> ChatResponse:
        loop = asyncio.get_running_loop()
        job = _Job(request, self.tokenize_prompt(request), loop.create_future())
        self._pending.append(job)
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._drain())
        return await job.future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            await asyncio.sleep(0)  # let requests gathered in the same tick join this round
            jobs, self._pending = self._pending, []
            # Sorted prompts put shared prefixes next to each other: each prompt then reuses
            # the KV cache its predecessor left behind.
            jobs.sort(key=lambda j: j.prompt_tokens)
            for job in jobs:
                if job.future.cancelled():
                    continue
                try:
                    result = await loop.run_in_executor(self._pool, self._run_job, job)
                except Exception as exc:  # hand the error to the caller that asked
                    if not job.future.done():
                        job.future.set_exception(exc)
                else:
                    if not job.future.done():
                        job.future.set_result(result)

    async def aclose(self) -> None:
        worker = self._worker
        if worker is not None and not worker.done() and worker.get_loop() is asyncio.get_running_loop():
            await asyncio.gather(worker, return_exceptions=True)
        self._pool.shutdown(wait=True)
        if hasattr(self._llm, "close"):
            self._llm.close()


class _LLGuidanceLlamaProcessor:
    """llama-cpp-python logits processor that masks with an llguidance matcher."""

    def __init__(self, backend: LlamaCppBackend, constraint: OutputConstraint, prompt_len: int) -> None:
        import numpy as np

        from josh_core.llm.structured import new_matcher

        if backend._lltokenizer is None:
            import warnings

            import llguidance.llamacpp

            with warnings.catch_warnings():  # it calls a deprecated llama.cpp alias per token
                warnings.simplefilter("ignore", DeprecationWarning)
                backend._lltokenizer = llguidance.llamacpp.lltokenizer_from_vocab(backend._llm._model.vocab)
        self._np = np
        self._lltok = backend._lltokenizer
        self._matcher = new_matcher(self._lltok, constraint)
        self._seen = prompt_len
        self._mask = np.full(((self._lltok.vocab_size + 31) // 32,), -1, dtype=np.int32)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        np = self._np
        for token in input_ids[self._seen :].tolist():
            self._matcher.consume_token(int(token))
        self._seen = len(input_ids)
        self._matcher.unsafe_compute_mask_ptr(self._mask.ctypes.data, self._mask.nbytes)
        bits = np.unpackbits(self._mask.view(np.uint8), bitorder="little")
        n = min(len(scores), len(bits))
        blocked = np.ones(len(scores), dtype=bool)
        blocked[:n] = bits[:n] == 0
        scores[blocked] = -np.inf
        return scores


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _choice(text: str, finish_reason: str | None, request: ChatRequest) -> Choice:
    text, _ = cut_at_stop(text, request.sampling.stop)
    if request.tools:
        content, calls = parse_tool_calls(text)
        return Choice(text=content, tool_calls=calls, finish_reason="tool_calls" if calls else finish_reason)
    return Choice(text=text, finish_reason=finish_reason)


# -- registration (josh_core/llm/specs.py) ---------------------------------------------------


class LlamaCppOptions(BackendOptions):
    """Settings of the llama.cpp backend (None: LlamaCppBackend's default)."""

    n_ctx: int | None = Field(None, ge=1)
    n_threads: int | None = Field(None, ge=1)
    seed: int | None = None
    grammar_engine: Literal["gbnf", "llguidance"] | None = None
    prompt_cache_bytes: int | None = Field(None, ge=0)
    verbose: bool | None = None


def gguf_problems(rest: str) -> list[str]:
    """A GGUF path that is not a file (`embedded` is fetched on first use)."""
    target = rest or "embedded"
    if target != "embedded" and not Path(target).expanduser().is_file():
        return [f"no GGUF file at {target}"]
    return []


def _build(rest: str, options: LlamaCppOptions, base_url: str | None) -> LlamaCppBackend:
    return LlamaCppBackend(rest or "embedded", **{k: v for k, v in options.model_dump().items() if v is not None})


BACKEND = BackendKind(
    kind="llamacpp", usage="llamacpp:GGUF_PATH",
    summary="llama.cpp in this process (llamacpp:embedded: the embedded GGUF)",
    options=LlamaCppOptions, build=_build, default_style=compact_for_embedded,
    check=lambda rest, base_url: gguf_problems(rest),
)  # fmt: skip
