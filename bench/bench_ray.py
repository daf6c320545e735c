"""Distributed rollouts on Ray against one process, measured side by side in one run.

The policies are script files that wait a fixed latency per turn (`"latency"`), as a model
server would: a conversation's time is mostly waiting, as with a remote model, so the bench
measures what spreading conversations over workers buys and what the driver (the single
database writer) and Ray cost. Every mode plays the same JOSH run (same scenarios, seed and
scripts) into its own database; the bench checks that all of them stored the same trees.

Rows: the single-process run (one conversation at a time), Ray with 1, 2 and 4 workers (each
playing one conversation at a time), and, for context, one process playing 4 conversations at
once (`--concurrency 4`), which suits latency-bound policies as well; Ray is for workers that
each hold a GPU or an endpoint. Ray starts once (`ray.init(num_cpus=4)`, timed apart); each Ray
row's wall time includes starting its workers. Throughput is conversations per second from the
first conversation's start to the last one's end; its ratio is against the single-process run.

Usage: python bench/bench_ray.py [--scenarios 16] [--latency 0.1] [--max-turns 6]
Writes bench/results/ray.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from engine_fixtures import speak  # noqa: E402
from josh_core.rollout import RolloutConfig, RolloutObserver, start_run  # noqa: E402
from rollout_fixtures import run_contents  # noqa: E402


class Clock(RolloutObserver):
    """When the first conversation started and the last one finished."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.last: float | None = None
        self.done = 0

    def conversation_started(self, conversation_id: str, scenario_id: str, max_steps: int) -> None:
        self.first = self.first or time.perf_counter()

    def conversation_finished(self, result) -> None:
        self.last = time.perf_counter()
        self.done += result.status == "done"


def write_scripts(folder: Path, turns: int, latency: float) -> tuple[str, str]:
    """A chatty agent (two alternatives per turn, never a goal: every tree runs to its depth)
    and a user, both waiting `latency` seconds per turn."""
    agent = folder / "agent.json"
    agent.write_text(json.dumps({"latency": latency, "turns": [
        [[speak(f"turn {t} option A")], [speak(f"turn {t} option B")]] for t in range(turns)]}))
    user = folder / "user.json"
    user.write_text(json.dumps({"latency": latency, "turns": [f"request {i}" for i in range(turns + 2)]}))
    return f"script:{agent}", f"script:{user}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per policy turn")
    parser.add_argument("--max-turns", type=int, default=6)
    parser.add_argument("--beam", type=int, default=8)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ray.md")
    args = parser.parse_args()

    import ray

    from josh_core.distributed.ray_rollout import RayOptions
    from josh_core.envs import get_env

    scenarios = get_env("toolwoz").load_split("train", args.scenarios)
    workers = [int(w) for w in args.workers.split(",")]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        agent, user = write_scripts(folder, args.max_turns, args.latency)

        def run(name: str, concurrency: int = 1, ray_workers: int | None = None) -> None:
            config = RolloutConfig(josh=True, agent=agent, user=user, max_turns=args.max_turns, beam=args.beam,
                                   branching=2, seed=1, concurrency=concurrency)  # fmt: skip
            db_path = folder / f"{len(rows)}.duckdb"
            clock = Clock()
            start = time.perf_counter()
            result = start_run(db_path, scenarios, config, observer=clock,
                               ray=RayOptions(workers=ray_workers) if ray_workers else None)  # fmt: skip
            wall = time.perf_counter() - start
            assert clock.done == len(scenarios), [c.error for c in result.conversations if c.error]
            playing = clock.last - clock.first
            rows.append(dict(name=name, workers=ray_workers, wall=wall, playing=playing,
                             throughput=len(scenarios) / playing, contents=run_contents(db_path, result.run_id),
                             nodes=sum(c.nodes for c in result.conversations)))  # fmt: skip
            print(f"{name:<34} wall {wall:6.2f} s  playing {playing:6.2f} s  "
                  f"{rows[-1]['throughput']:.2f} conversations/s", flush=True)

        run("single process")
        start = time.perf_counter()
        ray.init(num_cpus=max(workers), include_dashboard=False, log_to_driver=False)
        ray_start = time.perf_counter() - start
        print(f"ray.init (a local instance, {max(workers)} CPUs): {ray_start:.1f} s", flush=True)
        try:
            for n in workers:
                run(f"Ray, {n} worker{'s' if n > 1 else ''}", ray_workers=n)
        finally:
            ray.shutdown()
        run(f"single process, --concurrency {max(workers)}", concurrency=max(workers))

    reference = rows[0]["contents"]
    same = all(row["contents"] == reference for row in rows)
    assert same, "a mode stored different trees"
    base = rows[0]["throughput"]
    load = os.getloadavg()[0]
    lines = [
        "# Distributed rollouts on Ray vs one process",
        "",
        f"`python bench/bench_ray.py --scenarios {args.scenarios} --latency {args.latency} --max-turns "
        f"{args.max_turns}` on {platform.machine()}, Python {platform.python_version()}, Ray {ray.__version__}; "
        f"a shared {os.cpu_count()}-core machine (load average {load:.1f} at the end of the run), so compare the "
        "rows of one run, not absolute times.",
        "",
        f"JOSH, {args.scenarios} ToolWOZ train scenarios, beam {args.beam}, branching 2, {args.max_turns} agent "
        f"turns (every tree runs to its depth: {rows[0]['nodes']} nodes in all), script policies that wait "
        f"{args.latency * 1000:.0f} ms per turn. Every mode stored the same trees: {'yes' if same else 'NO'}. "
        f"Ray started once, apart: {ray_start:.1f} s (`ray.init(num_cpus={max(workers)})`).",
        "",
        "| mode | wall time (Ray: with starting the workers) | wall-time ratio | playing (first start to "
        "last end) | conversations/s | throughput vs single process |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = row["throughput"] / base
        shown = f"**{ratio:.2f}x**" if row["workers"] else f"{ratio:.2f}x"
        lines.append(f"| {row['name']} | {row['wall']:.2f} s | {rows[0]['wall'] / row['wall']:.2f}x | "
                     f"{row['playing']:.2f} s | {row['throughput']:.2f} | {shown} |")  # fmt: skip
    lines += [
        "",
        "Starting the workers (a process each, importing the workbench and building its policies) is what "
        "separates the wall-time ratio from the throughput ratio on these two shared cores; it is paid once "
        "per run, so it matters less the longer the run.",
        "",
        "Each Ray worker is a process holding its own agent and user and plays one conversation at a time "
        "here; the driver writes every step the workers send (one transaction per step, as a local run does). "
        "With policies that only wait, one process playing several conversations at once does as well; Ray "
        "is for what one process cannot do: several GPUs or machines, each worker holding a model or its own "
        "endpoint (docs/distributed.md).",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
