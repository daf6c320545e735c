"""First turns of agents, side by side: does the agent call the right API, and does its first
call complete the scenario's first goal?

For N single-domain scenarios of a split whose first goal call is a search (round robin over
the domains, as in shared/notes/embedded-model-first-turn.md), the agenda user's opener, and K
sampled first agent turns per scenario and agent SPEC (all played together, so they batch):
the share of turns whose first API call names the goal's API, and the share whose calls
complete the first goal. Cheap (one turn per sample), so it is how warm starts and trained
adapters are compared before full evaluations.

Usage: python bench/bench_first_turn.py --agents embedded,embedded@ADAPTER [--styles auto,react]
       [--split val] [--scenarios 30] [--samples 8]
Writes bench/results/first_turn.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from itertools import zip_longest
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from josh_core.envs import get_env  # noqa: E402
from josh_core.policies.agenda_user import AgendaUser  # noqa: E402
from josh_core.policies.base import TurnContext  # noqa: E402
from josh_core.policies.factory import AgentOptions, build_agent  # noqa: E402
from josh_core.search.tree import derive_seed  # noqa: E402
from josh_core.types import Message  # noqa: E402


def pick_scenarios(split: str, n: int):
    by_domain: dict[str, list] = {}
    for s in get_env("toolwoz").load_split(split, None):
        if len(s.domains) == 1 and s.goal_calls and s.goal_calls[0].name.startswith("search_"):
            by_domain.setdefault(s.domains[0], []).append(s)
    mixed = [s for group in zip_longest(*by_domain.values()) for s in group if s is not None]
    return mixed[:n]


async def sample(agent, user, scenario, samples: int, seed: int) -> list[dict]:
    env = get_env("toolwoz").make_env(scenario)
    opener = await user.reply(TurnContext(history=[], env=env, scenario=scenario, seed=seed))
    goal = env.goal_ids()[0]
    history = [Message(role="user", content=opener.text)]

    async def one(k: int) -> dict:
        ctx = TurnContext(history=history, agent_memory=history, env=env, scenario=scenario,
                          seed=derive_seed(seed, f"{scenario.id}.{k}"))
        turn = await agent.act(ctx)
        first = next((r for r in turn.api_calls if r.call is not None), None)
        return {
            "api": first is not None,
            "name_right": first is not None and first.call.name == scenario.goal_calls[0].name,
            "goal": goal in env.completed_goals(turn.api_calls),
        }

    return list(await asyncio.gather(*(one(k) for k in range(samples))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", default="embedded")
    parser.add_argument("--styles", default="auto", help="agent styles to try with every agent (auto, compact, react)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--scenarios", type=int, default=30)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "first_turn.md")
    args = parser.parse_args()
    get_env("toolwoz").ensure_prepared()
    scenarios = pick_scenarios(args.split, args.scenarios)
    user = AgendaUser()
    rows = []
    combos = [(a, st) for a in args.agents.split(",") if a for st in args.styles.split(",") if st]
    for spec, style in combos:
        agent = build_agent(spec, AgentOptions(style=style))
        spec = spec if style == "auto" else f"{spec} ({style})"
        start = time.perf_counter()

        async def run_all():
            return await asyncio.gather(*(sample(agent, user, s, args.samples, args.seed) for s in scenarios))

        results = [r for per in asyncio.run(run_all()) for r in per]
        seconds = time.perf_counter() - start
        n = len(results)
        row = {"agent": spec, "n": n, "api": sum(r["api"] for r in results),
               "name_right": sum(r["name_right"] for r in results), "goal": sum(r["goal"] for r in results),
               "seconds": seconds}
        rows.append(row)
        print(f"{spec}: API call {row['api']}/{n}, right API {row['name_right']}/{n}, first goal completed "
              f"{row['goal']}/{n} ({seconds:.0f} s)", flush=True)
    lines = [
        "# First agent turns: right API and first goal completed",
        "",
        f"`python bench/bench_first_turn.py --agents {args.agents} --styles {args.styles} --split {args.split} "
        f"--scenarios {args.scenarios} "
        f"--samples {args.samples}` on {platform.machine()}, {os.cpu_count()} shared CPUs (load average "
        f"{os.getloadavg()[0]:.1f} at the end). Single-domain {args.split} scenarios whose first goal is a search, "
        "round robin over the domains; the agenda user's opener; sampled first turns (the agent's own style and "
        "sampling defaults, grounded action grammar).",
        "",
        "| agent | samples | turns with an API call | first call names the goal's API | first goal completed | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| `{r['agent']}` | {r['n']} | {r['api']} ({100 * r['api'] / r['n']:.0f}%) | "
                     f"{r['name_right']} ({100 * r['name_right'] / r['n']:.0f}%) | {r['goal']} ({100 * r['goal'] / r['n']:.1f}%) | "
                     f"{r['seconds']:.0f} |")
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
