"""Shared-prefix ("cascade") attention for batched decoding of leaves with a common prefix.

The leaves of a JOSH tree decode with the same long prefix (system prompt, demonstration,
the conversation up to their common ancestor) and short own suffixes. Standard batched
decoding keeps one copy of the prefix's keys and values per row and re-reads (and, with a
growing cache, re-copies) all of them at every step, so on a CPU a batch of 8 leaves with a
1,600-token prefix costs almost 4x a single leaf per step. Here the prefix KV is stored once
(batch 1) and every row's queries attend to it in one folded matrix product; each row's own
suffix KV lives in a preallocated buffer that grows without copying per step. The two score
blocks share one softmax, so the result is exact attention over [prefix; suffix].

Used by `HFBackend` for models with the usual `q_proj/k_proj/v_proj` attention that calls
the `attention_interface` hook (Llama, Qwen, Mistral, SmolLM ...); the model's attention
implementation is switched to this one only for the duration of a shared-prefix generate.
"""

from __future__ import annotations

import threading
from typing import Any

import torch
from transformers import AttentionInterface, DynamicCache
from transformers.cache_utils import DynamicLayer
from transformers.masking_utils import AttentionMaskInterface, eager_mask

ATTN_NAME = "josh_shared_prefix"
_active = threading.local()  # the SharedPrefixCache of the generate in progress (this thread)


class SharedPrefixLayer(DynamicLayer):
    """One layer's KV: the prefix once ([1, kv_heads, P, dim]) and each row's suffix."""

    def __init__(self, prefix_keys: torch.Tensor, prefix_values: torch.Tensor, batch: int):
        super().__init__()
        self.prefix_keys = prefix_keys
        self.prefix_values = prefix_values
        self.prefix_len = prefix_keys.shape[-2]
        self.batch = batch
        self.dtype, self.device = prefix_keys.dtype, prefix_keys.device
        self.is_initialized = True
        self.length = 0  # suffix tokens stored
        self._kbuf: torch.Tensor | None = None
        self._vbuf: torch.Tensor | None = None
        self.keys = self.values = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
        """Append the new suffix states; return the row suffixes (the prefix is read apart)."""
        need = self.length + key_states.shape[-2]
        if self._kbuf is None or need > self._kbuf.shape[-2]:
            capacity = max(need + 128, 2 * (self._kbuf.shape[-2] if self._kbuf is not None else 0))
            shape = (key_states.shape[0], key_states.shape[1], capacity, key_states.shape[-1])
            kbuf, vbuf = key_states.new_empty(shape), value_states.new_empty(shape)
            if self.length:
                kbuf[:, :, : self.length] = self._kbuf[:, :, : self.length]
                vbuf[:, :, : self.length] = self._vbuf[:, :, : self.length]
            self._kbuf, self._vbuf = kbuf, vbuf
        self._kbuf[:, :, self.length : need] = key_states
        self._vbuf[:, :, self.length : need] = value_states
        self.length = need
        self.keys = self._kbuf[:, :, :need]
        self.values = self._vbuf[:, :, :need]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.prefix_len + self.length

    def seed_suffix(self, keys: torch.Tensor, values: torch.Tensor, room: int) -> None:
        """Start with these row suffixes ([batch, kv_heads, S, dim]) and room for `room` more."""
        shape = (keys.shape[0], keys.shape[1], keys.shape[2] + room, keys.shape[3])
        self._kbuf, self._vbuf = keys.new_empty(shape), values.new_empty(shape)
        self._kbuf[:, :, : keys.shape[2]] = keys
        self._vbuf[:, :, : keys.shape[2]] = values
        self.length = keys.shape[2]
        self.batch = keys.shape[0]
        self.keys = self._kbuf[:, :, : self.length]
        self.values = self._vbuf[:, :, : self.length]

    def row_states(self, row: int, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Row `row`'s whole sequence ([1, kv_heads, P + suffix from `start`, dim]), copied."""
        keys = torch.cat([self.prefix_keys, self._kbuf[row : row + 1, :, start : self.length]], dim=-2)
        values = torch.cat([self.prefix_values, self._vbuf[row : row + 1, :, start : self.length]], dim=-2)
        return keys, values

    def select_rows(self, keep: torch.Tensor) -> None:
        """Keep only these rows (finished leaves leave the batch)."""
        self._kbuf = self._kbuf[keep]
        self._vbuf = self._vbuf[keep]
        self.batch = len(keep)
        self.keys = self._kbuf[:, :, : self.length]
        self.values = self._vbuf[:, :, : self.length]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.prefix_len + self.length + query_length, 0


class SharedPrefixCache(DynamicCache):
    """A cache for one batched generate whose rows all start with the same prefix."""

    def __init__(self, prefix: DynamicCache, batch: int):
        super().__init__()
        self.layers = [SharedPrefixLayer(layer.keys, layer.values, batch) for layer in prefix.layers]

    @classmethod
    def from_states(cls, prefix: list[tuple[torch.Tensor, torch.Tensor]],
                    suffix: list[tuple[torch.Tensor, torch.Tensor]], room: int) -> "SharedPrefixCache":
        """A cache whose rows hold `prefix` (per layer [1, kv_heads, P, dim]) once and their own
        (left-padded) `suffix` states (per layer [batch, kv_heads, S, dim]), with room to grow."""
        cache = cls.__new__(cls)
        DynamicCache.__init__(cache)
        cache.layers = []
        for (pk, pv), (sk, sv) in zip(prefix, suffix):
            layer = SharedPrefixLayer(pk, pv, sk.shape[0])
            layer.seed_suffix(sk, sv, room)
            cache.layers.append(layer)
        return cache

    def select_rows(self, keep: torch.Tensor) -> None:
        for layer in self.layers:
            layer.select_rows(keep)


def shared_prefix_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                            value: torch.Tensor, attention_mask: torch.Tensor | None,
                            scaling: float | None = None, dropout: float = 0.0, **kwargs: Any):
    """Attention over [shared prefix; row suffix]; returns ([batch, q, heads, dim], None)."""
    layer: SharedPrefixLayer = _active.cache.layers[module.layer_idx]
    prefix_k, prefix_v = layer.prefix_keys[0], layer.prefix_values[0]  # [kv_heads, P, dim]
    batch, heads, q_len, dim = query.shape
    kv_heads, prefix_len = prefix_k.shape[0], prefix_k.shape[1]
    group = heads // kv_heads  # query heads per kv head (head h uses kv head h // group)
    scale = scaling if scaling is not None else dim ** -0.5
    q = query.reshape(batch, kv_heads, group, q_len, dim)
    # Prefix: every row's queries against the one copy, as a single product per kv head.
    folded = q.permute(1, 0, 2, 3, 4).reshape(kv_heads, batch * group * q_len, dim)
    scores_prefix = torch.bmm(folded, prefix_k.transpose(1, 2)).mul_(scale)
    scores_prefix = scores_prefix.reshape(kv_heads, batch, group, q_len, prefix_len).permute(1, 0, 2, 3, 4)
    # Suffix: per row, the query heads of a kv head folded into one product (no broadcast copy).
    suffix_len = key.shape[-2]
    scores_suffix = torch.matmul(q.reshape(batch, kv_heads, group * q_len, dim), key.transpose(-1, -2))
    scores_suffix = scores_suffix.mul_(scale).reshape(batch, kv_heads, group, q_len, suffix_len)
    if attention_mask is not None:
        mask = attention_mask[:, :, -q_len:, :].unsqueeze(2)  # [batch, 1, 1, q, P + S]
        scores_prefix = scores_prefix + mask[..., :prefix_len]
        scores_suffix = scores_suffix + mask[..., prefix_len:]
    probs = torch.softmax(torch.cat([scores_prefix, scores_suffix], dim=-1).float(), dim=-1).to(query.dtype)
    probs_prefix = probs[..., :prefix_len].permute(1, 0, 2, 3, 4).reshape(kv_heads, batch * group * q_len, prefix_len)
    out = torch.bmm(probs_prefix, prefix_v).reshape(kv_heads, batch, group, q_len, dim).permute(1, 0, 2, 3, 4)
    probs_suffix = probs[..., prefix_len:].reshape(batch, kv_heads, group * q_len, suffix_len)
    out = out + torch.matmul(probs_suffix, value).reshape(batch, kv_heads, group, q_len, dim)
    return out.reshape(batch, heads, q_len, dim).transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTN_NAME, shared_prefix_attention)
AttentionMaskInterface.register(ATTN_NAME, eager_mask)


class shared_prefix_generation:
    """Context: the model attends with the shared prefix of `cache` while inside."""

    def __init__(self, model: Any, cache: SharedPrefixCache):
        self.model = model
        self.cache = cache
        self.previous: str | None = None

    def __enter__(self) -> SharedPrefixCache:
        self.previous = self.model.config._attn_implementation
        _active.cache = self.cache
        self.model.set_attn_implementation(ATTN_NAME)
        return self.cache

    def __exit__(self, *exc: Any) -> None:
        self.model.set_attn_implementation(self.previous or "sdpa")
        _active.cache = None
