"""Run ToolWOZ scenarios as plain or JOSH rollouts into a database, with resume.

`start_run` records a run (its configuration and every scenario it will play, so that it can
be resumed from the database alone) and plays the scenarios; `resume_run` continues a run:
finished conversations are kept, any other one is restarted cleanly (the nodes an
interrupted attempt left are deleted first). The CLI (`josh rollout`) and the app both call
these; an observer reports progress.

Every conversation's search seed is derived from the run seed and the scenario id, and every
node's from that and its path, so a resumed run produces the same trees as an uninterrupted
one.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, model_validator

from josh_core.policies.base import Agent, UserSimulator
from josh_core.policies.factory import (
    DEFAULT_AGENT_SPEC,
    DEFAULT_USER_SPEC,
    AgentOptions,
    build_agent,
    build_user,
)
from josh_core.search.engine import JoshSearch, SearchConfig, StepEvent
from josh_core.search.labels import ideal_path
from josh_core.search.tree import derive_seed
from josh_core.storage import reads, writes
from josh_core.storage.db import Database
from josh_core.storage.locks import run_lock
from josh_core.storage.models import ConversationRecord
from josh_core.toolwoz.types import Scenario
from josh_core.types import Message, ToolEnvironment

EnvFactory = Callable[[Scenario], ToolEnvironment]


class RolloutConfig(BaseModel):
    """Everything that decides a run's trees; stored with the run so it can be resumed."""

    josh: bool = False
    agent: str = DEFAULT_AGENT_SPEC
    user: str = DEFAULT_USER_SPEC
    style: str = "auto"  # agent style: auto | react | compact | fc (auto is resolved on creation)
    temperature: float | None = None
    max_actions_per_turn: int | None = Field(None, ge=1)  # None: the style's own cap
    constrained: bool | None = None
    grounded: bool | None = None
    base_url: str | None = None
    max_turns: int = Field(15, ge=0)
    beam: int = Field(8, ge=1)
    branching: int = Field(2, ge=1)
    seed: int = 0
    concurrency: int = Field(1, ge=1)  # conversations played at the same time
    # Where the scenarios came from (for the record; the run stores the scenarios themselves).
    split: str | None = None
    limit: int | None = None
    scenario_file: str | None = None

    @model_validator(mode="after")
    def _resolve_defaults(self) -> "RolloutConfig":
        # Stored runs record the concrete style and cap the agent played with, never "auto".
        from josh_core.policies.agents import default_max_actions
        from josh_core.policies.factory import resolve_style

        if not self.agent.startswith("script:"):
            self.style = resolve_style(self.style, self.agent)
        elif self.style == "auto":
            self.style = "react"
        if self.max_actions_per_turn is None:
            self.max_actions_per_turn = default_max_actions(self.style)
        return self

    def agent_options(self) -> AgentOptions:
        return AgentOptions(
            style=self.style,
            temperature=self.temperature,
            max_actions_per_turn=self.max_actions_per_turn,
            constrained=self.constrained,
            grounded=self.grounded,
            base_url=self.base_url,
        )

    def search_config(self, scenario_id: str) -> SearchConfig:
        seed = derive_seed(self.seed, scenario_id)
        if not self.josh:
            return SearchConfig.plain(max_depth=self.max_turns, seed=seed)
        return SearchConfig(
            max_depth=self.max_turns,
            branching_factor=self.branching,
            max_beam=self.beam,
            seed=seed,
        )

    def stored(self) -> dict[str, Any]:
        data = self.model_dump()
        data["agent_options"] = {
            "style": self.style,
            "temperature": self.temperature,
            "max_actions_per_turn": self.max_actions_per_turn,
            "constrained": self.constrained,
            "grounded": self.grounded,
        }
        return data


class ConversationResult(BaseModel):
    conversation_id: str
    position: int
    scenario_id: str
    status: str  # "done" | "failed"
    reward: float = 0.0
    success: bool = False
    stop_reason: str | None = None
    nodes: int = 0
    seconds: float = 0.0
    error: str | None = None


class RunResult(BaseModel):
    run_id: str
    db_path: str
    conversations: list[ConversationResult]  # the ones played by this call
    skipped: int = 0  # already finished before this call (resume)

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


def code_revision() -> str | None:
    """The git commit of the code (with "+dirty" for uncommitted changes), if known."""
    root = Path(__file__).resolve().parent.parent
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


def toolwoz_env(scenario: Scenario) -> ToolEnvironment:
    from josh_core.toolwoz.data import ensure_prepared
    from josh_core.toolwoz.env import ToolWOZEnv

    ensure_prepared()
    return ToolWOZEnv(scenario)


def agent_prompt_messages(agent: Agent, env: ToolEnvironment) -> list[Message]:
    """What the agent sends before the conversation: its own `prompt_messages` (ReACT: system
    prompt, demonstration, fence) or else just its system prompt."""
    if hasattr(agent, "prompt_messages"):
        return list(agent.prompt_messages(env))
    system = agent.system_prompt(env)
    return [Message(role="system", content=system)] if system else []


def build_policies(config: RolloutConfig) -> tuple[Agent, UserSimulator]:
    options = config.agent_options()
    return build_agent(config.agent, options), build_user(config.user, options)


def start_run(
    db_path: str | Path,
    scenarios: list[Scenario],
    config: RolloutConfig,
    *,
    agent: Agent | None = None,
    user: UserSimulator | None = None,
    make_env: EnvFactory = toolwoz_env,
    observer: RolloutObserver | None = None,
    run_id: str | None = None,
) -> RunResult:
    """Record a new run of `scenarios` and play it. Policies are built from the config's
    SPECs unless given."""
    if not scenarios:
        raise ValueError("no scenarios to run")
    if agent is None or user is None:
        built_agent, built_user = build_policies(config)
        agent, user = agent or built_agent, user or built_user
    db = Database(db_path)
    run_id = writes.create_run(
        db,
        kind="josh" if config.josh else "plain",
        config=config.stored(),
        scenarios=[(s.id, s.model_dump(mode="json")) for s in scenarios],
        agent_spec=config.agent,
        user_spec=config.user,
        agent_name=getattr(agent, "name", None),
        user_name=getattr(user, "name", None),
        seed=config.seed,
        code_revision=code_revision(),
        run_id=run_id,
    )
    with run_lock(db.path, run_id):
        return _play(db, run_id, config, agent, user, make_env, observer)


def resume_run(
    db_path: str | Path,
    run_id: str,
    *,
    agent: Agent | None = None,
    user: UserSimulator | None = None,
    make_env: EnvFactory = toolwoz_env,
    observer: RolloutObserver | None = None,
) -> RunResult:
    """Continue a run with its stored configuration; finished conversations are not redone."""
    db = Database(db_path)
    run = reads.get_run(db, run_id)
    config = RolloutConfig.model_validate(
        {k: v for k, v in run.config.items() if k in RolloutConfig.model_fields}
    )
    # RunBusy if another process is playing this run: checked before any model is loaded.
    with run_lock(db.path, run_id):
        if agent is None or user is None:
            built_agent, built_user = build_policies(config)
            agent, user = agent or built_agent, user or built_user
        writes.set_run_status(db, run_id, "running")
        return _play(db, run_id, config, agent, user, make_env, observer)


def _play(
    db: Database,
    run_id: str,
    config: RolloutConfig,
    agent: Agent,
    user: UserSimulator,
    make_env: EnvFactory,
    observer: RolloutObserver | None,
) -> RunResult:
    """Play the run's unfinished conversations (the caller holds the run's lock)."""
    observer = observer or RolloutObserver()
    conversations = reads.list_conversations(db, run_id=run_id)
    todo = [c for c in conversations if c.status != "done"]
    observer.run_started(run_id, len(conversations), len(conversations) - len(todo))
    results = asyncio.run(_play_all(db, config, agent, user, make_env, observer, todo))
    all_done = all(r.status == "done" for r in results)
    writes.set_run_status(db, run_id, "done" if all_done else "incomplete")
    return RunResult(
        run_id=run_id,
        db_path=str(db.path),
        conversations=results,
        skipped=len(conversations) - len(todo),
    )


async def _play_all(
    db: Database,
    config: RolloutConfig,
    agent: Agent,
    user: UserSimulator,
    make_env: EnvFactory,
    observer: RolloutObserver,
    todo: list[ConversationRecord],
) -> list[ConversationResult]:
    limit = asyncio.Semaphore(max(1, config.concurrency))

    async def play(record: ConversationRecord) -> ConversationResult:
        async with limit:
            return await play_conversation(db, record, config, agent, user, make_env, observer)

    return list(await asyncio.gather(*(play(record) for record in todo)))


async def play_conversation(
    db: Database,
    record: ConversationRecord,
    config: RolloutConfig,
    agent: Agent,
    user: UserSimulator,
    make_env: EnvFactory,
    observer: RolloutObserver,
) -> ConversationResult:
    """Play one stored conversation from scratch (clearing an interrupted attempt)."""
    scenario = Scenario.model_validate(record.scenario)
    start = time.perf_counter()
    result = ConversationResult(
        conversation_id=record.id, position=record.position, scenario_id=record.scenario_id,
        status="failed",
    )
    try:
        env = make_env(scenario)
        search_config = config.search_config(scenario.id)
        await asyncio.to_thread(
            writes.start_conversation,
            db,
            record.id,
            system_prompt=agent.system_prompt(env),
            prompt_messages=[m.model_dump(exclude_none=True) for m in agent_prompt_messages(agent, env)],
            tools=env.tools(),
            seed=search_config.seed,
            goals=list(env.goal_ids()),
        )
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
        score = None
        if hasattr(env, "score"):
            calls = [call for node in ideal_path(tree) for call in node.api_calls]
            score = env.score(calls).model_dump(mode="json")
        seconds = time.perf_counter() - start
        await asyncio.to_thread(writes.finish_conversation, db, tree, seconds=seconds, score=score)
        result = result.model_copy(
            update=dict(
                status="done",
                reward=tree.reward,
                success=bool(tree.goal_ids) and not tree.remaining_goals,
                stop_reason=tree.stop_reason,
                nodes=len(tree.nodes),
                seconds=seconds,
            )
        )
    except Exception as error:  # one broken conversation must not end the run
        result.seconds = time.perf_counter() - start
        result.error = f"{type(error).__name__}: {error}"
        await asyncio.to_thread(
            writes.fail_conversation, db, record.id, result.error + "\n" + traceback.format_exc()
        )
    observer.conversation_finished(result)
    return result
