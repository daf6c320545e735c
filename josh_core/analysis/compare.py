"""Base agent vs trained agent on the same scenarios: per-conversation metrics, bootstrap 95%
intervals of each mean and of the paired difference.

Two evaluation runs are paired by scenario id (the self-training loop plays both on the same
scenarios with the same seeds). Per scenario:

- reward: the conversation's Average Reward (ToolWOZ: share of goal calls reached, so the
  goal-call completion of a conversation is this same number and has no row of its own)
- success: 1 if every goal call was reached (100% Success Rate)
- api_turn_share: share of the agent's turns that made at least one API call
- format_error_rate: share of the agent's generations whose action could not be read
- bad_api_rate: 1 if the conversation has bad API use (errors.py's definition)

Trials (τ² `--trials`): a scenario played several times counts once, with the mean of its
finished trials; both runs must have played the same number of trials.

What is refused (ValueError), because the difference would not be the agent's: runs played
with other settings (environment, scoring, plain vs JOSH, user simulator, turn cap, seed,
trials) unless `force` (the differences are then listed in `warnings`), and runs that share no
finished scenario. Scenarios only one run finished are listed, never silently dropped.

Pooling (`compare_pooled`, `josh compare --pool`): several (database, base run, trained run)
pairs, e.g. one per pipeline seed, or a first evaluation and a replication on other scenarios.
The **scenario is the unit**: a scenario that appears in several pairs (the same test scenario
under three seeds) gets, per metric and per side, the mean over the pairs that finished it, and
the N per-scenario means are resampled; so three seeds of one scenario never count as three
independent pairs. When the pairs' scenario sets are disjoint (exp3's replication), every
scenario appears once and this is the plain pooling of all pairs. Pairs must share every
compared setting but the seed (seeds are what pairs usually differ in).

Intervals are percentile bootstraps over scenarios (pairs for the difference), seeded.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from josh_core.analysis.conversations import AnalysedConversation, load_conversations
from josh_core.analysis.errors import conversation_errors
from josh_core.search.labels import ideal_path
from josh_core.storage import reads
from josh_core.storage.db import Database

METRICS = ("reward", "success", "api_turn_share", "format_error_rate", "bad_api_rate")

# Settings that change what a conversation is worth, whatever the agent: two runs compared
# must share them. (name in the run's stored configuration, as people call it)
COMPARED_SETTINGS = (
    ("env", "environment"), ("scoring", "scoring"), ("kind", "kind (plain or JOSH)"),
    ("user", "user simulator"), ("max_turns", "turn cap"), ("seed", "seed"), ("trials", "trials per scenario"),
)  # fmt: skip


class Interval(BaseModel):
    mean: float
    low: float
    high: float


class MetricComparison(BaseModel):
    metric: str
    base: Interval
    trained: Interval
    difference: Interval  # trained - base, paired by scenario


class PairSummary(BaseModel):
    """One pooled pair on its own: its scenarios and its means (no interval), so the spread
    across pairs (pipeline seeds) is shown beside the pooled intervals."""

    db: str  # the database file's name
    base_run: str
    trained_run: str
    seed: int | None = None  # the runs' seed (the pipeline seed when pairs are seeds)
    n: int  # scenarios both runs of this pair finished
    means: dict[str, dict[str, float]]  # metric -> {"base", "trained", "difference"}


class Comparison(BaseModel):
    base_run: str
    trained_run: str
    n: int  # scenarios both runs finished (pooled: distinct scenarios, the bootstrap's unit)
    metrics: list[MetricComparison]
    trials: int = 1  # trials per scenario (each scenario's value is the mean of its trials)
    only_base: list[str] = Field(default_factory=list)  # scenarios only the base run finished
    only_trained: list[str] = Field(default_factory=list)  # scenarios only the trained run finished
    warnings: list[str] = Field(default_factory=list)  # settings that differ (compared with force)
    pairs: int = 1  # pairs of runs pooled
    # pairs a scenario appears in -> how many scenarios (pooled over three seeds: {3: N})
    pairs_per_scenario: dict[int, int] = Field(default_factory=dict)
    per_pair: list[PairSummary] = Field(default_factory=list)  # filled when several pairs are pooled

    def metric(self, name: str) -> MetricComparison:
        return next(m for m in self.metrics if m.metric == name)


def run_settings(db: Database, run_id: str) -> dict[str, Any]:
    """The settings of COMPARED_SETTINGS a run was played with (KeyError: no such run)."""
    from josh_core.envs import DEFAULT_ENV, get_env

    run = reads.get_run(db, run_id)
    config = run.config or {}
    env = config.get("env") or DEFAULT_ENV
    scoring = config.get("scoring")
    if scoring is None:  # runs stored before scoring was recorded used the default
        try:
            scoring = get_env(env).check_scoring(None)
        except Exception:  # noqa: BLE001 - an environment this code does not know
            scoring = None
    conversations = reads.list_conversations(db, run_id=run_id)
    trials = 1 + max((int((c.scenario or {}).get("trial") or 0) for c in conversations), default=0)
    return {"env": env, "scoring": scoring, "kind": run.kind, "user": config.get("user", run.user_spec),
            "max_turns": config.get("max_turns"), "seed": config.get("seed", run.seed), "trials": trials}


def setting_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """`turn cap 1 vs 20`-like phrases for every compared setting that differs."""
    return [f"{label} {a.get(key)} vs {b.get(key)}" for key, label in COMPARED_SETTINGS if a.get(key) != b.get(key)]


def conversation_metrics(db: Database, run_id: str) -> dict[str, dict[str, float]]:
    """scenario id -> {metric: value} for the finished conversations of a run; a scenario
    played several times (trials) gets the mean of its finished trials."""
    loaded = load_conversations(db, run_id)
    conversations: list[AnalysedConversation] = loaded.conversations
    if not conversations:
        return {}
    errors = conversation_errors(conversations).set_index("conversation_id")
    trees = reads.load_trees(db, [c.conversation_id for c in conversations])
    per_scenario: dict[str, list[dict[str, float]]] = defaultdict(list)
    for c in conversations:
        turns = [n for n in ideal_path(trees[c.conversation_id]) if n.kind == "agent"]
        per_scenario[c.scenario_id].append({
            "reward": float(c.reward),
            "success": float(c.success),
            "api_turn_share": sum(1 for n in turns if n.api_calls) / len(turns) if turns else 0.0,
            "format_error_rate": c.format_error_generations / c.generations if c.generations else 0.0,
            "bad_api_rate": float(bool(errors.loc[c.conversation_id, "bad_api_use"])),
        })  # fmt: skip
    return {scenario: {name: float(np.mean([t[name] for t in trials])) for name in METRICS}
            for scenario, trials in per_scenario.items()}  # fmt: skip


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
                 seed: int = 0, force: bool = False) -> Comparison:
    return compare_pooled([(db, base_run, trained_run)], resamples=resamples, seed=seed, force=force)


def compare_pooled(pairs: Sequence[tuple[Database, str, str]], *, resamples: int = 2000,
                   seed: int = 0, force: bool = False) -> Comparison:
    """One comparison over several (database, base run, trained run) pairs: pipeline seeds on
    the same scenarios, or a first evaluation and a replication on other scenarios. A scenario
    of one pair is paired with itself only (base and trained of that pair); a scenario found in
    several pairs counts once, with its per-pair values averaged (the module's docstring).

    ValueError when a pair's runs differ in a compared setting, or the pairs differ from each
    other in one other than the seed (unless `force`: then listed in `warnings`), or when no
    scenario is shared."""
    if not pairs:
        raise ValueError("nothing to compare: give at least one (database, base run, trained run)")
    keys = [(str(Path(db.path).resolve()), base, trained) for db, base, trained in pairs]
    if len(set(keys)) < len(keys):
        raise ValueError("the same pair of runs is given twice: its scenarios would count double")
    per_scenario: dict[str, list[tuple[dict[str, float], dict[str, float]]]] = defaultdict(list)
    only_base: list[str] = []
    only_trained: list[str] = []
    warnings: list[str] = []
    trials: set[int] = set()
    summaries: list[PairSummary] = []
    several = len(pairs) > 1
    first_settings: dict[str, Any] | None = None
    for db, base_run, trained_run in pairs:
        settings = [run_settings(db, run) for run in (base_run, trained_run)]  # KeyError: no such run
        differences = setting_differences(*settings)
        if differences:
            text = f"runs {base_run} and {trained_run} were played with different settings: {', '.join(differences)}"
            if not force:
                raise ValueError(f"{text}; the difference would not be the agent's alone (--force compares "
                                 "them anyway)")
            warnings.append(text)
        if first_settings is None:
            first_settings = settings[0]
        else:  # pairs may differ in their seed (that is what pipeline seeds are), in nothing else
            across = setting_differences(first_settings, {**settings[0], "seed": first_settings["seed"]})
            if across:
                text = (f"pooled pair {base_run} / {trained_run} was played with other settings than the first "
                        f"pair: {', '.join(across)}")
                if not force:
                    raise ValueError(f"{text}; pooling it would mix what a scenario is worth (--force pools "
                                     "them anyway)")
                warnings.append(text)
        trials.update(s["trials"] for s in settings)
        base = conversation_metrics(db, base_run)
        trained = conversation_metrics(db, trained_run)
        prefix = f"{Path(db.path).name}:" if several else ""
        only_base += [prefix + s for s in sorted(set(base) - set(trained))]
        only_trained += [prefix + s for s in sorted(set(trained) - set(base))]
        shared = sorted(set(base) & set(trained))
        for scenario in shared:
            per_scenario[scenario].append((base[scenario], trained[scenario]))
        if several and shared:
            means = {}
            for name in METRICS:
                a = float(np.mean([base[s][name] for s in shared]))
                b = float(np.mean([trained[s][name] for s in shared]))
                means[name] = {"base": a, "trained": b, "difference": b - a}
            summaries.append(PairSummary(db=Path(db.path).name, base_run=base_run, trained_run=trained_run,
                                         seed=settings[0]["seed"], n=len(shared), means=means))
    names = " and ".join(f"{base} and {trained}" for _, base, trained in pairs)
    if not per_scenario:
        raise ValueError(f"{names} share no finished scenario: nothing to pair "
                         f"({len(only_base)} finished by the base run only, {len(only_trained)} by the trained run only)")
    # One row per scenario: the mean over the pairs that finished it (the bootstrap's unit).
    scenarios = sorted(per_scenario)
    a_rows = [{name: float(np.mean([a[name] for a, _ in per_scenario[s]])) for name in METRICS} for s in scenarios]
    b_rows = [{name: float(np.mean([b[name] for _, b in per_scenario[s]])) for name in METRICS} for s in scenarios]
    counts: dict[int, int] = defaultdict(int)
    for s in scenarios:
        counts[len(per_scenario[s])] += 1
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
                      n=len(scenarios), metrics=metrics, trials=max(trials), only_base=only_base,
                      only_trained=only_trained, warnings=warnings, pairs=len(pairs),
                      pairs_per_scenario=dict(sorted(counts.items())), per_pair=summaries)
