"""Playing one stored conversation: what a player needs before its first step, the search
itself with every node written as it is made, and its outcome (local and distributed players
share `prepare_conversation` and `conversation_outcome`, so both store the same)."""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from dataclasses import dataclass
from typing import Any

from josh_core.envs import get_env, score_path
from josh_core.policies.base import Agent, UserSimulator
from josh_core.rollout.config import EnvFactory, RolloutConfig
from josh_core.rollout.faults import busy_retries, record_failure
from josh_core.rollout.results import ConversationResult, RolloutObserver
from josh_core.search.engine import JoshSearch, SearchConfig
from josh_core.search.labels import ideal_path
from josh_core.storage import writes
from josh_core.storage.db import Database, DatabaseBusy, lock_timeout
from josh_core.storage.models import ConversationRecord
from josh_core.types import Message, ToolEnvironment

log = logging.getLogger(__name__)


def agent_prompt_messages(agent: Agent, env: ToolEnvironment) -> list[Message]:
    """What the agent sends before the conversation: its own `prompt_messages` (ReACT: system
    prompt, demonstration, fence) or else just its system prompt."""
    if hasattr(agent, "prompt_messages"):
        return list(agent.prompt_messages(env))
    system = agent.system_prompt(env)
    return [Message(role="system", content=system)] if system else []


async def play_conversation(
    db: Database,
    record: ConversationRecord,
    config: RolloutConfig,
    agent: Agent,
    user: UserSimulator,
    make_env: EnvFactory,
    observer: RolloutObserver,
) -> ConversationResult:
    """Play one stored conversation from scratch (clearing an interrupted attempt).

    A database lock held by another process past the lock timeout costs an attempt: the
    conversation is replayed from its start (up to `busy_retries()` more times), then fails.
    Any other error fails the conversation alone. The stored error has secrets redacted; if
    even recording the failure meets a held lock, the conversation is left for a resume."""
    start = time.perf_counter()
    retries = busy_retries()
    attempt = 0
    while True:
        attempt += 1
        result = await _attempt_conversation(db, record, config, agent, user, make_env, observer, start)
        result.attempts = attempt
        busy = result.status != "done" and isinstance(result._error, DatabaseBusy)
        if not busy or attempt > retries:
            break
        log.warning("%s: database locked (%s); attempt %d of %d in %.1f s", record.id, result.error,
                    attempt + 1, retries + 1, lock_timeout())
        await asyncio.sleep(lock_timeout())
    if result.status != "done":
        await record_failure(db, result, result._error, result._trace, config.base_url)
    observer.conversation_finished(result)
    return result


@dataclass
class PreparedConversation:
    """A conversation about to be played: its scenario, environment and search configuration,
    and what `writes.start_conversation` stores of it."""

    scenario: Any
    env: ToolEnvironment
    search_config: SearchConfig
    stored: dict[str, Any]  # system_prompt, prompt_messages, tools, seed, goals


def prepare_conversation(
    record: ConversationRecord, config: RolloutConfig, agent: Agent, make_env: EnvFactory
) -> PreparedConversation:
    """Everything a player needs before a conversation's first step (local and distributed
    players share it, so both store the same)."""
    scenario = get_env(config.env).scenario_from_json(record.scenario)
    env = make_env(scenario)
    # Repeated trials of one task (τ² Pass^k) get seeds of their own.
    trial = getattr(scenario, "trial", 0) or 0
    search_config = config.search_config(scenario.id if not trial else f"{scenario.id}#trial{trial}")
    stored = dict(
        system_prompt=agent.system_prompt(env),
        prompt_messages=[m.model_dump(exclude_none=True) for m in agent_prompt_messages(agent, env)],
        tools=env.tools(),
        seed=search_config.seed,
        goals=list(env.goal_ids()),
    )
    return PreparedConversation(scenario, env, search_config, stored)


def conversation_outcome(
    config: RolloutConfig, env: ToolEnvironment, tree: Any
) -> tuple[dict[str, Any] | None, float, bool]:
    """A finished search's score (of its ideal path), reward and success."""
    score = score_path(env, ideal_path(tree))
    reward, success = tree.reward, bool(tree.goal_ids) and not tree.remaining_goals
    if score is not None and not config.josh and get_env(config.env).plays_to_the_end:
        # A plain rollout of an environment rewarded by its end state (τ²) is worth that
        # reward; JOSH trees keep the search's (goal calls reached).
        reward, success = float(score["reward"]), bool(score["success"])
    return score, reward, success


async def _attempt_conversation(
    db: Database,
    record: ConversationRecord,
    config: RolloutConfig,
    agent: Agent,
    user: UserSimulator,
    make_env: EnvFactory,
    observer: RolloutObserver,
    start: float,
) -> ConversationResult:
    """One attempt at a conversation; a failed attempt carries its error (not yet recorded)."""
    result = ConversationResult(
        conversation_id=record.id, position=record.position, scenario_id=record.scenario_id,
        status="failed",
    )
    try:
        prepared = prepare_conversation(record, config, agent, make_env)
        scenario, env, search_config = prepared.scenario, prepared.env, prepared.search_config
        await asyncio.to_thread(writes.start_conversation, db, record.id, **prepared.stored)
        observer.conversation_started(record.id, scenario.id, search_config.max_depth)
        writer = writes.TreeWriter(db)
        search = JoshSearch(
            agent, user, env,
            config=search_config,
            conversation_id=record.id,
            scenario=scenario,
            sink=writer,
        )
        try:
            while not search.done:
                observer.step(record.id, await search.step())
        finally:
            await writer.flush()
        tree = search.tree
        score, reward, success = conversation_outcome(config, env, tree)
        seconds = time.perf_counter() - start
        await asyncio.to_thread(writes.finish_conversation, db, tree, seconds=seconds, score=score,
                                reward=reward, success=success)
        result = result.model_copy(
            update=dict(
                status="done",
                reward=reward,
                success=success,
                stop_reason=tree.stop_reason,
                nodes=len(tree.nodes),
                seconds=seconds,
            )
        )
    except Exception as error:  # one broken conversation must not end the run
        result.seconds = time.perf_counter() - start
        result.error = f"{type(error).__name__}: {error}"
        result._error = error
        result._trace = traceback.format_exc()
    return result
