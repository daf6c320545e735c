"""Leaves advanced together: 8 leaves in one batched call vs 8 calls one after another.

The embedded model (SmolLM2-135M, transformers backend). Each leaf is the ReACT agent's own
request on a real ToolWOZ scenario (system prompt, demonstration, the agenda user's opener,
plus a different short agent/user exchange per leaf), with the agent's defaults for a local
model: appendix B sampling (temperature 1.5, top_k 50, top_p 0.75) with its own seed per leaf,
and the ReACT action grammar (structured decoding), as in a rollout.

  batched     the 8 requests sent at once (asyncio.gather): the micro-batcher runs ONE generate
  sequential  the same 8 requests awaited one after another: 8 generates

Both modes run warm: the model is loaded and the shared-prefix KV cache holds the system
prompt before either is timed, so the ratio is about batching alone. Seeds are per row, so
both modes must produce the same tokens; the script checks it. It also reports the model
load times (first conversion, when it has to happen here, and the cached load).

Usage: python bench/bench_batching.py [--leaves 8] [--max-tokens N] [--unconstrained] [--repeats 1]
Writes bench/results/batching.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def leaf_requests(agent, env, leaves: int, max_tokens: int | None = None):
    """The agent's own first-generation requests for `leaves` different leaves of one tree."""
    from josh_core.llm.base import ChatRequest
    from josh_core.policies.agenda_user import AgendaUser
    from josh_core.policies.react_agent import REACT_STOP
    from josh_core.types import Message

    opener = AgendaUser().respond(env.scenario, [], [], env).text
    prefix = agent.prompt_messages(env)
    constraint = agent.constraint(env.tools()) if agent.constrained else None
    agent_lines = ["What price range would you like?", "Which area of town?", "Any particular food?",
                   "How many people?", "I can help with that.", "Let me look that up.", "Sure!", "Anything else?"]
    requests = []
    for i in range(leaves):
        history = [Message(role="user", content=opener),
                   Message(role="assistant", content=f"PLAN ask <COMMAND_END>\nSPEAK {agent_lines[i % len(agent_lines)]} <COMMAND_END>"),
                   Message(role="user", content="I told you what I want, please search.")]
        sampling = agent.sampling(1000 + i, REACT_STOP)
        if max_tokens:
            sampling = sampling.model_copy(update={"max_tokens": max_tokens})
        requests.append(ChatRequest(messages=prefix + history, sampling=sampling, constraint=constraint))
    return requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leaves", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=None,
                        help="token budget per leaf (default: the agent's own, 256 when constrained)")
    parser.add_argument("--unconstrained", action="store_true",
                        help="free text instead of the ReACT action grammar (then rows end at different lengths)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--scenario", default=None, help="scenario id (default: the first train scenario)")
    args = parser.parse_args()

    from josh_core.llm.embedded import embedded_model_dir
    from josh_core.llm.hf_backend import HFBackend
    from josh_core.paths import models_dir
    from josh_core.policies.react_agent import ReactAgent
    from josh_core.envs import get_env

    start = time.perf_counter()
    converted_before = any(p.name.startswith("smollm2-135m-instruct-hf") for p in models_dir().glob("*"))
    model_dir = embedded_model_dir()
    convert_s = time.perf_counter() - start
    backend = HFBackend(model_dir, name="embedded")
    backend.load()
    load_s = backend.load_seconds

    toolwoz = get_env("toolwoz")
    if args.scenario:
        scenario = next(s for split in toolwoz.splits for s in toolwoz.load_split(split) if s.id == args.scenario)
    else:
        scenario = toolwoz.load_split("train", 1)[0]
    env = toolwoz.make_env(scenario)
    agent = ReactAgent(backend, constrained=not args.unconstrained)
    requests = leaf_requests(agent, env, args.leaves, args.max_tokens)
    prompt_tokens = len(backend.tokenizer(backend.render_prompt(requests[0]))["input_ids"])

    async def batched():
        return await asyncio.gather(*[backend.chat(r) for r in requests])

    async def sequential():
        return [await backend.chat(r) for r in requests]

    asyncio.run(batched())  # warm-up: fills the shared-prefix cache, first-call overheads
    rows = []
    same = None
    for _ in range(args.repeats):
        for mode, fn in (("batched", batched), ("sequential", sequential)):
            t0 = time.perf_counter()
            out = asyncio.run(fn())
            seconds = time.perf_counter() - t0
            tokens = sum(r.completion_tokens or 0 for r in out)
            rows.append((mode, seconds, tokens))
            texts = [r.choices[0].text for r in out]
            tokens_per_leaf = [r.completion_tokens or 0 for r in out]
            if mode == "batched":
                batched_texts = texts
            else:
                same = sum(a == b for a, b in zip(batched_texts, texts))
    med = {m: statistics.median(s for mode, s, _ in rows if mode == m) for m in ("batched", "sequential")}
    tok = {m: statistics.median(t for mode, _, t in rows if mode == m) for m in ("batched", "sequential")}
    ratio = med["sequential"] / med["batched"]

    print(f"model: embedded (SmolLM2-135M-Instruct), {os.cpu_count()} CPU cores, torch threads "
          f"{__import__('torch').get_num_threads()}")
    print(f"load: {'first conversion ' + format(convert_s, '.1f') + ' s, ' if not converted_before else ''}"
          f"cached load {load_s:.1f} s")
    budget = requests[0].sampling.max_tokens
    kind = "constrained ReACT actions" if agent.constrained else "free text"
    print(f"prompt: {prompt_tokens} tokens per leaf; {args.leaves} leaves, {kind}, budget {budget} tokens")
    for m in ("batched", "sequential"):
        print(f"{m:>10}: {med[m]:7.2f} s  {tok[m] / med[m]:6.1f} tokens/s")
    print(f"ratio sequential/batched: {ratio:.2f}x  (goal >= 3x); identical samples in both modes: {same}/{args.leaves}")

    out = ROOT / "bench" / "results" / "batching.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Batching: leaves advanced together (bench/bench_batching.py)",
        "",
        f"Embedded model (SmolLM2-135M-Instruct, float32, transformers backend) on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores shared with other work; torch threads {__import__('torch').get_num_threads()}. "
        f"{args.leaves} ReACT agent requests ({prompt_tokens}-token prompts sharing the system prompt and "
        f"demonstration), {kind} (budget {budget} tokens), temperature 1.5 / top_k 50 / top_p 0.75, "
        f"one seed per leaf; {statistics.mean(tokens_per_leaf):.0f} tokens generated per leaf on average. "
        f"Median of {args.repeats} runs, both modes warm (shared-prefix cache filled).",
        "",
        "| mode | seconds | tokens/s |",
        "| --- | ---: | ---: |",
        f"| one batched call ({args.leaves} rows) | {med['batched']:.2f} | {tok['batched'] / med['batched']:.1f} |",
        f"| {args.leaves} sequential calls | {med['sequential']:.2f} | {tok['sequential'] / med['sequential']:.1f} |",
        "",
        f"**Ratio sequential / batched: {ratio:.2f}x** (goal >= 3x). "
        f"Identical samples in both modes: {same}/{args.leaves} (per-row seeds make a leaf's sample independent of its batch).",
        "",
        f"Model load: cached {load_s:.1f} s" + (f"; first conversion from the GGUF {convert_s:.1f} s" if not converted_before else
                                              " (the GGUF conversion was already cached; it takes about a minute on two cores)") + ".",
        "",
    ]
    out.write_text("\n".join(lines))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
