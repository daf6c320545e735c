"""ToolWOZ timings: generating every toolwoz-synth split, loading splits, executing and scoring.

    python bench/bench_toolwoz.py          (prepares the data first if needed)

Prints the numbers and writes bench/results/toolwoz.md. Side by side in one run: the
indexed database query against a scan of the (already normalised) rows with the same
matching rule; the answers are checked to be equal.
"""

from __future__ import annotations

import platform
import random
import time
from pathlib import Path

from josh_core.envs.toolwoz.data import ensure_prepared, load_database, load_goal_model
from josh_core.envs.toolwoz.env import ToolWOZEnv
from josh_core.envs.toolwoz.build.generate import SPLIT_SIZES, generate_splits
from josh_core.envs.toolwoz.normalize import normalize_params
from josh_core.envs.toolwoz.scenarios import clear_cache, load_split

RESULTS = Path(__file__).parent / "results" / "toolwoz.md"


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start


def scan(db, domain, params):
    """The unindexed reference: test every (pre-normalised) row with the same rule."""
    return tuple(i for i in range(len(db.tables[domain])) if db.matches(domain, params, i))


def main() -> None:
    ensure_prepared()
    db, model = load_database(), load_goal_model()
    lines: list[str] = []

    def report(text: str = "") -> None:
        print(text)
        lines.append(text)

    report("# ToolWOZ benchmark")
    report()
    report(f"Machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}.")
    report()

    splits, seconds = timed(generate_splits, db, model)
    total = sum(len(v) for v in splits.values())
    report("## Generation")
    report()
    report("| what | scenarios | seconds | scenarios/s |")
    report("|---|---:|---:|---:|")
    report(f"| generate train+val+test ({', '.join(f'{k} {v}' for k, v in SPLIT_SIZES.items())}) | {total} | {seconds:.2f} | {total / seconds:.0f} |")
    clear_cache()
    loaded, load_seconds = timed(lambda: [s for split in ("train", "val", "test") for s in load_split(split)])
    report(f"| parse all cached splits (JSONL -> Scenario) | {len(loaded)} | {load_seconds:.2f} | {len(loaded) / load_seconds:.0f} |")
    report()

    scenarios = load_split("official-test")
    rng = random.Random(0)
    queries = []
    for scenario in scenarios:
        for call in scenario.goal_calls:
            if call.intent == "search":
                params = normalize_params(call.parameters)
                keys = [k for k in params if rng.random() < 0.7] or list(params)[:1]
                queries.append((call.domain, {k: params[k] for k in keys}))
    db._cache.clear()
    indexed, indexed_seconds = timed(lambda: [db.query(d, p) for d, p in queries])
    scanned, scan_seconds = timed(lambda: [scan(db, d, p) for d, p in queries])
    assert indexed == scanned, "indexed query disagrees with the scan"
    cached, cached_seconds = timed(lambda: [db.query(d, p) for d, p in queries])
    report("## Database queries (official-test goal searches, random parameter subsets)")
    report()
    report("| method | queries | µs/query | vs scan |")
    report("|---|---:|---:|---:|")
    for name, secs in (("row scan", scan_seconds), ("inverted index (first time)", indexed_seconds), ("inverted index (cached)", cached_seconds)):
        report(f"| {name} | {len(queries)} | {1e6 * secs / len(queries):.1f} | {scan_seconds / secs:.1f}x |")
    report()

    envs, env_seconds = timed(lambda: [ToolWOZEnv(s, db=db) for s in scenarios])
    paths = []
    for env, scenario in zip(envs, scenarios):
        # a plausible path: an under-specified search, a bad call, then the goal calls
        first = scenario.goal_calls[0]
        path = [
            env.execute_call(first.name, dict(list(first.parameters.items())[:1])),
            env.execute_call(first.name, {"colour": "red"}),
            *[env.execute_call(c.name, c.parameters) for c in scenario.goal_calls],
        ]
        paths.append(path)
    calls = sum(len(p) for p in paths)
    _, exec_seconds = timed(lambda: [[env.execute(r.call) for r in p] for env, p in zip(envs, paths)])
    rewards, score_seconds = timed(lambda: [env.score(p).reward for env, p in zip(envs, paths)])
    assert all(r == 1.0 for r in rewards)
    _, completed_seconds = timed(lambda: [env.completed_goals(p) for env, p in zip(envs, paths)])
    n = len(scenarios)
    report("## Executing and scoring (official-test, 450 scenarios)")
    report()
    report("| step | per | µs | per second |")
    report("|---|---|---:|---:|")
    rows = (
        ("build ToolWOZEnv", "scenario", env_seconds / n),
        ("execute one API call", "call", exec_seconds / calls),
        ("score() a whole path (with miss details)", f"path of {calls / n:.1f} calls", score_seconds / n),
        ("completed_goals() a whole path", f"path of {calls / n:.1f} calls", completed_seconds / n),
    )
    for name, per, secs in rows:
        report(f"| {name} | {per} | {1e6 * secs:.0f} | {1 / secs:.0f} |")
    report()
    report(
        "A model turn takes tens of milliseconds at the very least (seconds on CPU), so executing "
        "and scoring a node is a fraction of a percent of a rollout."
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
