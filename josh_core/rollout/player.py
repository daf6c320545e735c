"""The `Player` seam: who plays a run's unfinished conversations. `LocalPlayer` plays them in
this process with one agent and user; `josh_core.distributed.ray_rollout.RayPlayer` plays them
on Ray workers. Both write through the same storage functions, so a run stores the same trees
whoever played it; `run.py` records the run and hands it to a player without knowing which."""

from __future__ import annotations

import asyncio
from typing import Protocol

from josh_core.policies.base import Agent, UserSimulator
from josh_core.rollout.config import EnvFactory, RolloutConfig, environment_factory
from josh_core.rollout.conversation import play_conversation
from josh_core.rollout.faults import RunGuard
from josh_core.rollout.results import ConversationResult, RolloutObserver
from josh_core.storage.db import Database
from josh_core.storage.models import ConversationRecord


class Player(Protocol):
    """Plays the unfinished conversations of a run (the caller holds the run's lock)."""

    # The agent's and the user's names, stored with the run when it is recorded.
    names: tuple[str | None, str | None]

    async def play_all(
        self, db: Database, config: RolloutConfig, observer: RolloutObserver, todo: list[ConversationRecord]
    ) -> tuple[list[ConversationResult], str | None]:
        """Play `todo`; returns the results of the conversations played and, when the run
        stopped early (a dead endpoint, a full disk, no worker left), why: the others were not
        started and stay pending for a resume."""
        ...

    def close(self) -> None:
        """Free what the player holds (workers, a Ray instance)."""
        ...


class PlayerFactory(Protocol):
    """Where to play a run other than here (`RayOptions`): builds its player once the run's
    configuration is known (a resume reads it from the database, inside the run's lock)."""

    def player(self, config: RolloutConfig, make_env: EnvFactory | None) -> Player: ...


class LocalPlayer:
    """Plays in this process: up to `config.concurrency` conversations at once, one agent and
    one user shared by all of them."""

    def __init__(self, agent: Agent, user: UserSimulator, make_env: EnvFactory | None = None):
        self.agent, self.user, self.make_env = agent, user, make_env
        self.names = (getattr(agent, "name", None), getattr(user, "name", None))

    async def play_all(
        self, db: Database, config: RolloutConfig, observer: RolloutObserver, todo: list[ConversationRecord]
    ) -> tuple[list[ConversationResult], str | None]:
        make_env = self.make_env or environment_factory(config)
        limit = asyncio.Semaphore(max(1, config.concurrency))
        guard = RunGuard()

        async def play(record: ConversationRecord) -> ConversationResult | None:
            async with limit:
                if guard.stopped:
                    return None
                result = await play_conversation(db, record, config, self.agent, self.user, make_env, observer)
                guard.record(result)
                return result

        played = await asyncio.gather(*(play(record) for record in todo))
        return [r for r in played if r is not None], guard.stopped

    def close(self) -> None:
        pass  # the agent and user belong to whoever built them (shared backends stay loaded)
