"""Evaluate an agent: plain rollouts over a split, stored as a run, then its metrics and errors.

An evaluation is an ordinary plain run (one agent turn per user turn, no branching) played by
`josh_core.rollout`, so it is stored, resumable and browsable like any other run; the run
record keeps the agent SPEC, the model behind it, the user simulator, the seed and the split,
which is what the leaderboard compares. The numbers come from `josh_core.analysis`, the same
functions `josh metrics`, `josh errors` and the app use.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from josh_core.analysis.bootstrap import DEFAULT_RESAMPLES
from josh_core.analysis.conversations import load_conversations
from josh_core.analysis.errors import ErrorReport, error_report_from
from josh_core.analysis.metrics import MetricsReport, report_from
from josh_core.envs import get_env
from josh_core.envs.base import Scenario
from josh_core.policies.base import Agent, UserSimulator
from josh_core.rollout import (
    EnvFactory,
    RolloutConfig,
    RolloutObserver,
    RunResult,
    resume_run,
    start_run,
)
from josh_core.storage.db import Database

if TYPE_CHECKING:
    from josh_core.distributed.ray_rollout import RayOptions

class Evaluation(BaseModel):
    run_id: str
    db_path: str
    played: int  # conversations played by this call
    failed: int  # of those, how many ended with an exception
    skipped: int  # finished before this call (resume)
    seconds: float  # wall-clock time of the rollouts
    stopped: str | None = None  # why the run stopped early (dead endpoint): resume to finish it
    config: dict
    metrics: MetricsReport
    errors: ErrorReport


def load_scenarios(
    split: str | None = None,
    limit: int | None = None,
    scenario_file: str | Path | None = None,
    env: str | None = None,
) -> list[Scenario]:
    """The scenarios to evaluate on: a scenario file (one or a list), else a split (default
    the environment's evaluation split). `env` names a registered environment (default ToolWOZ)."""
    environment = get_env(env)
    if scenario_file is not None:
        scenarios = environment.load_scenario_file(scenario_file)
        return scenarios[: max(limit, 0)] if limit is not None else scenarios
    return environment.load_split(split or environment.eval_split, limit)


def _finish(
    db_path: str | Path,
    result: RunResult,
    seconds: float,
    *,
    bootstrap_sizes: Sequence[int] | None,
    resamples: int,
    bootstrap_seed: int,
) -> Evaluation:
    from josh_core.storage import reads

    db = Database(db_path)
    run = reads.get_run(db, result.run_id)
    loaded = load_conversations(db, result.run_id)
    return Evaluation(
        run_id=result.run_id,
        db_path=str(db.path),
        played=len(result.conversations),
        failed=sum(1 for c in result.conversations if c.status != "done"),
        skipped=result.skipped,
        seconds=seconds,
        stopped=result.stopped,
        config=run.config,
        metrics=report_from(
            loaded.conversations, loaded.run_ids, loaded.not_done,
            bootstrap_sizes=bootstrap_sizes, resamples=resamples, seed=bootstrap_seed,
        ),  # fmt: skip
        errors=error_report_from(loaded.conversations, loaded.run_ids, loaded.not_done),
    )


def evaluate(
    db_path: str | Path,
    scenarios: list[Scenario],
    config: RolloutConfig,
    *,
    agent: Agent | None = None,
    user: UserSimulator | None = None,
    make_env: EnvFactory | None = None,
    observer: RolloutObserver | None = None,
    run_id: str | None = None,
    bootstrap_sizes: Sequence[int] | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    bootstrap_seed: int = 0,
    ray: RayOptions | None = None,
) -> Evaluation:
    """Play `scenarios` as plain rollouts into `db_path` and measure the run.

    Policies are built from the config's SPECs unless given; `config.josh` must be False.
    `ray`: play on Ray workers (see `start_run`).
    """
    if config.josh:
        raise ValueError("an evaluation plays plain rollouts: use josh=False")
    start = time.perf_counter()
    result = start_run(
        db_path, scenarios, config,
        agent=agent, user=user, make_env=make_env, observer=observer, run_id=run_id, ray=ray,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    return _finish(db_path, result, seconds, bootstrap_sizes=bootstrap_sizes,
                   resamples=resamples, bootstrap_seed=bootstrap_seed)  # fmt: skip


def resume_evaluation(
    db_path: str | Path,
    run_id: str,
    *,
    agent: Agent | None = None,
    user: UserSimulator | None = None,
    make_env: EnvFactory | None = None,
    observer: RolloutObserver | None = None,
    bootstrap_sizes: Sequence[int] | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    bootstrap_seed: int = 0,
    base_url: str | None = None,
    ray: RayOptions | None = None,
) -> Evaluation:
    """Finish an interrupted evaluation (its finished conversations are kept) and measure it.
    `base_url` replaces the run's endpoint (needed when its URL carried credentials); `ray`
    plays on Ray workers."""
    from josh_core.storage import reads

    run = reads.get_run(Database(db_path), run_id)
    if run.kind != "plain":
        raise ValueError(f"run {run_id} is a {run.kind} run, not an evaluation")
    start = time.perf_counter()
    result = resume_run(db_path, run_id, agent=agent, user=user, make_env=make_env, observer=observer,
                        base_url=base_url, ray=ray)
    seconds = time.perf_counter() - start
    return _finish(db_path, result, seconds, bootstrap_sizes=bootstrap_sizes,
                   resamples=resamples, bootstrap_seed=bootstrap_seed)  # fmt: skip
