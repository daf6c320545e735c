"""The batched logits processor: one matcher per row, unconstrained rows untouched, finished
rows tolerated, every constrained row ends as a valid action.

The logits come from a seeded random generator instead of a model (the model test is in
test_structured_model.py); the processor cannot tell the difference, and this way the
test runs in a second and explores far stranger token sequences than a model would.
"""

from __future__ import annotations

import pytest
import torch

from josh_core.llm.structured import (
    REACT_MAX_TOKENS,
    check_react,
    expand_rows,
    fc_constraint,
    logits_processor_for,
    parse_fc_output,
    react_constraint,
)
from josh_core.envs.toolwoz.apis import TOOLS


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from josh_core.llm.embedded import embedded_model_dir

    return AutoTokenizer.from_pretrained(embedded_model_dir())


@pytest.fixture(autouse=True)
def one_torch_thread():
    # Small tensor ops on shared cores: the intra-op pool only adds waiting.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_generate_loop(processor, prompt, vocab, eos, pad, steps, seed):
    """What `generate` does with a logits processor: call, sample, append; pad finished rows."""
    gen = torch.Generator().manual_seed(seed)
    input_ids = prompt.clone()
    finished = torch.zeros(prompt.shape[0], dtype=torch.bool)
    seen_scores = []
    for _ in range(steps):
        scores = torch.randn(prompt.shape[0], vocab, generator=gen) * 4
        raw = scores.clone()
        scores = processor(input_ids, scores)
        seen_scores.append((raw, scores))
        assert torch.isfinite(scores).any(dim=1).all(), "a row was masked to nothing"
        # Gumbel-max: a sample from softmax(scores) without materialising the probabilities.
        gumbel = -torch.log(-torch.log(torch.rand(scores.shape, generator=gen)))
        token = (scores + gumbel).argmax(dim=1)
        token = torch.where(finished, torch.full_like(token, pad), token)
        input_ids = torch.cat([input_ids, token[:, None]], dim=1)
        finished |= token == eos
        if finished.all():
            break
    return input_ids[:, prompt.shape[1] :], seen_scores


def _row_text(tokenizer, tokens, eos):
    tokens = tokens.tolist()
    if eos in tokens:
        tokens = tokens[: tokens.index(eos)]
    return tokenizer.decode(tokens)


def test_rows_with_different_constraints_and_none(tokenizer):
    react = react_constraint(TOOLS)
    fc = fc_constraint(TOOLS)
    rows = expand_rows([react, None, fc], 2)  # two samples per request, adjacent
    assert rows == [react, react, None, None, fc, fc]
    processor = logits_processor_for(tokenizer, rows)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    # Left-padded prompts of different lengths.
    prompt = torch.tensor([[pad, pad, 7, 8], [pad, pad, 7, 8], [5, 6, 7, 8], [5, 6, 7, 8], [pad, 6, 7, 8], [pad, 6, 7, 8]])
    generated, seen = run_generate_loop(processor, prompt, len(tokenizer), eos, pad, REACT_MAX_TOKENS, seed=3)

    for row in (0, 1):
        result = check_react(_row_text(tokenizer, generated[row], eos), TOOLS)
        assert result.ok, result
        assert processor.accepted(row)
    for row in (4, 5):
        parse_fc_output(_row_text(tokenizer, generated[row], eos))
        assert processor.accepted(row)
    # Unconstrained rows get their logits back untouched at every step.
    for raw, out in seen:
        assert torch.equal(raw[2:4], out[2:4])
    # Constrained rows were masked (most of the vocabulary is -inf at the first step).
    first_raw, first_out = seen[0]
    assert torch.isinf(first_out[0]).sum() > len(tokenizer) // 2
    assert processor.steps == len(seen) and processor.mask_seconds > 0


def test_all_rows_same_constraint_broadcast(tokenizer):
    processor = logits_processor_for(tokenizer, react_constraint(TOOLS), batch_size=3)
    assert processor.batch_size == 3
    eos = tokenizer.eos_token_id
    prompt = torch.tensor([[5, 6], [5, 6], [5, 6]])
    generated, _ = run_generate_loop(processor, prompt, len(tokenizer), eos, eos, REACT_MAX_TOKENS, seed=11)
    for row in range(3):
        assert check_react(_row_text(tokenizer, generated[row], eos), TOOLS).ok


def test_no_constraint_means_no_processor(tokenizer):
    assert logits_processor_for(tokenizer, None) is None
    assert logits_processor_for(tokenizer, [None, None]) is None
    with pytest.raises(ValueError):
        logits_processor_for(tokenizer, [None, react_constraint(TOOLS)], batch_size=3)


def test_wider_model_vocabulary_is_masked_beyond_the_tokenizer(tokenizer):
    processor = logits_processor_for(tokenizer, [react_constraint(TOOLS)])
    scores = torch.zeros(1, len(tokenizer) + 64)
    out = processor(torch.tensor([[5, 6]]), scores)
    assert torch.isinf(out[0, len(tokenizer) :]).all()
    assert torch.isfinite(out[0]).sum() > 0


def test_a_rejected_token_ends_the_row_with_eos(tokenizer):
    """If a row ever receives a token outside its mask, it is offered EOS only (no NaN rows)."""
    processor = logits_processor_for(tokenizer, [react_constraint(TOOLS)])
    eos = tokenizer.eos_token_id
    processor(torch.tensor([[5, 6]]), torch.zeros(1, len(tokenizer)))
    bad = tokenizer.encode("hello", add_special_tokens=False)[0]  # the grammar wants "PLAN "
    out = processor(torch.tensor([[5, 6, bad]]), torch.zeros(1, len(tokenizer)))
    assert processor.errors[0] is not None
    assert not processor.accepted(0)
    assert torch.isfinite(out[0]).nonzero().flatten().tolist() == [eos]
    # After its EOS the row is done: no longer masked (generate pads it).
    out = processor(torch.tensor([[5, 6, bad, eos]]), torch.zeros(1, len(tokenizer)))
    assert torch.isfinite(out[0]).all()


def test_batch_size_mismatch_is_an_error(tokenizer):
    processor = logits_processor_for(tokenizer, [react_constraint(TOOLS)] * 2)
    with pytest.raises(ValueError):
        processor(torch.tensor([[5, 6]]), torch.zeros(1, len(tokenizer)))
