"""The local backends on the same JOSH conversations: vLLM's CPU build beside llama.cpp and
transformers, side by side in one run, so users know which local path to choose.

Every player is the embedded SmolLM2-135M in the compact agent style with the grounded action
grammar, on the same train scenarios, agenda user, same seeds; only the backend differs:
  vllm         `vllm:embedded`: vLLM's offline engine (CPU build, eager, bf16, prefix caching,
               llguidance for the grammar), the engine core and worker in processes of their own
  transformers `embedded`: transformers in this process with per-sequence KV reuse (the default)
  llamacpp     `llamacpp:embedded`: llama.cpp on the Q4_1 GGUF itself (llguidance logits processor)
Each player's model is loaded before its first conversation and the load is reported apart
(start); conversation times exclude it. Every backend decodes on one thread here (vLLM and
llama.cpp by their own defaults on two cores, transformers by JOSH_TORCH_THREADS=1), so the
comparison is per core. Players are interleaved scenario by scenario so machine load falls on all
of them alike. The samples differ per backend (different numerics and samplers), so the trees
do too: compare decoded tokens per second above all.

Needs the venv of scripts/setup-vllm.sh with llama-cpp-python (the llamacpp extra) beside it.

Usage: python bench/bench_vllm.py [--limit 2] [--beam 4] [--max-turns 3] [--players vllm,transformers,llamacpp]
Writes bench/results/vllm.md.
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

os.environ.setdefault("JOSH_TORCH_THREADS", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from josh_core.policies.factory import build_agent  # noqa: E402
from josh_core.rollout import RolloutConfig, start_run  # noqa: E402
from josh_core.storage import reads  # noqa: E402
from josh_core.storage.db import Database  # noqa: E402
from josh_core.envs import get_env  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PLAYERS = {"vllm": "vllm:embedded", "transformers": "embedded", "llamacpp": "llamacpp:embedded"}
LABELS = {
    "vllm": "vLLM CPU build, offline engine (`vllm:embedded`)",
    "transformers": "transformers + KV reuse (`embedded`, the default)",
    "llamacpp": "llama.cpp, Q4_1 GGUF (`llamacpp:embedded`)",
}


def machine() -> str:
    return (f"{platform.machine()}, {os.cpu_count()} CPUs shared with other work (load average "
            f"{os.getloadavg()[0]:.1f} at the end), Python {platform.python_version()}")


def load_player(player: str, args) -> tuple[object, RolloutConfig, float]:
    """The player's agent with its model loaded, its rollout config and the load time."""
    config = RolloutConfig(josh=True, agent=PLAYERS[player], style="compact", beam=args.beam,
                           branching=args.branching, max_turns=args.max_turns, seed=args.seed)
    start = time.perf_counter()
    agent = build_agent(PLAYERS[player], config.agent_options())
    backend = agent.backend
    if hasattr(backend, "load"):
        backend.load()
    return agent, config, time.perf_counter() - start


def play(agent, config: RolloutConfig, scenario, db_path: Path) -> dict:
    result = start_run(db_path, [scenario], config, agent=agent)
    conversation = result.conversations[0]
    db = Database(db_path, read_only=True)
    tree = reads.load_tree(db, conversation.conversation_id)
    generations = [g for node in tree.agent_nodes() for g in node.generations]
    nodes = reads.nodes_frame(db, conversation_id=conversation.conversation_id)
    agent_nodes = nodes[nodes["kind"] == "agent"]
    return {
        "seconds": conversation.seconds,
        "decoded": int(agent_nodes["completion_tokens"].fillna(0).sum()),
        "generations": len(generations),
        "parsed": sum(g.action != "format_error" for g in generations),
        "reward": conversation.reward,
    }


def run(args) -> str:
    scenarios = get_env("toolwoz").load_split("train", args.limit)
    players = [p for p in args.players.split(",") if p]
    loaded = {}
    for player in players:
        loaded[player] = load_player(player, args)
        print(f"{player}: model loaded in {loaded[player][2]:.1f} s", flush=True)
    rows: dict[str, list[dict]] = {p: [] for p in players}
    with tempfile.TemporaryDirectory() as tmp:
        for scenario in scenarios:
            for player in players:
                agent, config, _ = loaded[player]
                row = play(agent, config, scenario, Path(tmp) / f"{player}.duckdb")
                rows[player].append(row)
                print(f"{scenario.id} {player:12s} {row['seconds']:7.1f} s  {row['decoded']:5d} tokens  "
                      f"{row['decoded'] / row['seconds']:5.1f} tok/s  parsed {row['parsed']}/{row['generations']}",
                      flush=True)
    for player in players:
        close = getattr(loaded[player][0].backend, "close", None)
        if close:
            close()
    summary = {}
    for player, items in rows.items():
        seconds = sum(r["seconds"] for r in items)
        summary[player] = {
            "start": loaded[player][2],
            "seconds": statistics.mean(r["seconds"] for r in items),
            "decoded": statistics.mean(r["decoded"] for r in items),
            "tok_s": sum(r["decoded"] for r in items) / seconds,
            "parsed": sum(r["parsed"] for r in items), "generations": sum(r["generations"] for r in items),
        }
    reference = summary.get("vllm")
    lines = [
        "# Local backends on the same JOSH conversations: vLLM CPU vs transformers vs llama.cpp",
        "",
        f"`python bench/bench_vllm.py --limit {args.limit} --beam {args.beam} --max-turns {args.max_turns}` "
        f"on {machine()}.",
        f"JOSH, beam {args.beam}, branching {args.branching}, {args.max_turns} agent turns, the embedded model in "
        f"the compact style with the grounded action grammar, agenda user, the first {args.limit} train scenarios, "
        f"seed {args.seed}; players interleaved scenario by scenario; one decoding thread each.",
        "",
        "| backend | model load (s) | s / conversation | decoded tokens / conversation | decoded tok/s | "
        "tok/s vs vLLM | generations that parse |",
        "|---|---|---|---|---|---|---|",
    ]
    for player, s in summary.items():
        ratio = f"{s['tok_s'] / reference['tok_s']:.2f}x" if reference else ""
        lines.append(f"| {LABELS[player]} | {s['start']:.1f} | {s['seconds']:.1f} | {s['decoded']:.0f} | "
                     f"{s['tok_s']:.1f} | {ratio} | {s['parsed']} of {s['generations']} |")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "vllm.md").write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=2)
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--branching", type=int, default=2)
    parser.add_argument("--max-turns", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--players", default="vllm,transformers,llamacpp")
    args = parser.parse_args()
    run(args)


if __name__ == "__main__":  # vLLM's engine core starts by spawn and imports this module again
    main()
