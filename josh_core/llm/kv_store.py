"""Per-sequence KV reuse for the in-process transformers backend.

A JOSH leaf asks the model again and again with a prompt that extends its previous one: the
next generation of a turn adds only `APIRETURN ...`, the next turn only the user's reply. The
store keeps the keys and values of finished sequences (prompt plus generated tokens), keyed by
their token ids; a new prompt starts from the stored sequence sharing its longest token prefix
and computes only the rest. Two siblings that ask with the same prompt share one prefill.

Entries are batch-1 tensors per layer. The store is bounded by the tokens it holds (each
SmolLM2-135M token is 30 layers x 2 x 3 kv heads x 64 x 4 bytes = 46 KB) and forgets the least
recently used entries first. Tensors are never modified in place (the cache appends with
`torch.cat`), so a lookup may hand out views of stored tensors.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

Layers = list[tuple[Any, Any]]  # per layer: (keys, values), each [1, kv_heads, tokens, dim]


def common_prefix_len(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class KVStore:
    def __init__(self, max_tokens: int = 40_000):
        self.max_tokens = max_tokens
        self._entries: OrderedDict[tuple[int, ...], Layers] = OrderedDict()
        self._tokens = 0
        self.reused_tokens = 0  # prompt tokens served from the store (for benches and tests)
        self.computed_tokens = 0  # prompt tokens that had to be computed

    def __len__(self) -> int:
        return len(self._entries)

    def longest_prefix(self, tokens: tuple[int, ...], max_len: int) -> tuple[Layers | None, int]:
        """The stored layers cropped to the longest prefix of `tokens` (at most `max_len` long)."""
        best_key, best = None, 0
        for key in self._entries:
            n = common_prefix_len(key, tokens)
            if n > best:
                best_key, best = key, n
        best = min(best, max_len)
        if best_key is None or best == 0:
            return None, 0
        self._entries.move_to_end(best_key)
        layers = [(k[:, :, :best], v[:, :, :best]) for k, v in self._entries[best_key]]
        return layers, best

    def put(self, tokens: tuple[int, ...], layers: Layers) -> None:
        if not tokens or len(tokens) > self.max_tokens:
            return
        if tokens in self._entries:
            self._entries.move_to_end(tokens)
            return
        self._entries[tokens] = layers
        self._tokens += len(tokens)
        while self._tokens > self.max_tokens and self._entries:
            key, _ = self._entries.popitem(last=False)
            self._tokens -= len(key)

    def clear(self) -> None:
        self._entries.clear()
        self._tokens = 0
