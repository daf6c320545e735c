"""Run the general-ability check on in-process transformers agents (`embedded[@ADAPTER]`,
`hf:PATH[@ADAPTER]`, adapters merged as the agents play them)."""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from josh_core.ability.checks import check_problem, passes
from josh_core.analysis.compare import Interval, bootstrap_interval
from josh_core.files import file_sha256

DATA = Path(__file__).resolve().parent / "data"
INSTRUCTIONS_FILE = DATA / "instructions.json"
PASSAGES_FILE = DATA / "passages.json"
DEFAULT_MAX_NEW_TOKENS = 256  # the longest instruction asks for about 80 words
DEFAULT_BATCH_SIZE = 8
DEFAULT_RESAMPLES = 10_000  # as exp4's pre-registration

Progress = Callable[[str, str, int, int], None]  # (agent, "instructions" | "passages", done, total)


class Prompt(BaseModel):
    id: str
    prompt: str
    checks: list[dict[str, Any]]


class Passage(BaseModel):
    id: str
    text: str


class PromptResult(BaseModel):
    id: str
    passed: bool
    failed: list[str]  # kinds of the checks it failed
    response: str
    tokens: int  # generated tokens
    truncated: bool  # stopped by the token cap, not by the end-of-turn token


class PassageResult(BaseModel):
    id: str
    nll: float  # mean negative log-likelihood per token (nats)
    tokens: int  # tokens scored (every token after the first)


class AgentAbility(BaseModel):
    agent: str
    pass_rate: Interval  # share of prompts whose every check passed, bootstrap 95% over prompts
    passed: int
    prompts: int
    per_kind: dict[str, list[int]]  # check kind -> [passed, total]
    nll: Interval  # mean over passages of their per-token NLL, bootstrap 95% over passages
    tokens_scored: int
    load_seconds: float
    generation_seconds: float
    seconds_per_prompt: float
    nll_seconds: float
    responses: list[PromptResult]
    passages: list[PassageResult]


class AbilityDifference(BaseModel):
    agent: str
    reference: str  # the first agent
    pass_rate: Interval  # agent - reference, paired by prompt
    nll: Interval  # agent - reference, paired by passage (above zero: the text got less likely)
    changed_responses: int  # prompts whose greedy response differs from the reference's


class AbilityReport(BaseModel):
    agents: list[AgentAbility]
    differences: list[AbilityDifference] = Field(default_factory=list)
    settings: dict[str, Any]
    created_at: str


def _load(path: Path, model: type[BaseModel], limit: int | None) -> list[Any]:
    items = [model.model_validate(item) for item in json.loads(path.read_text(encoding="utf-8"))]
    return items[: max(limit, 0)] if limit is not None else items


def load_prompts(limit: int | None = None) -> list[Prompt]:
    """The instruction prompts (the first `limit`); ValueError for a check that cannot run."""
    prompts = _load(INSTRUCTIONS_FILE, Prompt, limit)
    for prompt in prompts:
        for check in prompt.checks:
            problem = check_problem(check)
            if problem:
                raise ValueError(f"{INSTRUCTIONS_FILE.name}, {prompt.id}: {problem}")
    return prompts


def load_passages(limit: int | None = None) -> list[Passage]:
    return _load(PASSAGES_FILE, Passage, limit)


def _backend(spec: str):
    """The in-process transformers backend of an agent SPEC (adapter merged), loaded."""
    from josh_core.llm.hf_backend import HFBackend
    from josh_core.llm.specs import build_backend, split_spec

    kind, _ = split_spec(spec)
    if kind not in ("embedded", "hf"):
        raise ValueError(f"--agent {spec}: the ability check runs in-process transformers models only: "
                         "embedded[@ADAPTER] or hf:PATH[@ADAPTER]")
    backend = build_backend(spec, shared=False)
    assert isinstance(backend, HFBackend)
    backend.load()
    return backend


def greedy_responses(model: Any, tokenizer: Any, prompts: Sequence[str], *, max_new_tokens: int,
                     batch_size: int, on_batch: Callable[[int], None] | None = None) -> list[tuple[str, int, bool]]:
    """(response, generated tokens, truncated) for each prompt: the prompt as the one user turn
    of the model's chat template, greedy decoding, batches of similar lengths (left-padded)."""
    import torch
    from transformers import GenerationConfig

    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                           add_generation_prompt=True) for p in prompts]
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos, pad_token_id=pad)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out: list[tuple[str, int, bool] | None] = [None] * len(texts)
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        enc = tokenizer([texts[i] for i in chunk], return_tensors="pt", padding=True,
                        add_special_tokens=False).to(device)
        with torch.no_grad():
            generated = model.generate(**enc, generation_config=config)
        for row, i in zip(generated[:, enc["input_ids"].shape[1]:].tolist(), chunk):
            ended = eos in row
            kept = row[: row.index(eos)] if ended else [t for t in row if t != pad]
            out[i] = (tokenizer.decode(kept, skip_special_tokens=True), len(kept), not ended)
        if on_batch:
            on_batch(len(chunk))
    return [o for o in out if o is not None]


def passage_nll(model: Any, tokenizer: Any, texts: Sequence[str], *, batch_size: int,
                on_batch: Callable[[int], None] | None = None) -> list[tuple[float, int]]:
    """(mean NLL per token, tokens scored) of each text: every token after the first, given
    the ones before it (right-padded batches; pads masked out)."""
    import torch

    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    out: list[tuple[float, int]] = []
    for start in range(0, len(ids), batch_size):
        chunk = ids[start:start + batch_size]
        width = max(len(row) for row in chunk)
        input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, row in enumerate(chunk):
            input_ids[r, : len(row)] = torch.tensor(row)
            mask[r, : len(row)] = 1
        input_ids, mask = input_ids.to(device), mask.to(device)
        with torch.no_grad():
            logits = model(input_ids=input_ids, attention_mask=mask).logits[:, :-1].float()
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
        scored = mask[:, 1:].float()
        for r in range(len(chunk)):
            n = int(scored[r].sum())
            out.append((float(-(logprobs[r] * scored[r]).sum() / max(n, 1)), n))
        if on_batch:
            on_batch(len(chunk))
    return out


def _agent_ability(spec: str, prompts: list[Prompt], passages: list[Passage], *, max_new_tokens: int,
                   batch_size: int, resamples: int, seed: int, progress: Progress | None) -> AgentAbility:
    started = time.perf_counter()
    backend = _backend(spec)
    load_seconds = time.perf_counter() - started
    model, tokenizer = backend.model, backend.tokenizer
    done = {"instructions": 0, "passages": 0}

    def tick(stage: str, total: int) -> Callable[[int], None]:
        def on_batch(n: int) -> None:
            done[stage] += n
            if progress:
                progress(spec, stage, done[stage], total)
        return on_batch

    start = time.perf_counter()
    generated = greedy_responses(model, tokenizer, [p.prompt for p in prompts], max_new_tokens=max_new_tokens,
                                 batch_size=batch_size, on_batch=tick("instructions", len(prompts)))
    generation_seconds = time.perf_counter() - start
    results = []
    per_kind: dict[str, list[int]] = {}
    for prompt, (response, tokens, truncated) in zip(prompts, generated):
        failed = [c["kind"] for c in prompt.checks if not passes(response, c)]
        for check in prompt.checks:
            counts = per_kind.setdefault(check["kind"], [0, 0])
            counts[0] += check["kind"] not in failed
            counts[1] += 1
        results.append(PromptResult(id=prompt.id, passed=not failed, failed=failed, response=response,
                                    tokens=tokens, truncated=truncated))
    start = time.perf_counter()
    scored = passage_nll(model, tokenizer, [p.text for p in passages], batch_size=batch_size,
                         on_batch=tick("passages", len(passages)))
    nll_seconds = time.perf_counter() - start
    del model, tokenizer, backend
    gc.collect()
    passage_results = [PassageResult(id=p.id, nll=nll, tokens=n) for p, (nll, n) in zip(passages, scored)]
    return AgentAbility(
        agent=spec,
        pass_rate=bootstrap_interval([float(r.passed) for r in results], resamples, seed),
        passed=sum(r.passed for r in results),
        prompts=len(results),
        per_kind=dict(sorted(per_kind.items())),
        nll=bootstrap_interval([r.nll for r in passage_results], resamples, seed),
        tokens_scored=sum(r.tokens for r in passage_results),
        load_seconds=round(load_seconds, 3),
        generation_seconds=round(generation_seconds, 3),
        seconds_per_prompt=round(generation_seconds / max(len(prompts), 1), 3),
        nll_seconds=round(nll_seconds, 3),
        responses=results,
        passages=passage_results,
    )


def run_ability(agents: Sequence[str], *, limit: int | None = None, passages_limit: int | None = None,
                max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, batch_size: int = DEFAULT_BATCH_SIZE,
                resamples: int = DEFAULT_RESAMPLES, seed: int = 0, progress: Progress | None = None) -> AbilityReport:
    """The check for each agent SPEC, one after the other (one model in memory at a time), and
    each agent after the first against the first: paired bootstrap intervals of the difference
    in pass rate (over prompts) and in NLL (over passages), with the same resample indices."""
    if not agents:
        raise ValueError("give at least one agent")
    if len(set(agents)) < len(agents):
        raise ValueError("an agent is given twice")
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError("max_new_tokens and batch_size must be at least 1")
    prompts, passages = load_prompts(limit), load_passages(passages_limit)
    if not prompts and not passages:
        raise ValueError("no prompt and no passage to run")
    results = [_agent_ability(spec, prompts, passages, max_new_tokens=max_new_tokens, batch_size=batch_size,
                              resamples=resamples, seed=seed, progress=progress) for spec in agents]
    reference = results[0]
    differences = []
    for other in results[1:]:
        differences.append(AbilityDifference(
            agent=other.agent, reference=reference.agent,
            pass_rate=bootstrap_interval([float(b.passed) - float(a.passed)
                                          for a, b in zip(reference.responses, other.responses)], resamples, seed),
            nll=bootstrap_interval([b.nll - a.nll for a, b in zip(reference.passages, other.passages)],
                                   resamples, seed),
            changed_responses=sum(a.response != b.response for a, b in zip(reference.responses, other.responses)),
        ))  # fmt: skip
    settings = {
        "prompts": len(prompts), "passages": len(passages), "max_new_tokens": max_new_tokens,
        "batch_size": batch_size, "decoding": "greedy", "resamples": resamples, "seed": seed,
        "instructions_sha256": file_sha256(INSTRUCTIONS_FILE), "passages_sha256": file_sha256(PASSAGES_FILE),
    }
    return AbilityReport(agents=results, differences=differences, settings=settings,
                         created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
