"""The embedded player's decode loop: the reference loop vs the batched one, side by side in ONE run.

Both decoders run in the same process on the same scenarios and seeds, interleaved scenario by
scenario so that machine load falls on both alike:
  reference  `_decode_reusing` + the per-row `RowSampler` (the default before), one torch thread
  batched    `_decode_batched`: one copy of the rows' common prefix, vectorised sampling, grammar
             masks for the batch in one call (the default now)

Parts:
  josh  JOSH conversations (beam 8, branching 2, compact style, agenda user, 3 turns by default):
        seconds per conversation, decoded tokens, aggregate tok/s and its share of the measured
        roofline, turns with an API call, trees with a goal; ratios new / old.
  eval  a plain evaluation (josh off) of N scenarios: old = reference decoder, conversations one at
        a time (`josh eval`'s default concurrency 1); new = batched decoder with --concurrency C
        conversations at once (their requests share batches). Also new at concurrency 1.

  llamacpp  the transformers default (batched decoder, float32 weights de-quantised from the GGUF) vs
        the batched llama.cpp player (`llamacpp-batched:embedded`, the 4-bit GGUF itself): the same
        JOSH conversations interleaved scenario by scenario, then a plain evaluation of N scenarios
        with C conversations at once, both ways.

Usage:
  python bench/bench_speed.py josh [--limit 2] [--max-turns 3] [--threads 1]
  python bench/bench_speed.py eval [--limit 10] [--max-turns 5] [--concurrency 8]
  python bench/bench_speed.py llamacpp [--limit 2] [--max-turns 3] [--eval-limit 6] [--eval-turns 3] [--concurrency 6]
Writes bench/results/speed_josh.md, speed_eval.md or speed_llamacpp.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.profile_player import matmul_gflops  # noqa: E402
from josh_core.envs import get_env  # noqa: E402
from josh_core.policies.factory import build_agent  # noqa: E402
from josh_core.rollout import RolloutConfig, start_run  # noqa: E402
from josh_core.storage import reads  # noqa: E402
from josh_core.storage.db import Database  # noqa: E402

RESULTS = ROOT / "bench" / "results"
DECODERS = ("reference", "batched")
GFLOP_PER_TOKEN = 0.27  # 2 x 135M parameters (lm head included)


def machine(load_start: float) -> str:
    import torch

    return (f"{platform.machine()}, {os.cpu_count()} CPUs shared with other work, torch {torch.__version__}, "
            f"Python {platform.python_version()}; load average {load_start:.1f} at the start, "
            f"{os.getloadavg()[0]:.1f} at the end")


def _backend(config: RolloutConfig, decoder: str, threads: int):
    import torch

    agent = build_agent(config.agent, config.agent_options())
    backend = agent.backend
    backend.load()
    backend.decoder = decoder
    backend.kv_store.clear()  # neither decoder starts from the other's cache
    torch.set_num_threads(threads)
    return agent


def conversation_row(db_path: Path, conversation) -> dict:
    db = Database(db_path, read_only=True)
    nodes = reads.nodes_frame(db, conversation_id=conversation.conversation_id)
    agent_nodes = nodes[nodes["kind"] == "agent"]
    tree = reads.load_tree(db, conversation.conversation_id)
    turns = list(tree.agent_nodes())
    return {
        "seconds": conversation.seconds,
        "decoded": int(agent_nodes["completion_tokens"].fillna(0).sum()),
        "agent_turns": len(turns),
        "api_turns": sum(1 for n in turns if n.api_calls),
        "reward": conversation.reward,
        "with_goal": conversation.reward > 0,
    }


def run_josh(args) -> str:
    load_start = os.getloadavg()[0]
    threads = {"reference": 1, "batched": args.threads}
    roof = {t: matmul_gflops(t, 8, 576, 1536) for t in sorted(set(threads.values()))}
    scenarios = get_env("toolwoz").load_split("train", args.limit)
    config = RolloutConfig(josh=True, agent="embedded", style="compact", beam=args.beam, branching=args.branching,
                           max_turns=args.max_turns, seed=args.seed)
    rows: dict[str, list[dict]] = {d: [] for d in DECODERS}
    with tempfile.TemporaryDirectory() as tmp:
        for scenario in scenarios:
            for decoder in DECODERS:
                agent = _backend(config, decoder, threads[decoder])
                db_path = Path(tmp) / f"{decoder}-{scenario.id}.duckdb"
                result = start_run(db_path, [scenario], config, agent=agent)
                row = conversation_row(db_path, result.conversations[0])
                rows[decoder].append(row)
                print(f"{scenario.id} {decoder:9s} {row['seconds']:7.1f} s {row['decoded']:5d} tokens "
                      f"{row['decoded'] / row['seconds']:6.1f} tok/s reward {row['reward']:.2f}", flush=True)
    together = None
    if args.together and len(scenarios) > 1:
        # The batched decoder with every scenario's tree played at once: their leaves share batches.
        config_all = config.model_copy(update={"concurrency": len(scenarios)})
        agent = _backend(config_all, "batched", threads["batched"])
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            result = start_run(Path(tmp) / "together.duckdb", scenarios, config_all, agent=agent)
            wall = time.perf_counter() - start
            items = [conversation_row(Path(tmp) / "together.duckdb", c) for c in result.conversations]
        together = {"seconds": wall / len(items), "decoded": statistics.mean(r["decoded"] for r in items),
                    "tok_s": sum(r["decoded"] for r in items) / wall,
                    "api_share": sum(r["api_turns"] for r in items) / max(1, sum(r["agent_turns"] for r in items)),
                    "with_goal": sum(r["with_goal"] for r in items), "reward": statistics.mean(r["reward"] for r in items),
                    "n": len(items)}
        print(f"together {wall:.1f} s for {len(items)} conversations", flush=True)
    summary = {}
    for decoder, items in rows.items():
        total_s = sum(r["seconds"] for r in items)
        summary[decoder] = {
            "seconds": statistics.mean(r["seconds"] for r in items),
            "decoded": statistics.mean(r["decoded"] for r in items),
            "tok_s": sum(r["decoded"] for r in items) / total_s,
            "api_share": sum(r["api_turns"] for r in items) / max(1, sum(r["agent_turns"] for r in items)),
            "with_goal": sum(r["with_goal"] for r in items),
            "reward": statistics.mean(r["reward"] for r in items),
            "n": len(items),
        }
    if together is not None:
        summary[f"batched, {together['n']} conversations at once (s = wall / conversations)"] = together
        threads[f"batched, {together['n']} conversations at once (s = wall / conversations)"] = threads["batched"]
    old, new = summary["reference"], summary["batched"]
    lines = [
        "# Decode loop: reference vs batched, JOSH conversations (one run)",
        "",
        f"`python bench/bench_speed.py josh --limit {args.limit} --max-turns {args.max_turns} --threads {args.threads}` "
        f"on {machine(load_start)}.",
        f"JOSH, beam {args.beam}, branching {args.branching}, {args.max_turns} agent turns, compact style, agenda user, "
        f"the first {args.limit} train scenarios, seed {args.seed}, base embedded model (SmolLM2-135M, no adapter); "
        "decoders interleaved scenario by scenario, each starting from an empty KV store.",
        "",
        "| decoder | torch threads | s / conversation | decoded tokens / conversation | decoded tok/s | share of roofline | "
        "turns with an API call | trees with a goal | mean reward |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for decoder, s in summary.items():
        bound = roof[threads[decoder]] / GFLOP_PER_TOKEN
        lines.append(f"| {decoder} | {threads[decoder]} | {s['seconds']:.1f} | {s['decoded']:.0f} | {s['tok_s']:.1f} | "
                     f"{100 * s['tok_s'] / bound:.0f}% of {bound:.0f} | {100 * s['api_share']:.0f}% | "
                     f"{s['with_goal']} of {s['n']} | {s['reward']:.3f} |")
    lines += [
        "",
        f"**Speed-up of the batched loop, one conversation at a time: {old['seconds'] / new['seconds']:.2f}x per "
        f"conversation, {new['tok_s'] / old['tok_s']:.2f}x decoded tok/s.**"
        + (f" With the {together['n']} conversations played at once: {old['seconds'] / together['seconds']:.2f}x per "
           f"conversation, {together['tok_s'] / old['tok_s']:.2f}x decoded tok/s." if together else ""),
        "",
        "Roofline: the model needs 0.27 GFLOP per decoded token; a decode-step matmul ([8x576]x[576x1536], fp32) ran at "
        + ", ".join(f"{g:.1f} GFLOP/s with {t} thread{'s' if t > 1 else ''}" for t, g in roof.items())
        + " in this run, so batch-8 decoding is bounded by the tok/s shown (attention and the step's other work excluded).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "speed_josh.md").write_text(text)
    return text


def run_eval(args) -> str:
    load_start = os.getloadavg()[0]
    scenarios = get_env("toolwoz").load_split("test", args.limit)
    arms = [("reference", 1), ("batched", 1), ("batched", args.concurrency)]
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for decoder, concurrency in arms:
            config = RolloutConfig(josh=False, agent="embedded", style="compact", max_turns=args.max_turns,
                                   seed=args.seed, concurrency=concurrency)
            agent = _backend(config, decoder, 1 if decoder == "reference" else args.threads)
            start = time.perf_counter()
            result = start_run(Path(tmp) / f"{decoder}-{concurrency}.duckdb", scenarios, config, agent=agent)
            seconds = time.perf_counter() - start
            rows = [conversation_row(Path(tmp) / f"{decoder}-{concurrency}.duckdb", c) for c in result.conversations]
            decoded = sum(r["decoded"] for r in rows)
            item = {"decoder": decoder, "concurrency": concurrency, "seconds": seconds, "decoded": decoded,
                    "reward": statistics.mean(r["reward"] for r in rows),
                    "api_share": sum(r["api_turns"] for r in rows) / max(1, sum(r["agent_turns"] for r in rows))}
            out.append(item)
            print(item, flush=True)
    base = out[0]["seconds"]
    lines = [
        "# Plain evaluation: reference decoder one conversation at a time vs batched decoder (one run)",
        "",
        f"`python bench/bench_speed.py eval --limit {args.limit} --max-turns {args.max_turns} --concurrency "
        f"{args.concurrency}` on {machine(load_start)}.",
        f"The first {args.limit} ToolWOZ test scenarios, plain rollouts (no JOSH), compact style, {args.max_turns} agent "
        f"turns, agenda user, seed {args.seed}, base embedded model (no adapter).",
        "",
        "| decoder | conversations at once | wall s | decoded tokens | decoded tok/s | mean reward | turns with an API call | speed-up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for item in out:
        lines.append(f"| {item['decoder']} | {item['concurrency']} | {item['seconds']:.1f} | {item['decoded']} | "
                     f"{item['decoded'] / item['seconds']:.1f} | {item['reward']:.3f} | {100 * item['api_share']:.0f}% | "
                     f"{base / item['seconds']:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "speed_eval.md").write_text(text)
    return text


PLAYERS = ("transformers", "llamacpp-batched")


def _player(config: RolloutConfig, player: str):
    """The agent of `player`, its cache emptied so that no run starts from another's KV."""
    if player == "transformers":
        return _backend(config, "batched", 1)
    agent = build_agent("llamacpp-batched:embedded", config.agent_options())
    agent.backend.load()
    agent.backend.reset_cache()
    return agent


def _summary(items: list[dict], wall: float | None = None) -> dict:
    total_s = wall if wall is not None else sum(r["seconds"] for r in items)
    return {"seconds": total_s / len(items), "decoded": statistics.mean(r["decoded"] for r in items),
            "tok_s": sum(r["decoded"] for r in items) / total_s,
            "api_share": sum(r["api_turns"] for r in items) / max(1, sum(r["agent_turns"] for r in items)),
            "with_goal": sum(r["with_goal"] for r in items), "reward": statistics.mean(r["reward"] for r in items),
            "n": len(items)}


def run_llamacpp(args) -> str:
    load_start = os.getloadavg()[0]
    loads = [load_start]
    josh_scenarios = get_env("toolwoz").load_split("train", args.limit)
    josh_config = RolloutConfig(josh=True, agent="embedded", style="compact", beam=args.beam,
                                branching=args.branching, max_turns=args.max_turns, seed=args.seed)
    rows: dict[str, list[dict]] = {p: [] for p in PLAYERS}
    with tempfile.TemporaryDirectory() as tmp:
        for scenario in josh_scenarios:
            for player in PLAYERS:
                agent = _player(josh_config, player)
                db_path = Path(tmp) / f"josh-{player}-{scenario.id}.duckdb"
                result = start_run(db_path, [scenario], josh_config, agent=agent)
                row = conversation_row(db_path, result.conversations[0])
                rows[player].append(row)
                loads.append(os.getloadavg()[0])
                print(f"josh {scenario.id} {player:16s} {row['seconds']:7.1f} s {row['decoded']:5d} tokens "
                      f"{row['decoded'] / row['seconds']:6.1f} tok/s reward {row['reward']:.2f} "
                      f"load {loads[-1]:.1f}", flush=True)
        eval_scenarios = get_env("toolwoz").load_split("test", args.eval_limit)
        eval_config = RolloutConfig(josh=False, agent="embedded", style="compact", max_turns=args.eval_turns,
                                    seed=args.seed, concurrency=args.concurrency)
        evals: dict[str, dict] = {}
        for player in PLAYERS:
            agent = _player(eval_config, player)
            db_path = Path(tmp) / f"eval-{player}.duckdb"
            start = time.perf_counter()
            result = start_run(db_path, eval_scenarios, eval_config, agent=agent)
            wall = time.perf_counter() - start
            items = [conversation_row(db_path, c) for c in result.conversations]
            evals[player] = _summary(items, wall) | {"wall": wall}
            loads.append(os.getloadavg()[0])
            print(f"eval {player:16s} {wall:7.1f} s wall, {evals[player]['tok_s']:6.1f} tok/s, load {loads[-1]:.1f}",
                  flush=True)
    josh = {p: _summary(items) for p, items in rows.items()}
    old, new = josh["transformers"], josh["llamacpp-batched"]
    command = (f"`python bench/bench_speed.py llamacpp --limit {args.limit} --max-turns {args.max_turns} "
               f"--eval-limit {args.eval_limit} --eval-turns {args.eval_turns} --concurrency {args.concurrency}`")
    lines = [
        "# The embedded player: transformers (float32) vs batched llama.cpp (4-bit GGUF), one run",
        "",
        f"{command} on {machine(load_start)}; load average (1 min) sampled after each run: "
        + ", ".join(f"{x:.1f}" for x in loads) + ". Not niced.",
        "",
        "Players: `embedded` = transformers, float32 weights de-quantised from the Q4_1 GGUF, the batched decode "
        "loop, one torch thread; `llamacpp-batched:embedded` = llama.cpp on the Q4_1 GGUF itself, every row of a "
        "batch in one `llama_decode`, one thread. Same prompts, grammar masks and sampler; the logits differ "
        "(4-bit vs float32 arithmetic), so the samples and conversations differ: API-call share and goals are "
        "a sanity check, not a like-for-like quality comparison.",
        "",
        f"## JOSH conversations (beam {args.beam}, branching {args.branching}, {args.max_turns} agent turns, compact, "
        f"agenda user, first {args.limit} train scenarios, seed {args.seed}; players interleaved scenario by scenario)",
        "",
        "| player | s / conversation | decoded tokens / conversation | decoded tok/s | turns with an API call | "
        "trees with a goal | mean reward |",
        "|---|---|---|---|---|---|---|",
    ]
    for player, s in josh.items():
        lines.append(f"| {player} | {s['seconds']:.1f} | {s['decoded']:.0f} | {s['tok_s']:.1f} | "
                     f"{100 * s['api_share']:.0f}% | {s['with_goal']} of {s['n']} | {s['reward']:.3f} |")
    lines += ["", f"**llama.cpp / transformers: {old['seconds'] / new['seconds']:.2f}x per conversation, "
                  f"{new['tok_s'] / old['tok_s']:.2f}x decoded tok/s.**", "",
              f"## Plain evaluation (no JOSH; first {args.eval_limit} test scenarios, {args.eval_turns} agent turns, "
              f"{args.concurrency} conversations at once, one after the other)", "",
              "| player | wall s | decoded tokens | decoded tok/s | turns with an API call | conversations with a goal | "
              "mean reward |", "|---|---|---|---|---|---|---|"]
    for player, s in evals.items():
        lines.append(f"| {player} | {s['wall']:.1f} | {s['decoded'] * s['n']:.0f} | {s['tok_s']:.1f} | "
                     f"{100 * s['api_share']:.0f}% | {s['with_goal']} of {s['n']} | {s['reward']:.3f} |")
    e_old, e_new = evals["transformers"], evals["llamacpp-batched"]
    lines += ["", f"**llama.cpp / transformers: {e_old['wall'] / e_new['wall']:.2f}x wall, "
                  f"{e_new['tok_s'] / e_old['tok_s']:.2f}x decoded tok/s.**"]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "speed_llamacpp.md").write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["josh", "eval", "llamacpp"])
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--beam", type=int, default=8)
    parser.add_argument("--branching", type=int, default=2)
    parser.add_argument("--max-turns", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the batched decoder")
    parser.add_argument("--together", action=argparse.BooleanOptionalAction, default=True,
                        help="josh: also play all scenarios at once with the batched decoder")
    parser.add_argument("--concurrency", type=int, default=8, help="eval: conversations at once for the batched decoder")
    parser.add_argument("--eval-limit", type=int, default=6, help="llamacpp: scenarios of the plain evaluation")
    parser.add_argument("--eval-turns", type=int, default=3, help="llamacpp: agent turns of the plain evaluation")
    args = parser.parse_args()
    if args.part == "llamacpp":
        args.limit = args.limit or 2
        args.max_turns = args.max_turns or 3
        run_llamacpp(args)
    elif args.part == "josh":
        args.limit = args.limit or 2
        args.max_turns = args.max_turns or 3
        run_josh(args)
    else:
        args.limit = args.limit or 10
        args.max_turns = args.max_turns or 5
        run_eval(args)


if __name__ == "__main__":
    main()
