"""Evaluate an agent: plain rollouts over a split, stored as a run, then its metrics and errors.

An evaluation is an ordinary plain run (one agent turn per user turn, no branching) played by
`josh_core.rollout`, so it is stored, resumable and browsable like any other run; the run
record keeps the agent SPEC, the model behind it, the user simulator, the seed and the split,
which is what the leaderboard compares. The numbers come from `josh_core.analysis`, the same
functions `josh metrics`, `josh errors` and the app use.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from josh_core.analysis.bootstrap import DEFAULT_RESAMPLES
from josh_core.analysis.compare import Comparison, compare_runs
from josh_core.analysis.conversations import load_conversations
from josh_core.analysis.errors import ErrorReport, error_report_from
from josh_core.analysis.metrics import MetricsReport, report_from
from josh_core.envs import get_env
from josh_core.envs.base import Scenario
from josh_core.files import file_sha256
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


# -- two agents on the same scenarios (`josh compare-agents`) ----------------------------------------

# Stored-config keys that do not change what a conversation is (how many play at once; the
# endpoint, whose credentials are not stored anyway).
_NOT_IN_IDENTITY = ("concurrency", "base_url")


class AgentRun(BaseModel):
    agent: str  # the agent SPEC
    run_id: str
    played: int  # conversations played by this call
    reused: int  # finished by an earlier call (a rerun plays only what is left)
    failed: int  # conversations not finished (failed or stopped): left out of the comparison
    seconds: float


class AgentsComparison(BaseModel):
    db_path: str
    base: AgentRun
    trained: AgentRun
    comparison: Comparison


def local_files_fingerprint(spec: str) -> str | None:
    """sha256 over the files an agent SPEC plays from this machine (its LoRA adapter folder's
    config and weights, or its script file), so that a run is not reused once they changed;
    None when it names none."""
    from josh_core.adapter_folder import ADAPTER_CONFIG, WEIGHT_FILES, resolve_adapter
    from josh_core.llm.specs import split_adapter, split_spec

    kind, rest = split_spec(spec)
    files: list[Path] = []
    if kind == "script":
        files = [Path(rest).expanduser()]
    else:
        adapter = (rest[1:] or None) if kind == "embedded" else split_adapter(rest)[1] if kind in ("hf", "vllm") else None
        if adapter:
            folder = Path(resolve_adapter(adapter)).expanduser()
            files = [folder / name for name in (ADAPTER_CONFIG, *WEIGHT_FILES)]
    present = [f for f in files if f.is_file()]
    if not present:
        return None
    digest = hashlib.sha256()
    for path in present:
        digest.update(path.name.encode() + b"\0" + file_sha256(path).encode() + b"\0")
    return digest.hexdigest()


def stable_run_id(scenarios: Sequence[Scenario], config: RolloutConfig) -> str:
    """The id of the evaluation run of `config` on `scenarios`: the same settings, scenarios and
    local agent files give the same id, so a rerun finds the run it started and resumes it."""
    stored = {k: v for k, v in config.stored().items() if k not in _NOT_IN_IDENTITY}
    identity = {
        "config": stored,
        "scenarios": [s.model_dump(mode="json") for s in scenarios],
        "agent_files": local_files_fingerprint(config.agent),
    }
    text = json.dumps(identity, sort_keys=True, default=str)
    return f"run-cmp-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def _play_or_reuse(db_path: str | Path, scenarios: list[Scenario], config: RolloutConfig,
                   observer: RolloutObserver | None) -> AgentRun:
    from josh_core.storage import reads

    run_id = stable_run_id(scenarios, config)
    start = time.perf_counter()
    exists = Path(db_path).exists() and any(r.id == run_id for r in reads.list_runs(Database(db_path)))
    if exists:
        before = reads.list_conversations(Database(db_path), run_id=run_id)
        reused = sum(1 for c in before if c.status == "done")
        if reused < len(before):  # nothing is loaded when every conversation is finished
            resume_run(db_path, run_id, observer=observer)
    else:
        reused = 0
        start_run(db_path, scenarios, config, observer=observer, run_id=run_id)
    after = reads.list_conversations(Database(db_path), run_id=run_id)
    done = sum(1 for c in after if c.status == "done")
    return AgentRun(agent=config.agent, run_id=run_id, played=done - reused, reused=reused,
                    failed=len(after) - done, seconds=round(time.perf_counter() - start, 3))


def evaluate_agents(
    db_path: str | Path,
    scenarios: list[Scenario],
    base: RolloutConfig,
    trained: RolloutConfig,
    *,
    observer: RolloutObserver | None = None,
    resamples: int = 2000,
    bootstrap_seed: int = 0,
) -> AgentsComparison:
    """Play two agents as plain rollouts on the same scenarios with the same seeds, each into a
    run whose id comes from its settings (`stable_run_id`: a rerun reuses the finished
    conversations and plays the rest), then compare them paired by scenario (`compare_runs`).

    The two configurations may differ in their agent (and the style and action cap it
    resolves to) only; ValueError otherwise."""
    if base.josh or trained.josh:
        raise ValueError("agents are compared on plain rollouts: use josh=False")
    differing = {k for k, v in base.stored().items() if trained.stored().get(k) != v}
    differing -= {"agent", "style", "max_actions_per_turn", "agent_options", *_NOT_IN_IDENTITY}
    if differing:
        raise ValueError(f"the two agents would be played with other settings: {', '.join(sorted(differing))}")
    if not scenarios:
        raise ValueError("no scenarios to play")
    runs = [_play_or_reuse(db_path, scenarios, config, observer) for config in (base, trained)]
    comparison = compare_runs(Database(db_path), runs[0].run_id, runs[1].run_id, resamples=resamples,
                              seed=bootstrap_seed)
    return AgentsComparison(db_path=str(Path(db_path)), base=runs[0], trained=runs[1], comparison=comparison)
