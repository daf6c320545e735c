"""ToolWOZ metrics (paper section 4.1) and their breakdowns.

- Average Reward: the mean over conversations of each conversation's reward, the share of its
  goal API calls it completed (completed goal calls / goal calls).
- 100% Success Rate: the share of conversations whose reward is 1.0 (every goal call made).
- Per domain and per goal API: how many goal calls of that domain / API the conversations had
  and how many were completed (the goal completion rate).
- Bootstrap std against the number of conversations (Figure 3c): see `bootstrap.py`.
- Pass^k (τ²-bench; environments whose metric family is "pass^k"): with n trials of a task of
  which c succeeded (the environment's own reward is 1: the database equals the gold one and
  the required outputs were said), pass^k = C(c, k) / C(n, k), the chance that k trials drawn
  from the n all succeed, averaged over tasks; k runs from 1 to the fewest trials any task
  has. Trials are every conversation of the same task among those selected: `josh metrics`
  without `--run` pools every run of the database (k runs with different seeds give Pass^k up
  to k), and `josh eval --trials K` plays each task K times in one run.

Every function takes the conversations `load_conversations` returns, so the CLI and the app
compute the same numbers from the same rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from pydantic import BaseModel, Field

from josh_core.analysis.bootstrap import DEFAULT_RESAMPLES, bootstrap_std
from josh_core.analysis.conversations import AnalysedConversation, NodeScope, load_conversations
from josh_core.storage.db import Database


class MetricsSummary(BaseModel):
    n: int  # finished conversations
    average_reward: float
    success_rate: float
    goal_calls: int  # goal calls over all conversations
    goals_completed: int
    goal_completion_rate: float  # goals_completed / goal_calls (pooled over conversations)


class MetricsReport(BaseModel):
    """Everything `josh metrics --json` prints."""

    n: int
    average_reward: float
    success_rate: float
    goal_calls: int
    goals_completed: int
    goal_completion_rate: float
    run_ids: list[str]
    not_done: dict[str, int] = Field(default_factory=dict)
    per_domain: list[dict] = Field(default_factory=list)
    per_api: list[dict] = Field(default_factory=list)
    bootstrap: list[dict] = Field(default_factory=list)
    envs: list[str] = Field(default_factory=list)  # environments of the conversations
    scorings: list[str] = Field(default_factory=list)  # reward semantics of their runs (mixed: not comparable)
    pass_k: list[dict] = Field(default_factory=list)  # {env, k, pass_k, tasks} (τ² environments)


def _rate(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def summarize(conversations: Sequence[AnalysedConversation]) -> MetricsSummary:
    n = len(conversations)
    goal_calls = sum(len(c.goals) for c in conversations)
    completed = sum(g.completed for c in conversations for g in c.goals)
    return MetricsSummary(
        n=n,
        average_reward=_rate(sum(c.reward for c in conversations), n),
        success_rate=_rate(sum(c.success for c in conversations), n),
        goal_calls=goal_calls,
        goals_completed=completed,
        goal_completion_rate=_rate(completed, goal_calls),
    )


def conversation_frame(conversations: Sequence[AnalysedConversation]) -> pd.DataFrame:
    """One row per conversation: run, scenario, domains, goals, completed, reward, success."""
    columns = ["run_id", "conversation_id", "scenario_id", "domains", "goal_calls",
               "goals_completed", "reward", "success"]  # fmt: skip
    rows = [
        {
            "run_id": c.run_id,
            "conversation_id": c.conversation_id,
            "scenario_id": c.scenario_id,
            "domains": ",".join(c.domains),
            "goal_calls": len(c.goals),
            "goals_completed": sum(g.completed for g in c.goals),
            "reward": c.reward,
            "success": c.success,
        }
        for c in conversations
    ]
    return pd.DataFrame(rows, columns=columns)


def per_domain(conversations: Sequence[AnalysedConversation]) -> pd.DataFrame:
    """Per domain: conversations that involve it, their Average Reward and Success Rate, and
    the domain's own goal calls and completion (`domain_success_rate`: share of those
    conversations that completed every goal call of that domain)."""
    columns = ["domain", "conversations", "average_reward", "success_rate", "goal_calls",
               "completed", "completion_rate", "domain_success_rate"]  # fmt: skip
    stats: dict[str, dict] = {}
    for c in conversations:
        for domain in dict.fromkeys(c.domains):
            s = stats.setdefault(domain, {"n": 0, "reward": 0.0, "success": 0, "goals": 0,
                                          "completed": 0, "domain_success": 0})  # fmt: skip
            own = [g for g in c.goals if g.domain == domain]
            s["n"] += 1
            s["reward"] += c.reward
            s["success"] += c.success
            s["goals"] += len(own)
            s["completed"] += sum(g.completed for g in own)
            s["domain_success"] += all(g.completed for g in own)
    rows = [
        {
            "domain": domain,
            "conversations": s["n"],
            "average_reward": _rate(s["reward"], s["n"]),
            "success_rate": _rate(s["success"], s["n"]),
            "goal_calls": s["goals"],
            "completed": s["completed"],
            "completion_rate": _rate(s["completed"], s["goals"]),
            "domain_success_rate": _rate(s["domain_success"], s["n"]),
        }
        for domain, s in sorted(stats.items())
    ]
    return pd.DataFrame(rows, columns=columns)


def per_api(conversations: Sequence[AnalysedConversation]) -> pd.DataFrame:
    """Per goal API: goal calls, completed, completion rate, and how the missed ones were
    missed (never attempted, missing parameter, wrong value, wrong entity)."""
    reasons = ["never_attempted", "missing_parameter", "wrong_value", "wrong_entity"]
    columns = ["api", "domain", "goal_calls", "completed", "completion_rate", "missed", *reasons]
    stats: dict[str, dict] = {}
    for c in conversations:
        for g in c.goals:
            s = stats.setdefault(g.api, {"domain": g.domain, "goals": 0, "completed": 0,
                                         **{r: 0 for r in reasons}})  # fmt: skip
            s["goals"] += 1
            s["completed"] += g.completed
            if not g.completed and g.reason is not None:
                s[g.reason] += 1
    rows = [
        {
            "api": api,
            "domain": s["domain"],
            "goal_calls": s["goals"],
            "completed": s["completed"],
            "completion_rate": _rate(s["completed"], s["goals"]),
            "missed": s["goals"] - s["completed"],
            **{r: s[r] for r in reasons},
        }
        for api, s in sorted(stats.items())
    ]
    return pd.DataFrame(rows, columns=columns)


def bootstrap(
    conversations: Sequence[AnalysedConversation],
    sizes: Sequence[int] | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> pd.DataFrame:
    """Figure 3c: bootstrap std of Average Reward and 100% Success Rate per sample size."""
    return bootstrap_std(
        {
            "average_reward": [c.reward for c in conversations],
            "success_rate": [1.0 if c.success else 0.0 for c in conversations],
        },
        sizes=sizes,
        resamples=resamples,
        seed=seed,
    )


def pass_hat_k(conversations: Sequence[AnalysedConversation]) -> pd.DataFrame:
    """Pass^k per environment whose metric family is "pass^k" (module docstring)."""
    from math import comb

    from josh_core.envs import get_env

    columns = ["env", "k", "pass_k", "tasks", "trials"]
    trials: dict[str, dict[str, list[bool]]] = {}
    for c in conversations:
        try:
            family = get_env(c.env).metrics
        except ValueError:  # an environment this install does not have
            continue
        if family == "pass^k" and c.env_success is not None:
            trials.setdefault(c.env, {}).setdefault(c.scenario_id, []).append(bool(c.env_success))
    rows = []
    for env, tasks in sorted(trials.items()):
        most = min(len(outcomes) for outcomes in tasks.values())
        for k in range(1, most + 1):
            values = [comb(sum(o), k) / comb(len(o), k) for o in tasks.values()]
            rows.append({"env": env, "k": k, "pass_k": sum(values) / len(values), "tasks": len(tasks),
                         "trials": sum(len(o) for o in tasks.values())})
    return pd.DataFrame(rows, columns=columns)


def _plain(value: object) -> object:
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and value != value:  # NaN: pandas' stand-in for None
        return None
    return value


def records(frame: pd.DataFrame) -> list[dict]:
    """DataFrame rows as plain JSON-ready dicts (numpy scalars unwrapped, NaN as None)."""
    return [{key: _plain(value) for key, value in row.items()} for row in frame.to_dict(orient="records")]


def metrics_report(
    db: Database | str,
    run_id: str | None = None,
    *,
    bootstrap_sizes: Sequence[int] | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    nodes: NodeScope = "ideal",
    scoring: str | None = None,
) -> MetricsReport:
    """Metrics of the stored conversations of a database (or one run); with `scoring`, only
    of the runs played with that reward semantics."""
    loaded = load_conversations(db, run_id, nodes=nodes, scoring=scoring)
    return report_from(loaded.conversations, loaded.run_ids, loaded.not_done,
                       bootstrap_sizes=bootstrap_sizes, resamples=resamples, seed=seed)  # fmt: skip


def report_from(
    conversations: Sequence[AnalysedConversation],
    run_ids: list[str],
    not_done: dict[str, int] | None = None,
    *,
    bootstrap_sizes: Sequence[int] | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> MetricsReport:
    summary = summarize(conversations)
    return MetricsReport(
        **summary.model_dump(),
        run_ids=run_ids,
        not_done=not_done or {},
        per_domain=records(per_domain(conversations)),
        per_api=records(per_api(conversations)),
        bootstrap=records(bootstrap(conversations, bootstrap_sizes, resamples, seed)),
        envs=sorted({c.env for c in conversations}),
        scorings=sorted({c.scoring for c in conversations if c.scoring}),
        pass_k=records(pass_hat_k(conversations)),
    )
