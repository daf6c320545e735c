"""llguidance in process: its tokenizers, compiled grammars and matchers, and the logits
processor that masks every row of a batch with its own matcher (the transformers backend and
the batched llama.cpp player use it; `llamacpp_backend.py` drives a matcher itself)."""

from __future__ import annotations

import json
import threading
import time
import weakref
from collections import OrderedDict
from typing import Any, Iterable, Sequence

from josh_core.llm.base import ConstraintUnsupported, OutputConstraint


# --------------------------------------------------------------------------------------------
# llguidance plumbing: tokenizers, compiled grammars, matchers
# --------------------------------------------------------------------------------------------

_LLTOKENIZERS: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()
_LLTOKENIZERS_BY_ID: dict[int, Any] = {}
_TOKENIZER_LOCK = threading.Lock()
_TEMPLATES: "OrderedDict[tuple[int, str], Any]" = OrderedDict()
_TEMPLATE_LOCK = threading.Lock()
_EXECUTOR = None


def _eos_ids(tokenizer: Any, eos_token_ids: Iterable[int] | None) -> list[int]:
    if eos_token_ids is not None:
        ids = [int(i) for i in eos_token_ids]
    else:
        eos = getattr(tokenizer, "eos_token_id", None)
        ids = list(eos) if isinstance(eos, (list, tuple)) else ([int(eos)] if eos is not None else [])
    if not ids:
        raise ValueError("the tokenizer has no EOS token; pass eos_token_ids")
    return ids


def lltokenizer_for(tokenizer: Any, eos_token_ids: Iterable[int] | None = None) -> Any:
    """The llguidance tokenizer of a transformers fast tokenizer, built once (about 1 s) and cached."""
    import llguidance.hf

    eos = tuple(_eos_ids(tokenizer, eos_token_ids))
    with _TOKENIZER_LOCK:
        try:
            per_tok = _LLTOKENIZERS.setdefault(tokenizer, {})
        except TypeError:  # not weak-referenceable
            per_tok = _LLTOKENIZERS_BY_ID.setdefault(id(tokenizer), {})
        if eos not in per_tok:
            per_tok[eos] = llguidance.hf.from_tokenizer(tokenizer, eos_token=list(eos))
        return per_tok[eos]


def llguidance_grammar(constraint: OutputConstraint) -> str:
    """The llguidance grammar text of a constraint."""
    from llguidance import LLMatcher

    if constraint.kind == "lark" and constraint.grammar:
        return LLMatcher.grammar_from_lark(constraint.grammar)
    if constraint.kind == "json_schema" and constraint.json_schema is not None:
        return LLMatcher.grammar_from_json_schema(constraint.json_schema)
    if constraint.kind == "gbnf" and constraint.grammar:
        from llguidance import grammar_from

        return grammar_from("gbnf", constraint.grammar)
    raise ConstraintUnsupported(f"cannot build an llguidance grammar from constraint kind {constraint.kind!r}")


def new_matcher(lltokenizer: Any, constraint: OutputConstraint) -> Any:
    """A fresh LLMatcher for `constraint`; grammars compile once per tokenizer, then deep-copy."""
    from llguidance import LLMatcher

    key = (id(lltokenizer), constraint.kind + "\0" + (constraint.grammar or json.dumps(constraint.json_schema)))
    with _TEMPLATE_LOCK:
        template = _TEMPLATES.get(key)
        if template is not None:
            _TEMPLATES.move_to_end(key)
    if template is None:
        grammar = llguidance_grammar(constraint)
        template = LLMatcher(lltokenizer, grammar, log_level=0)
        if template.is_error():
            raise ValueError(f"invalid grammar: {template.get_error()}")
        with _TEMPLATE_LOCK:
            _TEMPLATES[key] = template
            while len(_TEMPLATES) > 64:
                _TEMPLATES.popitem(last=False)
    return template.deep_copy()


def matches_constraint(text: str, constraint: OutputConstraint, tokenizer: Any) -> bool:
    """Whether the whole `text` is a complete sentence of the constraint's grammar."""
    lltok = lltokenizer_for(tokenizer)
    matcher = new_matcher(lltok, constraint)
    ok = matcher.consume_tokens(lltok.tokenize_str(text))
    return bool(ok and not matcher.is_error() and matcher.is_accepting())


def _executor() -> Any:
    global _EXECUTOR
    if _EXECUTOR is None:
        from llguidance import LLExecutor

        _EXECUTOR = LLExecutor()
    return _EXECUTOR


# --------------------------------------------------------------------------------------------
# transformers: one logits processor for a whole batch, one matcher per row
# --------------------------------------------------------------------------------------------


def expand_rows(constraints: Sequence[OutputConstraint | None], n: int) -> list[OutputConstraint | None]:
    """Per-request constraints -> per-row, in the order `generate(num_return_sequences=n)` uses."""
    return [c for c in constraints for _ in range(n)]


class ConstrainedLogitsProcessor:
    """Masks each batch row's logits with that row's grammar (llguidance), vectorised.

    Rows are those of `generate`'s batch (left-padded prompts; with num_return_sequences the
    rows of one request are adjacent, see `expand_rows`). A row whose constraint is None is left
    alone. A row stops being masked once its matcher has consumed EOS (generate then pads it).
    The processor is stateful: use a new one for every `generate` call.

    transformers applies custom processors before temperature / top-k / top-p, so sampling
    warps the masked distribution, never the other way round.
    """

    def __init__(
        self,
        tokenizer: Any,
        constraints: Sequence[OutputConstraint | None],
        *,
        eos_token_ids: Iterable[int] | None = None,
    ) -> None:
        import numpy as np

        self._np = np
        self.lltokenizer = lltokenizer_for(tokenizer, eos_token_ids)
        self.eos_token_ids = list(self.lltokenizer.eos_tokens)
        self.matchers = [None if c is None else new_matcher(self.lltokenizer, c) for c in constraints]
        self.done = [m is None for m in self.matchers]
        self.errors: list[str | None] = [None] * len(self.matchers)
        self._seen: int | None = None  # sequence length already fed to the matchers
        words = (self.lltokenizer.vocab_size + 31) // 32
        self._bitmask = np.full((len(self.matchers), words), -1, dtype=np.int32)
        self.mask_seconds = 0.0  # time spent computing and applying masks (for the bench)
        self.steps = 0

    @property
    def batch_size(self) -> int:
        return len(self.matchers)

    def accepted(self, row: int) -> bool:
        """Whether row `row` ended as a complete sentence of its grammar (True if unconstrained)."""
        m = self.matchers[row]
        return m is None or (not m.is_error() and m.is_accepting())

    def _feed(self, row: int, token: int) -> None:
        matcher = self.matchers[row]
        if self.done[row] or matcher is None:
            return
        if token in self.eos_token_ids:
            matcher.consume_token(token)  # completes an accepting matcher
            self.done[row] = True
        elif matcher.is_stopped():
            # Ended by something other than our EOS (another stop id, a pad): nothing to mask.
            self.done[row] = True
        elif not matcher.consume_token(token):
            # A token outside the mask (only possible if something after us changed the
            # logits). The matcher now allows EOS only, so the row ends at the next step.
            self.errors[row] = matcher.get_error() or "token rejected"

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        start = time.perf_counter()
        np = self._np
        batch, seq_len = input_ids.shape
        if batch != len(self.matchers):
            raise ValueError(f"batch of {batch} rows, but {len(self.matchers)} constraints")
        if self._seen is None:
            self._seen = seq_len  # the first call sees only the (padded) prompts
        elif seq_len > self._seen:
            new = input_ids[:, self._seen :].tolist()
            for row, tokens in enumerate(new):
                for token in tokens:
                    self._feed(row, int(token))
            self._seen = seq_len
        active = [(m, row) for row, m in enumerate(self.matchers) if not self.done[row]]
        if active:
            self._bitmask.fill(-1)  # rows left out (unconstrained, done) allow every token
            # A matcher in error still returns a mask (EOS only), so a broken row ends at once.
            self._executor_fill(active)
            bits = np.unpackbits(self._bitmask.view(np.uint8), axis=1, bitorder="little")
            vocab = scores.shape[-1]
            if vocab <= bits.shape[1]:
                blocked = bits[:, :vocab] == 0
            else:  # the model's head is wider than the tokenizer: extra ids are never allowed
                blocked = np.ones((batch, vocab), dtype=bool)
                blocked[:, : bits.shape[1]] = bits == 0
            if scores.device.type == "cpu" and scores.dtype in (torch.float32, torch.float64) and scores.is_contiguous():
                # In place through numpy: one pass, no intra-op thread pool (which costs more
                # than the work itself when the cores are shared).
                np.copyto(scores.numpy(), -np.inf, where=blocked)
            else:
                scores = scores.masked_fill(torch.from_numpy(blocked).to(scores.device), float("-inf"))
        self.steps += 1
        self.mask_seconds += time.perf_counter() - start
        return scores

    def feed(self, row: int, token: int) -> None:
        """Advance row `row`'s matcher by the token it drew (the batched decode loop's path)."""
        self._feed(row, token)

    def allowed_bitmask(self, rows: Sequence[int]) -> Any:
        """What each of `rows` (batch-row indices) may draw next: an int32 bitmask
        [len(rows), words] (all ones for unconstrained and finished rows), or None when none
        of them is constrained any more. The batched decode loop feeds the matchers itself
        (`feed`), so no token history is rescanned here."""
        start = time.perf_counter()
        todo = [(self.matchers[row], i) for i, row in enumerate(rows) if not self.done[row]]
        if not todo:
            return None
        bitmask = self._bitmask[: len(rows)]
        bitmask.fill(-1)
        self._executor_fill(todo, bitmask)
        self.mask_seconds += time.perf_counter() - start
        return bitmask

    def apply_bitmask(self, scores: Any, bitmask: Any) -> None:
        """Set to -inf, in place, every logit that `bitmask` (from `allowed_bitmask`) forbids."""
        start = time.perf_counter()
        np = self._np
        vocab = scores.shape[-1]
        bits = np.unpackbits(bitmask.view(np.uint8), axis=1, count=min(vocab, bitmask.shape[1] * 32),
                             bitorder="little")
        blocked = bits == 0
        if vocab > bits.shape[1]:  # the model's head is wider than the tokenizer
            blocked = np.concatenate([blocked, np.ones((len(blocked), vocab - bits.shape[1]), dtype=bool)], axis=1)
        if scores.device.type == "cpu" and scores.is_contiguous():
            np.copyto(scores.numpy(), -np.inf, where=blocked)
        else:
            import torch

            scores.masked_fill_(torch.from_numpy(blocked).to(scores.device), float("-inf"))
        self.steps += 1
        self.mask_seconds += time.perf_counter() - start

    def mask_rows(self, scores: Any, rows: Sequence[int]) -> None:
        """Mask `scores` in place, line i with the grammar of batch row `rows[i]`."""
        bitmask = self.allowed_bitmask(rows)
        if bitmask is not None:
            self.apply_bitmask(scores, bitmask)

    def _executor_fill(self, active: list[tuple[Any, int]], bitmask: Any = None) -> None:
        import llguidance.numpy as llnp

        bitmask = self._bitmask if bitmask is None else bitmask
        if len(active) == 1:
            llnp.fill_next_token_bitmask(active[0][0], bitmask, active[0][1])
        else:
            llnp.fill_next_token_bitmask_par(_executor(), active, bitmask)


def logits_processor_for(
    tokenizer: Any,
    constraints: OutputConstraint | None | Sequence[OutputConstraint | None],
    *,
    batch_size: int | None = None,
    eos_token_ids: Iterable[int] | None = None,
) -> ConstrainedLogitsProcessor | None:
    """A logits processor for one `generate` call; None when no row is constrained.

    `constraints`: one per batch row (None for an unconstrained row), or a single constraint
    for all `batch_size` rows. `eos_token_ids`: the ids generate stops on (default: the
    tokenizer's EOS); the grammar allows them once the action is complete.
    """
    if constraints is None or isinstance(constraints, OutputConstraint):
        if constraints is None:
            return None
        rows: list[OutputConstraint | None] = [constraints] * (batch_size or 1)
    else:
        rows = list(constraints)
        if batch_size is not None and len(rows) != batch_size:
            raise ValueError(f"{len(rows)} constraints for a batch of {batch_size}")
    if all(c is None for c in rows):
        return None
    return ConstrainedLogitsProcessor(tokenizer, rows, eos_token_ids=eos_token_ids)
