"""Where the embedded player's time goes: one JOSH conversation profiled, plus a matmul roofline.

Usage:
  python bench/profile_player.py [--scenario 0] [--max-turns 3] [--beam 8] [--threads 1,2]
         [--out bench/results/player_profile.md] [--decoder hf|fast]

Measures, in the same process:
  - the machine's fp32 matmul GFLOP/s at 1 and 2 threads (a decode-step-sized product, batch 8,
    and a large square one), against the model's FLOPs per decoded token;
  - one JOSH conversation (beam 8, branching 2, compact style, agenda user) under cProfile, with
    the time grouped into: model forward (matmuls, attention), sampling, grammar masks, stop-string
    decoding, tokenisation / chat template, KV bookkeeping, user simulator, storage, rest.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import platform
import pstats
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def matmul_gflops(threads: int, m: int, k: int, n: int, seconds: float = 1.5) -> float:
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(m, k), torch.randn(k, n)
        for _ in range(3):
            a @ b
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            a @ b
            count += 1
        elapsed = time.perf_counter() - start
        return 2 * m * k * n * count / elapsed / 1e9
    finally:
        torch.set_num_threads(old)


def model_flops_per_token(model) -> tuple[int, float]:
    params = sum(p.numel() for p in model.parameters())
    # Every weight is read once per token (tied embeddings: the lm head is the embedding matrix).
    embed = model.get_input_embeddings().weight.numel()
    matmul_params = params - embed + embed  # body matmuls + lm head (the lookup itself is free)
    return params, 2.0 * matmul_params / 1e9


GROUPS = [
    # (label, substrings of "file:function" that belong to it), first match wins
    ("grammar masks (llguidance)", ["structured.py:", "fill_next_token_bitmask", "consume_token", "unpackbits",
                                    "copyto", "LLExecutor", "LLMatcher"]),
    ("stop-string check (tokenizer.decode per token)", ["hf_backend.py:_advance"]),
    ("sampling (top-k/softmax/multinomial)", ["hf_backend.py:_draw", "batch_sampling.py:step", "built-in method topk",
                                               "built-in method multinomial"]),
    ("model forward: linear (matmuls)", ["torch._C._nn.linear", "built-in method matmul", "hf_backend.py:_head_logits"]),
    ("model forward: attention", ["scaled_dot_product_attention", "shared_prefix_attention", "torch.bmm", "torch.matmul",
                                  "built-in method softmax"]),
    ("KV cache copies (torch.cat / index_select)", ["built-in method torch.cat", "index_select", "batch_select_indices",
                                                    "method 'clone'"]),
    ("tokenisation / chat template", ["apply_chat_template", "render_prompt", "tokenization_utils", "__call__ of tokenizer"]),
    ("storage (duckdb)", ["duckdb", "josh_core/storage"]),
]


def profile_conversation(args) -> tuple[pstats.Stats, dict]:
    from josh_core.envs import get_env
    from josh_core.policies.factory import build_agent
    from josh_core.rollout import RolloutConfig, start_run

    scenario = get_env("toolwoz").load_split("train", args.scenario + 1)[args.scenario]
    config = RolloutConfig(josh=True, agent="embedded", style="compact", beam=args.beam, branching=2,
                           max_turns=args.max_turns, seed=args.seed)
    agent = build_agent("embedded", config.agent_options())
    backend = agent.backend
    if args.decoder:
        backend.decoder = args.decoder
    backend.load()
    model = backend.model
    # Generation runs in the micro-batcher's worker thread: profile it there, one call at a time.
    prof = cProfile.Profile()
    generate = backend._batcher.run_batch
    gen_seconds = [0.0]

    def profiled(requests):
        t0 = time.perf_counter()
        prof.enable()
        try:
            return generate(requests)
        finally:
            prof.disable()
            gen_seconds[0] += time.perf_counter() - t0

    backend._batcher.run_batch = profiled
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = start_run(Path(tmp) / "p.duckdb", [scenario], config, agent=agent)
        wall = time.perf_counter() - start
        prof.dump_stats(str(Path(tempfile.gettempdir()) / f"player_profile_{args.decoder or 'default'}.prof"))
        from josh_core.storage import reads
        from josh_core.storage.db import Database
        db = Database(Path(tmp) / "p.duckdb", read_only=True)
        nodes = reads.nodes_frame(db, conversation_id=result.conversations[0].conversation_id)
        decoded = int(nodes[nodes["kind"] == "agent"]["completion_tokens"].fillna(0).sum())
    info = {"wall": wall, "decoded": decoded, "generate": gen_seconds[0], "batches": len(backend.batch_sizes),
            "rows_per_batch": sum(backend.batch_sizes) / max(1, len(backend.batch_sizes)),
            "prefill_computed": backend.kv_store.computed_tokens, "prefill_reused": backend.kv_store.reused_tokens,
            "model": model}
    return pstats.Stats(prof), info


def grouped(stats: pstats.Stats, wall: float) -> list[tuple[str, float]]:
    """Self time (tottime) of every function, summed into groups."""
    sums: dict[str, float] = {label: 0.0 for label, _ in GROUPS}
    sums["other Python / torch ops"] = 0.0
    for (file, line, func), (cc, nc, tt, ct, callers) in stats.stats.items():
        key = f"{file}:{func}"
        for label, needles in GROUPS:
            if any(n in key for n in needles):
                sums[label] += tt
                break
        else:
            sums["other Python / torch ops"] += tt
    return sorted(sums.items(), key=lambda kv: -kv[1])


def cumulative(stats: pstats.Stats, needle: str) -> float:
    return max((v[3] for (f, l, fn), v in stats.stats.items() if needle in f"{f}:{fn}"), default=0.0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenario", type=int, default=0)
    parser.add_argument("--max-turns", type=int, default=3)
    parser.add_argument("--beam", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--decoder", default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--regroup", default=None, help="print the groups of a saved .prof file and exit")
    args = parser.parse_args()
    import torch

    if args.regroup:
        stats = pstats.Stats(args.regroup)
        total = sum(v[2] for v in stats.stats.values())
        for label, sec in grouped(stats, total):
            print(f"| {label} | {sec:.1f} | {100 * sec / total:.0f}% |")
        return
    load_start = os.getloadavg()[0]
    roof = {}
    for t in [int(x) for x in args.threads.split(",")]:
        roof[t] = (matmul_gflops(t, 8, 576, 1536), matmul_gflops(t, 8, 576, 49152), matmul_gflops(t, 512, 512, 512))
    stats, info = profile_conversation(args)
    params, gflop_tok = model_flops_per_token(info["model"])
    wall = info["wall"]
    groups = grouped(stats, wall)
    forward_cum = cumulative(stats, "modeling_llama.py:forward")
    s = io.StringIO()
    stats.stream = s
    stats.sort_stats("tottime").print_stats(25)
    lines = [
        "# Where the embedded player's time goes",
        "",
        f"`python bench/profile_player.py{' --decoder ' + args.decoder if args.decoder else ''}` on {platform.machine()}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}, torch threads {torch.get_num_threads()}; "
        f"load average {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end.",
        "",
        "## Roofline",
        "",
        f"Model: {params / 1e6:.0f}M parameters, {gflop_tok:.2f} GFLOP per decoded token (2 x parameters, the tied "
        "lm head included; attention over the context adds about 2 x 2 x 30 layers x 576 x context FLOPs).",
        "",
        "| threads | matmul [8x576]x[576x1536] GFLOP/s | lm head [8x576]x[576x49152] GFLOP/s | [512]^3 GFLOP/s | decode bound at batch 8 (tok/s) |",
        "|---|---|---|---|---|",
    ]
    for t, (small, head, big) in roof.items():
        lines.append(f"| {t} | {small:.1f} | {head:.1f} | {big:.1f} | {min(small, head) / gflop_tok:.0f} |")
    lines += [
        "",
        "## One JOSH conversation (compact style, beam %d, branching 2, %d turns, scenario %d, seed %d)" % (
            args.beam, args.max_turns, args.scenario, args.seed),
        "",
        f"Wall {wall:.1f} s under cProfile; {info['decoded']} decoded tokens ({info['decoded'] / wall:.1f} tok/s "
        f"aggregate); {info['batches']} batched calls, {info['rows_per_batch']:.1f} requests each; prefill "
        f"computed {info['prefill_computed']} tokens, reused {info['prefill_reused']} from the KV store.",
        f"Batched generation (the model's worker thread): {info['generate']:.1f} s = {100 * info['generate'] / wall:.0f}% "
        f"of the wall; the rest (user simulator, environment, storage, event loop) {wall - info['generate']:.1f} s. "
        f"Model forward (cumulative): {forward_cum:.1f} s = {100 * forward_cum / wall:.0f}% of the wall.",
        "",
        "| self time of (generation thread) | seconds | share of wall |",
        "|---|---|---|",
    ]
    for label, sec in groups:
        lines.append(f"| {label} | {sec:.1f} | {100 * sec / wall:.0f}% |")
    lines += ["", "Top functions by self time:", "", "```", s.getvalue().strip()[-6000:], "```", ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
