"""The embedded player: the new default against the players it replaces, side by side in one run.

Two parts:

  speed  JOSH conversations (beam 8, branching 2, 3 agent turns by default) on the same train
         scenarios, agenda user, per player: wall time per conversation, decoded tokens, aggregate
         decoded tokens per second, share of agent turns with an API call, goals hit. Players are
         interleaved scenario by scenario so that machine load falls on all of them alike.
           compact      the new embedded default: compact style, transformers with KV reuse
           react-hf     before: ReACT, transformers with the shared-prefix cache (no KV reuse)
           react-llama  before: ReACT, llama.cpp (`llamacpp:embedded`, needs the llamacpp extra)
         Writes bench/results/player_speed.md.
  goals  JOSH conversations (beam 8, 5 turns by default) of the new default on N train scenarios:
         how many trees reach at least one goal. Writes bench/results/player_goals.md.

Usage:
  python bench/bench_player.py speed [--limit 5] [--max-turns 3] [--players compact,react-hf,react-llama]
  python bench/bench_player.py goals [--limit 30] [--max-turns 5]
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

from josh_core.envs import get_env  # noqa: E402
from josh_core.policies.factory import build_agent  # noqa: E402
from josh_core.rollout import RolloutConfig, start_run  # noqa: E402
from josh_core.storage import reads  # noqa: E402
from josh_core.storage.db import Database  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PLAYERS = {
    # name: (agent SPEC, style, KV reuse in the transformers backend)
    "compact": ("embedded", "compact", True),
    "react-hf": ("embedded", "react", False),
    "react-llama": ("llamacpp:embedded", "react", None),
}
LABELS = {
    "compact": "new default: compact style, transformers + KV reuse",
    "react-hf": "before: ReACT, transformers (`embedded`)",
    "react-llama": "before: ReACT, llama.cpp (`llamacpp:embedded`)",
}


def machine() -> str:
    return (f"{platform.machine()}, {os.cpu_count()} CPUs shared with other work (load average "
            f"{os.getloadavg()[0]:.1f} at the end), Python {platform.python_version()}")


def play(player: str, scenario, db_path: Path, args) -> dict:
    spec, style, kv_reuse = PLAYERS[player]
    config = RolloutConfig(josh=True, agent=spec, style=style, beam=args.beam, branching=args.branching,
                           max_turns=args.max_turns, seed=args.seed)
    agent = build_agent(spec, config.agent_options())
    backend = getattr(agent, "backend", None)
    if kv_reuse is not None and backend is not None:
        backend.kv_reuse = kv_reuse
        backend.kv_store.clear()  # no player starts from another's cache
    result = start_run(db_path, [scenario], config, agent=agent)
    conversation = result.conversations[0]
    db = Database(db_path, read_only=True)
    nodes = reads.nodes_frame(db, conversation_id=conversation.conversation_id)
    agent_nodes = nodes[nodes["kind"] == "agent"]
    tree = reads.load_tree(db, conversation.conversation_id)
    turns = [n for n in tree.agent_nodes()]
    return {
        "seconds": conversation.seconds,
        "decoded": int(agent_nodes["completion_tokens"].fillna(0).sum()),
        "agent_turns": len(turns),
        "api_turns": sum(1 for n in turns if n.api_calls),
        "reward": conversation.reward,
        "with_goal": conversation.reward > 0,
    }


def run_speed(args) -> str:
    scenarios = get_env("toolwoz").load_split("train", args.limit)
    players = [p for p in args.players.split(",") if p]
    rows: dict[str, list[dict]] = {p: [] for p in players}
    with tempfile.TemporaryDirectory() as tmp:
        for scenario in scenarios:
            for player in players:
                row = play(player, scenario, Path(tmp) / f"{player}.duckdb", args)
                rows[player].append(row)
                print(f"{scenario.id} {player:12s} {row['seconds']:7.1f} s  {row['decoded']:5d} tokens  "
                      f"{row['decoded'] / row['seconds']:5.1f} tok/s  reward {row['reward']:.2f}", flush=True)
    summary = {}
    for player, items in rows.items():
        seconds = statistics.mean(r["seconds"] for r in items)
        decoded = statistics.mean(r["decoded"] for r in items)
        summary[player] = {
            "seconds": seconds, "decoded": decoded, "tok_s": sum(r["decoded"] for r in items) / sum(r["seconds"] for r in items),
            "api_share": sum(r["api_turns"] for r in items) / max(1, sum(r["agent_turns"] for r in items)),
            "with_goal": sum(r["with_goal"] for r in items), "n": len(items),
        }
    fastest_before = min((summary[p]["seconds"] for p in summary if p != "compact"), default=None)
    lines = [
        "# The embedded player: new default vs the players it replaces",
        "",
        f"`python bench/bench_player.py speed --limit {args.limit} --max-turns {args.max_turns}` on {machine()}.",
        f"JOSH, beam {args.beam}, branching {args.branching}, {args.max_turns} agent turns, agenda user, the first "
        f"{args.limit} train scenarios, seed {args.seed}; players interleaved scenario by scenario.",
        "",
        "| player | s / conversation | decoded tokens / conversation | decoded tok/s | turns with an API call | trees with a goal | speed-up vs fastest before |",
        "|---|---|---|---|---|---|---|",
    ]
    for player, s in summary.items():
        ratio = f"**{fastest_before / s['seconds']:.1f}x**" if player == "compact" and fastest_before else ""
        lines.append(f"| {LABELS[player]} | {s['seconds']:.1f} | {s['decoded']:.0f} | {s['tok_s']:.1f} | "
                     f"{100 * s['api_share']:.0f}% | {s['with_goal']} of {s['n']} | {ratio} |")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "player_speed.md").write_text(text)
    return text


def run_goals(args) -> str:
    scenarios = get_env("toolwoz").load_split("train", args.limit)
    config = RolloutConfig(josh=True, agent="embedded", beam=args.beam, branching=args.branching,
                           max_turns=args.max_turns, seed=args.seed, concurrency=args.concurrency)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = start_run(Path(tmp) / "goals.duckdb", scenarios, config)
    seconds = time.perf_counter() - start
    done = [c for c in result.conversations if c.status == "done"]
    with_goal = sum(1 for c in done if c.reward > 0)
    lines = [
        "# Goal hits of the new embedded default (JOSH)",
        "",
        f"`python bench/bench_player.py goals --limit {args.limit} --max-turns {args.max_turns}` on {machine()}.",
        f"JOSH, beam {args.beam}, branching {args.branching}, {args.max_turns} agent turns, agenda user, the first "
        f"{args.limit} train scenarios (single- and multi-domain), seed {args.seed}, {args.concurrency} conversations at once.",
        "",
        "| player | trees | trees with at least one goal | average reward | successes | wall time |",
        "|---|---|---|---|---|---|",
        f"| {LABELS['compact']} | {len(done)} | {with_goal} | {statistics.mean(c.reward for c in done) if done else 0:.3f} | "
        f"{sum(c.success for c in done)} | {seconds / 60:.1f} min |",
        "",
        "Before (bench/results/structured_josh.md): ReACT on llama.cpp, 0 of 5 trees reached a goal at 3 turns.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "player_goals.md").write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["speed", "goals"])
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--beam", type=int, default=8)
    parser.add_argument("--branching", type=int, default=2)
    parser.add_argument("--max-turns", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=4, help="goals: conversations at once")
    parser.add_argument("--players", default="compact,react-hf,react-llama")
    args = parser.parse_args()
    if args.part == "speed":
        args.limit = args.limit or 5
        args.max_turns = args.max_turns or 3
        run_speed(args)
    else:
        args.limit = args.limit or 30
        args.max_turns = args.max_turns or 5
        run_goals(args)


if __name__ == "__main__":
    main()
