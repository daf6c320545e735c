"""Base agent vs trained agent on the same scenarios: per-conversation metrics, bootstrap 95%
intervals of each mean and of the paired difference.

Two evaluation runs are paired by scenario id (the self-training loop plays both on the same
scenarios with the same seeds). Per conversation:

- reward: the conversation's Average Reward (share of goal calls reached)
- success: 1 if every goal call was reached (100% Success Rate)
- goal_completion: goals completed / goal calls of the conversation
- api_turn_share: share of the agent's turns that made at least one API call
- format_error_rate: share of the agent's generations whose action could not be read
- bad_api_rate: 1 if the conversation has bad API use (errors.py's definition)

Intervals are percentile bootstraps over conversations (pairs for the difference), seeded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from josh_core.analysis.conversations import AnalysedConversation, load_conversations
from josh_core.analysis.errors import conversation_errors
from josh_core.search.labels import ideal_path
from josh_core.storage import reads
from josh_core.storage.db import Database

METRICS = ("reward", "success", "goal_completion", "api_turn_share", "format_error_rate", "bad_api_rate")


class Interval(BaseModel):
    mean: float
    low: float
    high: float


class MetricComparison(BaseModel):
    metric: str
    base: Interval
    trained: Interval
    difference: Interval  # trained - base, paired by scenario


class Comparison(BaseModel):
    base_run: str
    trained_run: str
    n: int  # scenarios both runs finished
    metrics: list[MetricComparison]

    def metric(self, name: str) -> MetricComparison:
        return next(m for m in self.metrics if m.metric == name)


def conversation_metrics(db: Database, run_id: str) -> dict[str, dict[str, float]]:
    """scenario id -> {metric: value} for the finished conversations of a run."""
    loaded = load_conversations(db, run_id)
    conversations: list[AnalysedConversation] = loaded.conversations
    if not conversations:
        return {}
    errors = conversation_errors(conversations).set_index("conversation_id")
    trees = reads.load_trees(db, [c.conversation_id for c in conversations])
    out: dict[str, dict[str, float]] = {}
    for c in conversations:
        turns = [n for n in ideal_path(trees[c.conversation_id]) if n.kind == "agent"]
        goal_calls = len(c.goals)
        out[c.scenario_id] = {
            "reward": float(c.reward),
            "success": float(c.success),
            "goal_completion": sum(g.completed for g in c.goals) / goal_calls if goal_calls else 0.0,
            "api_turn_share": sum(1 for n in turns if n.api_calls) / len(turns) if turns else 0.0,
            "format_error_rate": c.format_error_generations / c.generations if c.generations else 0.0,
            "bad_api_rate": float(bool(errors.loc[c.conversation_id, "bad_api_use"])),
        }
    return out


def bootstrap_interval(values: Sequence[float], resamples: int = 2000, seed: int = 0,
                       level: float = 0.95) -> Interval:
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return Interval(mean=0.0, low=0.0, high=0.0)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    tail = (1 - level) / 2
    return Interval(mean=float(data.mean()), low=float(np.quantile(means, tail)),
                    high=float(np.quantile(means, 1 - tail)))


def compare_runs(db: Database, base_run: str, trained_run: str, *, resamples: int = 2000,
                 seed: int = 0) -> Comparison:
    return compare_pooled([(db, base_run, trained_run)], resamples=resamples, seed=seed)


def compare_pooled(pairs: Sequence[tuple[Database, str, str]], *, resamples: int = 2000,
                   seed: int = 0) -> Comparison:
    """One comparison over several (database, base run, trained run) pairs, e.g. a first
    evaluation and a replication on other scenarios: each pair's shared scenarios are pooled
    (a scenario of one pair is never paired with another pair's)."""
    if not pairs:
        raise ValueError("nothing to compare: give at least one (database, base run, trained run)")
    keys = [(str(Path(db.path).resolve()), base, trained) for db, base, trained in pairs]
    if len(set(keys)) < len(keys):
        raise ValueError("the same pair of runs is given twice: its scenarios would count double")
    a_rows: list[dict[str, float]] = []
    b_rows: list[dict[str, float]] = []
    for db, base_run, trained_run in pairs:
        for run in (base_run, trained_run):
            reads.get_run(db, run)  # KeyError naming the run when it is not in this database
        base = conversation_metrics(db, base_run)
        trained = conversation_metrics(db, trained_run)
        for scenario in sorted(set(base) & set(trained)):
            a_rows.append(base[scenario])
            b_rows.append(trained[scenario])
    metrics = []
    for name in METRICS:
        a = [row[name] for row in a_rows]
        b = [row[name] for row in b_rows]
        metrics.append(MetricComparison(
            metric=name,
            base=bootstrap_interval(a, resamples, seed),
            trained=bootstrap_interval(b, resamples, seed),
            # The same resample indices pair each scenario's two values.
            difference=bootstrap_interval([y - x for x, y in zip(a, b)], resamples, seed),
        ))
    return Comparison(base_run=",".join(p[1] for p in pairs), trained_run=",".join(p[2] for p in pairs),
                      n=len(a_rows), metrics=metrics)
