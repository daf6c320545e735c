"""What playing a run reports: each conversation's result, the run's, and the observer that
follows it (CLI progress bars, the app)."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel, PrivateAttr

from josh_core.search.engine import StepEvent

log = logging.getLogger(__name__)


class ConversationResult(BaseModel):
    conversation_id: str
    position: int
    scenario_id: str
    status: str  # "done" | "failed" | "stopped" (the run stopped under it: a full disk; resume replays it)
    reward: float = 0.0
    success: bool = False
    stop_reason: str | None = None
    nodes: int = 0
    seconds: float = 0.0
    error: str | None = None
    connection_failure: bool = False  # failed because an endpoint could not be reached
    storage_failure: bool = False  # the database could not be written (disk full): the run stops
    attempts: int = 1  # tries (a database lock held too long costs one)
    _error: BaseException | None = PrivateAttr(None)  # the failed attempt's exception
    _trace: str = PrivateAttr("")


class RunResult(BaseModel):
    run_id: str
    db_path: str
    conversations: list[ConversationResult]  # the ones played by this call
    skipped: int = 0  # already finished before this call (resume)
    stopped: str | None = None  # why the run stopped early (dead endpoint); resume continues it

    @property
    def average_reward(self) -> float:
        done = [c.reward for c in self.conversations if c.status == "done"]
        return sum(done) / len(done) if done else 0.0


class RolloutObserver:
    """Progress callbacks; subclass and override what you need (CLI bars, the app)."""

    def run_started(self, run_id: str, total: int, already_done: int) -> None:
        pass

    def conversation_started(self, conversation_id: str, scenario_id: str, max_steps: int) -> None:
        pass

    def step(self, conversation_id: str, event: StepEvent) -> None:
        pass

    def conversation_finished(self, result: ConversationResult) -> None:
        pass

    # Distributed runs (--ray) only.
    def conversation_worker(self, conversation_id: str, worker: str) -> None:
        """The worker that plays the conversation (right after `conversation_started`; again
        with another worker when a worker died and the conversation restarted)."""

    def worker_status(self, worker: str, status: str) -> None:
        """A worker is "ready", "lost", or something went wrong with it (plain words)."""


class SafeObserver(RolloutObserver):
    """An observer whose failures (a display that breaks) are logged, never fatal to the run."""

    def __init__(self, inner: RolloutObserver):
        self.inner = inner

    def _call(self, name: str, *args: Any) -> None:
        try:
            getattr(self.inner, name)(*args)
        except Exception:  # noqa: BLE001 - progress display only
            log.warning("observer %s failed", name, exc_info=True)

    def run_started(self, run_id: str, total: int, already_done: int) -> None:
        self._call("run_started", run_id, total, already_done)

    def conversation_started(self, conversation_id: str, scenario_id: str, max_steps: int) -> None:
        self._call("conversation_started", conversation_id, scenario_id, max_steps)

    def step(self, conversation_id: str, event: StepEvent) -> None:
        self._call("step", conversation_id, event)

    def conversation_finished(self, result: ConversationResult) -> None:
        self._call("conversation_finished", result)

    def conversation_worker(self, conversation_id: str, worker: str) -> None:
        self._call("conversation_worker", conversation_id, worker)

    def worker_status(self, worker: str, status: str) -> None:
        self._call("worker_status", worker, status)
