"""Batched llama.cpp player (`llamacpp-batched:embedded`, `llamacpp-batched:GGUF_PATH`), optional extra.

Why it exists: the embedded model's weights ARE a 4-bit GGUF. The transformers backend
de-quantises them to float32 and reads 540 MB per decode step; llama.cpp reads the 4-bit
weights themselves, about 7x fewer bytes for the very same model. `llamacpp:` (llamacpp_backend.py)
runs requests one at a time; this backend decodes every row of a batch together, as the
transformers backend does:

- One llama.cpp context with one KV sequence per row (plus sequence 0, which keeps the
  prefix every row shares), in a unified KV buffer so that copying a sequence
  (`llama_memory_seq_cp`) only tags cells: the shared prefix (system prompt, tools, the
  conversation up to the rows' common ancestor) is evaluated once and kept between batches,
  each distinct prompt's own suffix once, and samples of the same prompt copy it.
- Per step, one `llama_decode` of a `llama_batch` holding the last token of every live row
  (each in its own sequence), logits for each.
- Our own sampling and grammar: the logits go through the same grammar masks
  (`ConstrainedLogitsProcessor.allowed_bitmask` / `apply_bitmask`) and the same vectorised
  sampler with per-row seeded generators (`batch_sampling.BatchSampler`) as the transformers
  backend, so constraints, stop strings, token budgets and finish reasons behave the same, and
  a seeded row draws from its own generator whatever else is in its batch. The numbers differ
  from transformers' (4-bit arithmetic vs float32), so the samples do too.

Prompts are rendered and tokenised by the model's transformers tokenizer (the embedded
model's converted folder, or the tokenizer inside a GGUF), as the transformers backend does.
LoRA adapters are not supported here: use `embedded@DIR` (transformers) for them.
"""

from __future__ import annotations

import os
import random
import threading
import time
from typing import Any

from pydantic import Field

from josh_core.llm.base import (
    EMBEDDED_MODEL_SAMPLING,
    LOCAL_MODEL_SAMPLING,
    BackendKind,
    BackendOptions,
    ChatRequest,
    ChatResponse,
    compact_for_embedded,
)
from josh_core.llm.batching import MicroBatcher
from josh_core.llm.kv_store import common_prefix_len
from josh_core.llm.llamacpp_backend import gguf_problems, import_llama_cpp, resolve_model_path
from josh_core.llm.local_chat import decoded_choice, to_template_messages

_ANCHOR = 0  # the KV sequence that holds the prefix shared by a batch's rows, kept between batches


class LlamaCppBatchedBackend:
    """ChatBackend: every row of a micro-batch decoded together by llama.cpp (module docstring)."""

    is_local = True

    def __init__(self, model_path: str | os.PathLike[str] = "embedded", *, n_ctx: int = 16384,
                 n_threads: int | None = None, max_batch_rows: int = 32, n_batch: int = 512,
                 collect_s: float = 0.0, verbose: bool = False) -> None:
        target = str(model_path)
        if "@" in target:
            raise ValueError(f"llamacpp-batched:{target}: LoRA adapters are not supported by the batched "
                             "llama.cpp player; use embedded@DIR (transformers) for an adapter")
        self._llama_cpp = import_llama_cpp()
        self.model_path = resolve_model_path(target)
        self.embedded = target in ("", "embedded")
        self.name = f"llamacpp-batched:{target or 'embedded'}"
        self.default_sampling = EMBEDDED_MODEL_SAMPLING if self.embedded else LOCAL_MODEL_SAMPLING
        self.n_ctx = n_ctx
        # As in llamacpp_backend: llama.cpp's threads spin while they wait, so never more than
        # half the cores of a shared machine.
        self.n_threads = n_threads or max(1, (os.cpu_count() or 2) // 2)
        self.max_batch_rows = max_batch_rows
        self.n_batch = n_batch
        self.verbose = verbose
        self._model = self._ctx = self._tokenizer = None
        self._batch: Any = None
        self._anchor: list[int] = []  # tokens held by sequence _ANCHOR
        self._kept: dict[int, list[int]] = {}  # the last batch's row sequences -> the tokens they hold
        self._half = 0  # which range of sequence ids the rows of the last batch used
        self._load_lock = threading.Lock()
        self._gen_lock = threading.Lock()
        self._batcher = MicroBatcher(self.generate_batch, max_rows=max_batch_rows, collect_s=collect_s)
        self.stats = {"batches": 0, "rows": 0, "decode_steps": 0, "row_steps": 0, "prompt_tokens": 0,
                      "prefilled_tokens": 0, "reused_tokens": 0,
                      "completion_tokens": 0,
                      "prefill_s": 0.0, "decode_s": 0.0, "sample_s": 0.0}
        self.load_seconds: float | None = None

    # ---- loading -------------------------------------------------------------------------
    def load(self) -> None:
        with self._load_lock:
            if self._ctx is not None:
                return
            start = time.perf_counter()
            lc = self._llama_cpp
            from llama_cpp import _logger

            _logger.set_verbose(self.verbose)
            lc.llama_backend_init()
            from josh_core.llm.hf_backend import _set_cpu_threads

            _set_cpu_threads()  # the sampler's torch ops: one thread on shared cores, as transformers
            self._tokenizer = self._load_tokenizer()
            model = lc.llama_model_load_from_file(str(self.model_path).encode("utf-8"), lc.llama_model_default_params())
            if not model:
                raise ValueError(f"llama.cpp could not load {self.model_path}")
            params = lc.llama_context_default_params()
            params.n_ctx = self.n_ctx
            params.n_batch = params.n_ubatch = self.n_batch
            params.n_seq_max = 2 * self.max_batch_rows + 1
            params.n_threads = params.n_threads_batch = self.n_threads
            # One KV buffer for all sequences: a sequence copy tags cells instead of copying them.
            params.kv_unified = True
            ctx = lc.llama_init_from_model(model, params)
            if not ctx:
                lc.llama_model_free(model)
                raise ValueError(f"llama.cpp could not create a context for {self.model_path} "
                                 f"(n_ctx {self.n_ctx}, {2 * self.max_batch_rows + 1} sequences)")
            self._model, self._ctx = model, ctx
            self._vocab_size = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(model))
            self._batch = lc.llama_batch_init(self.n_batch, 0, 1)
            self.load_seconds = time.perf_counter() - start

    def _load_tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        if self.embedded:
            from josh_core.llm.embedded import embedded_model_dir

            return AutoTokenizer.from_pretrained(embedded_model_dir())
        return AutoTokenizer.from_pretrained(self.model_path.parent, gguf_file=self.model_path.name)

    @property
    def tokenizer(self) -> Any:
        self.load()
        return self._tokenizer

    # ---- the async interface -------------------------------------------------------------
    async def chat(self, request: ChatRequest) -> ChatResponse:
        return await self._batcher.submit(request)

    async def aclose(self) -> None:
        await self._batcher.aclose()
        with self._gen_lock:
            lc = self._llama_cpp
            if self._batch is not None:
                lc.llama_batch_free(self._batch)
                self._batch = None
            if self._ctx is not None:
                lc.llama_free(self._ctx)
                self._ctx = None
            if self._model is not None:
                lc.llama_model_free(self._model)
                self._model = None

    def reset_cache(self) -> None:
        """Forget the kept prefix (benches: each run starts from an empty KV cache)."""
        with self._gen_lock:
            if self._ctx is not None:
                self._llama_cpp.llama_memory_clear(self._memory(), True)
            self._anchor, self._kept = [], {}

    @property
    def batch_sizes(self) -> list[int]:
        return self._batcher.batch_sizes

    def render_prompt(self, request: ChatRequest) -> str:
        messages = to_template_messages(request.messages, request.tools)
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    # ---- llama.cpp calls -----------------------------------------------------------------
    def _decode(self, entries: list[tuple[int, int, int, bool]]) -> list[Any]:
        """Evaluate `entries` (token, position, sequence, wants logits) in chunks of n_batch;
        returns the logits (numpy [vocab] float32 copies) of the entries that want them, in order."""
        import numpy as np

        lc, batch, out = self._llama_cpp, self._batch, []
        for start in range(0, len(entries), self.n_batch):
            chunk = entries[start:start + self.n_batch]
            for i, (token, pos, seq, logits) in enumerate(chunk):
                batch.token[i] = token
                batch.pos[i] = pos
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = seq
                batch.logits[i] = logits
            batch.n_tokens = len(chunk)
            code = lc.llama_decode(self._ctx, batch)
            if code != 0:
                raise RuntimeError(f"llama_decode failed ({code}): the KV cache of {self.n_ctx} cells may be "
                                   "full; raise n_ctx or lower max_batch_rows")
            wanted = sum(1 for e in chunk if e[3])
            if wanted:
                pointer = lc.llama_get_logits(self._ctx)
                block = np.ctypeslib.as_array(pointer, shape=(wanted, self._vocab_size))
                out.extend(np.array(block, dtype=np.float32))
        return out

    def _memory(self) -> Any:
        return self._llama_cpp.llama_get_memory(self._ctx)

    def _seq(self, index: int) -> int:
        """The KV sequence of batch row `index` in this batch (the ids alternate between two
        ranges, so the sequences of the batch before stay readable while this one starts)."""
        return 1 + self._half * self.max_batch_rows + index

    def _prefill(self, token_rows: list[list[int]], groups: dict[tuple[int, ...], list[int]]) -> list[Any]:
        """Fill each row's sequence with its prompt; returns each row's next-token logits.

        Sources, longest match first: the sequences the previous batch's rows left (a leaf's
        next turn extends its own last prompt and answer), and the anchor (sequence 0, the
        prefix shared by the previous batch's rows, extended to this batch's). Only what no
        source holds is evaluated; copies only tag cells (unified KV buffer).
        """
        lc, mem = self._llama_cpp, self._memory()
        self._half = 1 - self._half
        old_rows = self._kept  # sequence id -> the tokens it holds
        # The prefix shared by all rows, minus at least one token per prompt (its logits are needed).
        shared = min(len(t) for t in token_rows) - 1
        first = tuple(token_rows[0])
        for row in token_rows[1:]:
            shared = min(shared, common_prefix_len(first, tuple(row)))
        prefix = list(first[:shared])
        kept = common_prefix_len(tuple(self._anchor), tuple(prefix))
        if not lc.llama_memory_seq_rm(mem, _ANCHOR, kept, -1):
            lc.llama_memory_seq_rm(mem, _ANCHOR, -1, -1)
            kept = 0
        best_seq, best = None, kept
        for seq, tokens in old_rows.items():
            n = common_prefix_len(tuple(tokens), tuple(prefix))
            if n > best:
                best_seq, best = seq, n
        if best_seq is not None:
            lc.llama_memory_seq_cp(mem, best_seq, _ANCHOR, kept, best)
            self.stats["reused_tokens"] += best - kept
        self._decode([(prefix[pos], pos, _ANCHOR, False) for pos in range(best, shared)])
        self.stats["prefilled_tokens"] += shared - best
        self._anchor = prefix
        entries = []
        for prompt, members in groups.items():
            seq = self._seq(members[0])
            source, start = _ANCHOR, shared
            for old_seq, tokens in old_rows.items():
                n = min(common_prefix_len(tuple(tokens), prompt), len(prompt) - 1)
                if n > start:
                    source, start = old_seq, n
            lc.llama_memory_seq_rm(mem, seq, -1, -1)
            lc.llama_memory_seq_cp(mem, source, seq, 0, start)
            self.stats["reused_tokens"] += start
            for pos in range(start, len(prompt)):
                entries.append((prompt[pos], pos, seq, pos == len(prompt) - 1))
        for seq in old_rows:  # the previous batch's sequences have served
            lc.llama_memory_seq_rm(mem, seq, -1, -1)
        self._kept = {}
        self.stats["prefilled_tokens"] += len(entries)
        logits = self._decode(entries)
        out: list[Any] = [None] * len(token_rows)
        for (prompt, members), row_logits in zip(groups.items(), logits):
            for index in members:
                if index != members[0]:
                    lc.llama_memory_seq_rm(mem, self._seq(index), -1, -1)
                    lc.llama_memory_seq_cp(mem, self._seq(members[0]), self._seq(index), -1, -1)
                out[index] = row_logits
        return out

    # ---- batched generation (runs in a worker thread) ------------------------------------
    def generate_batch(self, requests: list[ChatRequest]) -> list[ChatResponse]:
        self.load()
        with self._gen_lock:
            if self._ctx is None:
                raise RuntimeError(f"{self.name} is closed")
            return self._generate_batch_locked(requests)

    def _generate_batch_locked(self, requests: list[ChatRequest]) -> list[ChatResponse]:
        import numpy as np
        import torch

        from josh_core.llm import structured
        from josh_core.llm.batch_sampling import BatchSampler
        from josh_core.llm.hf_backend import _Row

        tokenizer = self._tokenizer
        start = time.perf_counter()
        rows: list[_Row] = []
        token_rows: list[list[int]] = []
        row_constraints = []
        for ri, request in enumerate(requests):
            prompt = tokenizer(self.render_prompt(request), add_special_tokens=False)["input_ids"]
            for si in range(request.n):
                # Seeded as the transformers backend seeds its rows.
                gen = torch.Generator()
                seed = request.sampling.seed
                base = seed if seed is not None else random.getrandbits(32)
                gen.manual_seed((base * 1_000_003 + si) & 0x7FFF_FFFF_FFFF_FFFF)
                rows.append(_Row(ri, si, request.sampling, gen, list(request.sampling.stop or [])))
                token_rows.append(prompt)
                row_constraints.append(request.constraint)
        if len(rows) > self.max_batch_rows:
            raise ValueError(f"{len(rows)} rows in one batch; this context holds {self.max_batch_rows}")
        eos_id = tokenizer.eos_token_id
        constraint = None
        if any(c is not None for c in row_constraints):
            constraint = structured.logits_processor_for(tokenizer, row_constraints, eos_token_ids=[eos_id])
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, prompt in enumerate(token_rows):
            groups.setdefault(tuple(prompt), []).append(index)
        mark = time.perf_counter()
        first_logits = self._prefill(token_rows, groups)
        self.stats["prefill_s"] += time.perf_counter() - mark
        logits = torch.from_numpy(np.stack(first_logits))
        positions = [len(t) for t in token_rows]
        fed = [list(t) for t in token_rows]  # the tokens each row's sequence holds
        sampler = BatchSampler(rows, tokenizer, eos_id)
        active = list(range(len(rows)))
        # One step beyond the largest budget so a row at its budget can still emit EOS.
        max_new = max(r.sampling.max_tokens for r in rows) + 1
        for _ in range(max_new):
            mark = time.perf_counter()
            if constraint is not None:
                bitmask = constraint.allowed_bitmask(active)
                if bitmask is not None:
                    constraint.apply_bitmask(logits, bitmask)
            tokens = sampler.step(logits, active)
            if constraint is not None:
                for index, token in zip(active, tokens):
                    constraint.feed(index, token)
            live = [(index, token) for index, token in zip(active, tokens) if not rows[index].finished]
            if not live:
                break
            active = [index for index, _ in live]
            step = [(token, positions[index], self._seq(index), True) for index, token in live]
            for index, token in live:
                fed[index].append(token)
            for index in active:
                positions[index] += 1
            between = time.perf_counter()
            self.stats["sample_s"] += between - mark
            logits = torch.from_numpy(np.stack(self._decode(step)))
            self.stats["decode_s"] += time.perf_counter() - between
            self.stats["decode_steps"] += 1
            self.stats["row_steps"] += len(step)
        # The rows' sequences stay for the next batch to extend (see _prefill).
        self._kept = {self._seq(index): tokens for index, tokens in enumerate(fed)}
        seconds = time.perf_counter() - start
        self.stats["batches"] += 1
        self.stats["rows"] += len(rows)
        self.stats["prompt_tokens"] += sum(len(t) for t in token_rows)
        self.stats["completion_tokens"] += sum(len(r.tokens) for r in rows)
        return _responses(requests, rows, token_rows, tokenizer, seconds, self.name)


def _responses(requests: list[ChatRequest], rows: list[Any], token_rows: list[list[int]], tokenizer: Any,
               seconds: float, name: str) -> list[ChatResponse]:
    """One ChatResponse per request, its rows' texts cut at stop strings, tool calls parsed
    (as the transformers backend does)."""
    by_request: list[list[Any]] = [[] for _ in requests]
    first_row: list[int] = [0] * len(requests)
    for index, row in enumerate(rows):
        if not by_request[row.request_index]:
            first_row[row.request_index] = index
        by_request[row.request_index].append(row)
    responses = []
    for ri, request in enumerate(requests):
        choices = [decoded_choice(row.tokens, row.finish_reason, request, tokenizer) for row in by_request[ri]]
        responses.append(ChatResponse(choices=choices, prompt_tokens=len(token_rows[first_row[ri]]),
                                      completion_tokens=sum(len(r.tokens) for r in by_request[ri]),
                                      seconds=seconds, model=name))
    return responses


# -- registration (josh_core/llm/specs.py) ---------------------------------------------------


class LlamaCppBatchedOptions(BackendOptions):
    """Settings of the batched llama.cpp backend (None: LlamaCppBatchedBackend's default)."""

    n_ctx: int | None = Field(None, ge=1)
    n_threads: int | None = Field(None, ge=1)
    max_batch_rows: int | None = Field(None, ge=1)
    n_batch: int | None = Field(None, ge=1)
    collect_s: float | None = Field(None, ge=0)
    verbose: bool | None = None


def _build(rest: str, options: LlamaCppBatchedOptions, base_url: str | None) -> LlamaCppBatchedBackend:
    return LlamaCppBatchedBackend(rest or "embedded",
                                  **{k: v for k, v in options.model_dump().items() if v is not None})


def _check(rest: str, base_url: str | None) -> list[str]:
    if "@" in rest:
        return ["LoRA adapters are not supported by llamacpp-batched; use embedded@DIR"]
    return gguf_problems(rest)


BACKEND = BackendKind(
    kind="llamacpp-batched", usage="llamacpp-batched:GGUF_PATH",
    summary="llama.cpp, every row of a batch decoded together, our sampling and grammar masks "
            "(llamacpp-batched:embedded; no LoRA adapters)",
    options=LlamaCppBatchedOptions, build=_build, default_style=compact_for_embedded, check=_check,
)  # fmt: skip
