"""Vectorised per-row sampling for the batched decode loop of the transformers backend.

`RowSampler` (hf_backend.py) walks the rows in Python at every step: a full-vocabulary top-k,
softmax and cumulative sum per row. Here the rows that share sampling settings are processed
as one tensor (temperature, top-k, softmax, top-p in single ops over the batch) and only the
draw itself stays per row: each row keeps its own `torch.Generator`, and `torch.multinomial`
on that row's top-k probabilities consumes the generator exactly as `RowSampler` does, so a
seeded leaf draws the same token whatever else is in its batch, and the same token as the
reference sampler.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any


class BatchSampler:
    """Draws the next token of every active row; updates the rows (tokens, finish reasons)."""

    def __init__(self, rows: list[Any], tokenizer: Any, eos_id: int):
        self.rows = rows
        self.tokenizer = tokenizer
        self.eos_id = eos_id
        self.max_stop_len = max((len(s) for r in rows for s in r.stop), default=0)

    def step(self, scores: Any, active: list[int]) -> list[int]:
        """`scores[i]`: the (masked) logits of row `active[i]`. Returns the token of each."""
        import torch

        chosen = [self.eos_id] * len(active)
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, index in enumerate(active):
            row = self.rows[index]
            if row.finished:
                continue
            if row.force_eos:
                continue
            if len(row.tokens) >= row.sampling.max_tokens:
                row.finish_reason = "length"
                continue
            params = row.sampling
            groups[(params.temperature, params.top_k, params.top_p)].append(i)
        for (temperature, top_k, top_p), members in groups.items():
            index = torch.tensor(members)
            logits = scores.index_select(0, index) if len(members) < len(active) else scores
            # A row whose constraint left nothing allowed ends (EOS), as in RowSampler.
            alive = torch.isfinite(logits).any(dim=-1).tolist()
            if temperature <= 0:
                picks = torch.argmax(logits, dim=-1).tolist()
                for i, pick, ok in zip(members, picks, alive):
                    if ok:
                        chosen[i] = int(pick)
                continue
            logits = logits / temperature
            if top_k and top_k > 0:
                values, indices = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1)
            else:
                values, indices = torch.sort(logits, dim=-1, descending=True)
            probs = torch.softmax(values, dim=-1)
            if top_p is not None and top_p < 1.0:
                keep = torch.cumsum(probs, dim=-1) - probs < top_p  # always keeps the most likely
                probs = probs * keep
                probs = probs / probs.sum(dim=-1, keepdim=True)
            for j, i in enumerate(members):
                if not alive[j]:
                    continue
                pick = torch.multinomial(probs[j], 1, generator=self.rows[active[i]].generator)
                chosen[i] = int(indices[j, pick])
        for i, index in enumerate(active):
            if not self.rows[index].finished:
                self._advance(self.rows[index], chosen[i])
        return chosen

    def _advance(self, row: Any, token: int) -> None:
        advance_row(row, token, self.eos_id, self.tokenizer, self.max_stop_len)


def advance_row(row: Any, token: int, eos_id: int, tokenizer: Any, max_stop_len: int) -> None:
    """Append a drawn token to a row (both decode loops): EOS finishes it; a stop string in its
    tail makes the next step end it."""
    if token == eos_id:
        row.finished = True
        row.finish_reason = row.finish_reason or "stop"
        return
    row.tokens.append(token)
    if row.stop:
        # Decode only the tail that could hold a stop string.
        tail = tokenizer.decode(row.tokens[-(max_stop_len + 2):], skip_special_tokens=True)
        if any(s in tail for s in row.stop):
            row.force_eos = True
