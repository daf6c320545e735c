"""Recording a run and playing it: `start_run` records a new run (its configuration and every
scenario, so that it can be resumed from the database alone) and plays it; `resume_run`
continues one. Both hand the conversations to a `Player` (player.py) under the run's lock."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

from josh_core.envs.base import Scenario
from josh_core.policies.base import Agent, UserSimulator
from josh_core.redact import is_redacted_url
from josh_core.rollout.config import EnvFactory, PolicyError, RolloutConfig, build_policies
from josh_core.rollout.faults import (
    RunInterrupted,
    is_storage_failure,
    retry_busy,
    run_interruptibly,
    sigterm_interrupts,
)
from josh_core.rollout.player import LocalPlayer, Player, PlayerFactory
from josh_core.rollout.results import RolloutObserver, RunResult, SafeObserver
from josh_core.storage import reads, writes
from josh_core.storage.db import Database
from josh_core.storage.locks import run_lock

log = logging.getLogger(__name__)


def code_revision() -> str | None:
    """The git commit of the code (with "+dirty" for uncommitted changes), if known."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", "josh_core"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "") if head else None


def start_run(
    db_path: str | Path,
    scenarios: list[Scenario],
    config: RolloutConfig,
    *,
    agent: Agent | None = None,
    user: UserSimulator | None = None,
    make_env: EnvFactory | None = None,
    observer: RolloutObserver | None = None,
    run_id: str | None = None,
    ray: PlayerFactory | None = None,
) -> RunResult:
    """Record a new run of `scenarios` (of `config.env`) and play it. Policies are built from
    the config's SPECs unless given; environments come from the registry unless `make_env`.

    `ray`: play the conversations elsewhere: its `player(config, make_env)` is the Player
    (`josh_core.distributed.ray_rollout.RayOptions`: on Ray workers, which build the policies
    from the config themselves, so `agent` and `user` are not used; `make_env` must then be
    picklable). This process writes the database either way."""
    if not scenarios:
        raise ValueError("no scenarios to run")
    player = _player(config, agent, user, make_env, ray)
    try:
        return _record_and_play(db_path, scenarios, config, player, observer, run_id)
    finally:
        player.close()


def _player(config: RolloutConfig, agent: Agent | None, user: UserSimulator | None, make_env: EnvFactory | None,
            elsewhere: PlayerFactory | None) -> Player:
    if elsewhere is not None:
        return elsewhere.player(config, make_env)
    if agent is None or user is None:
        built_agent, built_user = build_policies(config)
        agent, user = agent or built_agent, user or built_user
    return LocalPlayer(agent, user, make_env)


def _record_and_play(
    db_path: str | Path,
    scenarios: list[Scenario],
    config: RolloutConfig,
    player: Player,
    observer: RolloutObserver | None,
    run_id: str | None,
) -> RunResult:
    db = Database(db_path)
    run_id = writes.create_run(
        db,
        kind="josh" if config.josh else "plain",
        config=config.stored(),
        scenarios=[(s.id, s.model_dump(mode="json")) for s in scenarios],
        agent_spec=config.agent,
        user_spec=config.user,
        agent_name=player.names[0],
        user_name=player.names[1],
        seed=config.seed,
        code_revision=code_revision(),
        run_id=run_id,
    )
    with run_lock(db.path, run_id):
        return _play(db, run_id, config, player, observer)


def resume_run(
    db_path: str | Path,
    run_id: str,
    *,
    agent: Agent | None = None,
    user: UserSimulator | None = None,
    make_env: EnvFactory | None = None,
    observer: RolloutObserver | None = None,
    base_url: str | None = None,
    ray: PlayerFactory | None = None,
) -> RunResult:
    """Continue a run with its stored configuration; finished conversations are not redone.

    `base_url` replaces the stored endpoint; it is required when the run's URL carried
    credentials (they are not stored). `ray`: play elsewhere (as `start_run`), whether or not
    the run was started there."""
    db = Database(db_path)
    run = reads.get_run(db, run_id)
    stored = {k: v for k, v in run.config.items() if k in RolloutConfig.model_fields}
    if base_url is not None:
        stored["base_url"] = base_url
    elif is_redacted_url(stored.get("base_url")) and (agent is None or user is None or ray is not None):
        raise PolicyError(
            f"--base-url: run {run_id} was played against {stored['base_url']}, whose credentials are "
            "not stored; give the URL again with --base-url"
        )
    config = RolloutConfig.model_validate(stored)
    # RunBusy if another process is playing this run: checked before any model is loaded.
    with run_lock(db.path, run_id):
        player = _player(config, agent, user, make_env, ray)
        try:
            writes.set_run_status(db, run_id, "running")
            return _play(db, run_id, config, player, observer)
        finally:
            player.close()


def _play(db: Database, run_id: str, config: RolloutConfig, player: Player,
          observer: RolloutObserver | None) -> RunResult:
    """Play the run's unfinished conversations with `player` (the caller holds the run's lock)."""
    observer = SafeObserver(observer or RolloutObserver())
    try:
        with sigterm_interrupts():
            conversations = reads.list_conversations(db, run_id=run_id)
            todo = [c for c in conversations if c.status != "done"]
            observer.run_started(run_id, len(conversations), len(conversations) - len(todo))
            results, stopped = run_interruptibly(player.play_all(db, config, observer, todo))
    except (KeyboardInterrupt, RunInterrupted):
        try:
            retry_busy(lambda: writes.mark_interrupted(db, run_id), attempts=2)
        except Exception:  # noqa: BLE001 - the interrupt is what the caller must see
            log.warning("could not mark run %s interrupted", run_id, exc_info=True)
        raise
    all_done = len(results) == len(todo) and all(r.status == "done" for r in results)
    status = "stopped" if stopped else "done" if all_done else "incomplete"
    try:
        retry_busy(lambda: writes.set_run_status(db, run_id, status))
    except Exception as error:
        if not (stopped and is_storage_failure(error)):
            raise
        # The disk is still full: the run keeps its `running` status, which a resume replaces.
        stopped += " (the run's status could not be recorded either)"
    return RunResult(
        run_id=run_id,
        db_path=str(db.path),
        conversations=results,
        skipped=len(conversations) - len(todo),
        stopped=stopped,
    )
