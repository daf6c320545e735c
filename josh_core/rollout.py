"""Run ToolWOZ scenarios as plain or JOSH rollouts into a database, with resume.

`start_run` records a run (its configuration and every scenario it will play, so that it can
be resumed from the database alone) and plays the scenarios; `resume_run` continues a run:
finished conversations are kept, any other one is restarted cleanly (the nodes an
interrupted attempt left are deleted first). The CLI (`josh rollout`) and the app both call
these; an observer reports progress.

Every conversation's search seed is derived from the run seed and the scenario id, and every
node's from that and its path, so a resumed run produces the same trees as an uninterrupted
one.

What a run survives:
- One broken conversation fails alone (its error, secrets redacted, is stored); the run goes on.
- A database lock held by another process past `JOSH_DB_LOCK_TIMEOUT` costs the conversation an
  attempt: it is replayed from its start up to `JOSH_DB_BUSY_RETRIES` times (default 2), then
  fails alone. Recording a failure is retried the same way and never ends the run.
- A dead endpoint: after `JOSH_MAX_CONNECTION_FAILURES` (default 3; 0: never) conversations in a
  row (across the run) failed to connect, no further conversation is started; the run is marked
  `stopped` and resumes where it stopped. Each call to an endpoint is bounded in time
  (openai_backend: `JOSH_LLM_TIMEOUT`, `JOSH_LLM_CALL_TIMEOUT`), and an endpoint that failed
  every retry is tried once per later call, so a dead server costs minutes, not hours.
- A full disk (ENOSPC): the database cannot be written, so nothing more is played; the run
  stops (`stopped` when that can still be written) and the conversations it was playing are
  left as they were: `--resume` replays them once space is freed.
- SIGINT / SIGTERM: the run and its conversations in flight are marked `interrupted`
  (`RunInterrupted` is raised for SIGTERM, KeyboardInterrupt for SIGINT); resume replays them.
- Credentials in a base URL are not stored with the run's configuration; a resume gets the URL
  again (`base_url=`).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import subprocess
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, Field, PrivateAttr, ValidationInfo, field_validator, model_validator

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
from josh_core.redact import is_redacted_url, redact, redact_url, url_secrets
from josh_core.storage.db import Database, DatabaseBusy, DatabaseFull, lock_timeout
from josh_core.storage.locks import run_lock
from josh_core.storage.models import ConversationRecord
from josh_core.envs import DEFAULT_ENV, get_env, score_path
from josh_core.envs.base import Scenario
from josh_core.types import Message, ToolEnvironment

T = TypeVar("T")

if TYPE_CHECKING:  # Ray is imported only by runs that ask for it (--ray)
    from josh_core.distributed.ray_rollout import RayOptions, RayPlayer

EnvFactory = Callable[[Any], ToolEnvironment]  # a scenario of the run's environment -> its env

log = logging.getLogger(__name__)

# Bounds on what a run may ask for: far above any useful setting (the paper: beam 8, branching
# 2, 15 turns), low enough that a typo cannot make a run that never ends or fills the memory.
MAX_BEAM = 1024
MAX_BRANCHING = 64
MAX_TURNS = 200
MAX_ACTIONS_PER_TURN = 64
MAX_CONCURRENCY = 512
MAX_TEMPERATURE = 5.0
SEED_RANGE = (-(2**63), 2**63 - 1)  # stored as BIGINT


class PolicyError(ValueError):
    """An agent or user SPEC (or its script file) that cannot be built; names its flag."""


class RunInterrupted(BaseException):
    """The process was asked to stop (SIGTERM) while a run was played."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


class RolloutConfig(BaseModel):
    """Everything that decides a run's trees; stored with the run so it can be resumed."""

    # The environment (`josh envs`); declared first so that the user check below can see it.
    env: str = Field(DEFAULT_ENV, validate_default=True)
    # Reward semantics, among the environment's `scoring_modes` (ToolWOZ: toolwoz | reference);
    # None resolves to its default, so stored runs always name the one they were played with.
    scoring: str | None = Field(None, validate_default=True)
    josh: bool = False
    agent: str = DEFAULT_AGENT_SPEC
    user: str = Field(None, validate_default=True)  # type: ignore[assignment]  # None: the environment's default
    style: str = "auto"  # agent style: auto | react | compact | fc (auto is resolved on creation)
    temperature: float | None = Field(None, ge=0.0, le=MAX_TEMPERATURE, allow_inf_nan=False)
    max_actions_per_turn: int | None = Field(None, ge=1, le=MAX_ACTIONS_PER_TURN)  # None: the style's own cap
    constrained: bool | None = None
    grounded: bool | None = None
    base_url: str | None = None
    max_turns: int = Field(15, ge=0, le=MAX_TURNS)
    beam: int = Field(8, ge=1, le=MAX_BEAM)
    branching: int = Field(2, ge=1, le=MAX_BRANCHING)
    seed: int = Field(0, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    concurrency: int = Field(1, ge=1, le=MAX_CONCURRENCY)  # conversations played at the same time
    # Where the scenarios came from (for the record; the run stores the scenarios themselves).
    split: str | None = None
    limit: int | None = Field(None, ge=0)
    scenario_file: str | None = None

    @field_validator("env")
    @classmethod
    def _known_env(cls, value: str) -> str:
        return get_env(value).name  # UnknownEnvironment (a ValueError) names the registered ones

    @field_validator("scoring")
    @classmethod
    def _scoring_for_env(cls, value: str | None, info: ValidationInfo) -> str | None:
        if "env" not in info.data:  # the environment was refused: that error is the one to show
            return value
        return get_env(info.data["env"]).check_scoring(value)

    @field_validator("user", mode="before")
    @classmethod
    def _user_for_env(cls, value: Any, info: ValidationInfo) -> Any:
        if "env" not in info.data:  # the environment was refused: that error is the one to show
            return value or DEFAULT_USER_SPEC
        environment = get_env(info.data["env"])
        value = value or environment.default_user
        if not isinstance(value, str):
            return value  # the type check that follows names the problem
        problem = environment.check_user(value)
        if problem:
            raise ValueError(problem)
        return value

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
            plain = SearchConfig.plain(max_depth=self.max_turns, seed=seed)
            # Environments rewarded by the end state (τ²) play on after the goal calls.
            plain.stop_when_goals_done = not get_env(self.env).plays_to_the_end
            return plain
        return SearchConfig(
            max_depth=self.max_turns,
            branching_factor=self.branching,
            max_beam=self.beam,
            seed=seed,
        )

    def stored(self) -> dict[str, Any]:
        """The configuration as stored with the run: credentials in the base URL are not kept
        (a resume is given the URL again)."""
        data = self.model_dump()
        data["base_url"], _ = redact_url(self.base_url)
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


def environment_factory(config: RolloutConfig) -> EnvFactory:
    """How the run's scenarios become environments: its registered environment's `make_env`,
    with the run's scoring."""
    return get_env(config.env).env_factory(config.scoring)


def agent_prompt_messages(agent: Agent, env: ToolEnvironment) -> list[Message]:
    """What the agent sends before the conversation: its own `prompt_messages` (ReACT: system
    prompt, demonstration, fence) or else just its system prompt."""
    if hasattr(agent, "prompt_messages"):
        return list(agent.prompt_messages(env))
    system = agent.system_prompt(env)
    return [Message(role="system", content=system)] if system else []


def build_policies(config: RolloutConfig) -> tuple[Agent, UserSimulator]:
    """The agent and user of a configuration; PolicyError (naming --agent or --user) when a
    SPEC or its script file cannot be built."""
    options = config.agent_options()
    built: list[Any] = []
    for flag, spec, build in (("--agent", config.agent, build_agent), ("--user", config.user, build_user)):
        try:
            built.append(build(spec, options))
        except Exception as error:  # any failure to build is the SPEC's problem, told plainly
            shown = redact(spec)
            detail = " ".join(str(error).split()) or type(error).__name__
            raise PolicyError(f"{flag} {shown!r}: {redact(detail, url_secrets(config.base_url))}") from error
    return built[0], built[1]


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
    ray: RayOptions | None = None,
) -> RunResult:
    """Record a new run of `scenarios` (of `config.env`) and play it. Policies are built from
    the config's SPECs unless given; environments come from the registry unless `make_env`.

    `ray`: play the conversations on Ray workers (josh_core.distributed.ray_rollout), which
    build the policies from the config themselves (`agent` and `user` are not used); this
    process writes the database. `make_env` must then be picklable."""
    if not scenarios:
        raise ValueError("no scenarios to run")
    player = None
    if ray is not None:
        player = _ray_player(ray, config, make_env)
        agent = user = None
    elif agent is None or user is None:
        built_agent, built_user = build_policies(config)
        agent, user = agent or built_agent, user or built_user
    try:
        return _record_and_play(db_path, scenarios, config, agent, user, make_env, observer, run_id, player)
    finally:
        if player is not None:
            player.close()


def _ray_player(ray: RayOptions, config: RolloutConfig, make_env: EnvFactory | None) -> RayPlayer:
    from josh_core.distributed.ray_rollout import RayPlayer

    return RayPlayer(ray, config, make_env)


def _record_and_play(
    db_path: str | Path,
    scenarios: list[Scenario],
    config: RolloutConfig,
    agent: Agent | None,
    user: UserSimulator | None,
    make_env: EnvFactory | None,
    observer: RolloutObserver | None,
    run_id: str | None,
    player: RayPlayer | None,
) -> RunResult:
    names = player.names if player is not None else (getattr(agent, "name", None), getattr(user, "name", None))
    db = Database(db_path)
    run_id = writes.create_run(
        db,
        kind="josh" if config.josh else "plain",
        config=config.stored(),
        scenarios=[(s.id, s.model_dump(mode="json")) for s in scenarios],
        agent_spec=config.agent,
        user_spec=config.user,
        agent_name=names[0],
        user_name=names[1],
        seed=config.seed,
        code_revision=code_revision(),
        run_id=run_id,
    )
    with run_lock(db.path, run_id):
        return _play(db, run_id, config, agent, user, make_env, observer, player)


def resume_run(
    db_path: str | Path,
    run_id: str,
    *,
    agent: Agent | None = None,
    user: UserSimulator | None = None,
    make_env: EnvFactory | None = None,
    observer: RolloutObserver | None = None,
    base_url: str | None = None,
    ray: RayOptions | None = None,
) -> RunResult:
    """Continue a run with its stored configuration; finished conversations are not redone.

    `base_url` replaces the stored endpoint; it is required when the run's URL carried
    credentials (they are not stored). `ray`: play on Ray workers (as `start_run`), whether
    or not the run was started on Ray."""
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
        player = None
        if ray is not None:
            player = _ray_player(ray, config, make_env)
        elif agent is None or user is None:
            built_agent, built_user = build_policies(config)
            agent, user = agent or built_agent, user or built_user
        try:
            writes.set_run_status(db, run_id, "running")
            return _play(db, run_id, config, agent, user, make_env, observer, player)
        finally:
            if player is not None:
                player.close()


def max_connection_failures() -> int:
    """Conversations in a row that may fail to reach an endpoint before a run stops (0: never)."""
    return max(0, int(os.environ.get("JOSH_MAX_CONNECTION_FAILURES", "3")))


def busy_retries() -> int:
    """Extra attempts of a conversation that met a database lock held too long."""
    return max(0, int(os.environ.get("JOSH_DB_BUSY_RETRIES", "2")))


def is_connection_failure(error: BaseException) -> bool:
    """Whether an error (or one it came from) is an endpoint that could not be reached."""
    kinds: list[type[BaseException]] = [ConnectionError]
    try:
        import openai

        kinds.append(openai.APIConnectionError)  # APITimeoutError is one too
    except ImportError:  # pragma: no cover - openai is a dependency
        pass
    try:
        import httpx

        kinds += [httpx.ConnectError, httpx.ConnectTimeout]
    except ImportError:  # pragma: no cover
        pass
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, tuple(kinds)):
            return True
        current = current.__cause__ or current.__context__
    return False


def is_storage_failure(error: BaseException) -> bool:
    """Whether an error (or one it came from) is a database that can no longer be written
    (a full disk): every later conversation would fail the same way."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DatabaseFull):
            return True
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        current = current.__cause__ or current.__context__
    return False


class RunGuard:
    """When a run stops before its end, shared by the local and the distributed player:

    - a dead endpoint: `JOSH_MAX_CONNECTION_FAILURES` conversations in a row (across the run,
      whatever their order of finishing) failed to reach the model endpoint;
    - a full disk: the database could not be written.

    `record` each finished conversation; once `stopped` says why, no conversation starts."""

    def __init__(self, connection_limit: int | None = None):
        self.connection_limit = max_connection_failures() if connection_limit is None else connection_limit
        self.in_a_row = 0
        self.stopped: str | None = None

    def stop(self, why: str) -> None:
        if not self.stopped:
            self.stopped = why

    def record(self, result: ConversationResult) -> str | None:
        """Count one finished conversation; returns why the run stops (None: it goes on)."""
        if result.storage_failure:
            self.stop(f"{result.error.removeprefix('DatabaseFull: ') if result.error else 'the database could not be written'}"
                      "; nothing more is played: resume the run once there is space")  # fmt: skip
        elif result.connection_failure:
            self.in_a_row += 1
            if self.connection_limit and self.in_a_row >= self.connection_limit:
                self.stop(
                    f"{self.in_a_row} conversations in a row could not reach the model endpoint "
                    f"(last: {result.error}); stopped before the others (JOSH_MAX_CONNECTION_FAILURES="
                    f"{self.connection_limit}); resume the run once the endpoint is up"
                )
        else:  # done, or failed for another reason: the endpoint answered
            self.in_a_row = 0
        return self.stopped


class _SafeObserver(RolloutObserver):
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


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """While a run is played in the main thread, SIGTERM raises RunInterrupted (as SIGINT
    raises KeyboardInterrupt), so the run can be marked before the process ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise RunInterrupted(signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):  # pragma: no cover - no signals here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_interruptibly(coro: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(coro)`, except that a SIGINT received while it runs always ends it in
    KeyboardInterrupt.

    asyncio.run's own SIGINT handling cancels the main task and raises KeyboardInterrupt only
    if that task then ends cancelled: a cancellation absorbed anywhere in the task tree (a
    `finally` that awaits, a future that completed as it was cancelled, a library catching
    CancelledError) lets the run end as if normally, the interrupt lost. Here the interrupt is
    recorded when it arrives, so the run stops (the main task is cancelled, as asyncio.run
    does; a second SIGINT raises at once) and is then reported interrupted whatever the task
    returned."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):  # not ours to handle (another thread, or the embedding program's own handler)
        return asyncio.run(coro)
    received = 0
    main_task: asyncio.Task[T] | None = None

    with asyncio.Runner() as runner:
        loop = runner.get_loop()

        def on_sigint(signum: int, frame: Any) -> None:
            nonlocal received
            received += 1
            if received == 1 and main_task is not None and not main_task.done():
                main_task.cancel()
                loop.call_soon_threadsafe(lambda: None)  # wake a loop blocked in select()
                return
            raise KeyboardInterrupt()

        async def main() -> T:
            nonlocal main_task
            main_task = asyncio.current_task()
            return await coro

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            try:
                result = runner.run(main())
            except asyncio.CancelledError:
                if received:
                    raise KeyboardInterrupt() from None
                raise
            if received:  # the cancellation was absorbed: the run still ends interrupted
                log.warning("a SIGINT's cancellation was absorbed by a task; the run ends interrupted")
                raise KeyboardInterrupt()
            return result
        finally:
            if signal.getsignal(signal.SIGINT) is on_sigint:
                signal.signal(signal.SIGINT, previous)
            if main_task is None:  # interrupted before it started
                coro.close()


def _retry_busy(fn: Callable[[], Any], attempts: int = 5) -> Any:
    """Call `fn`, again after a pause while the database stays locked (DatabaseBusy)."""
    for attempt in range(attempts):
        try:
            return fn()
        except DatabaseBusy:
            if attempt == attempts - 1:
                raise
            time.sleep(min(lock_timeout(), 5.0))
    return None  # pragma: no cover


def _play(
    db: Database,
    run_id: str,
    config: RolloutConfig,
    agent: Agent,
    user: UserSimulator,
    make_env: EnvFactory | None,
    observer: RolloutObserver | None,
    player: RayPlayer | None = None,
) -> RunResult:
    """Play the run's unfinished conversations (the caller holds the run's lock), here or on
    the `player`'s workers."""
    observer = _SafeObserver(observer or RolloutObserver())
    make_env = make_env or environment_factory(config)
    try:
        with _sigterm_interrupts():
            conversations = reads.list_conversations(db, run_id=run_id)
            todo = [c for c in conversations if c.status != "done"]
            observer.run_started(run_id, len(conversations), len(conversations) - len(todo))
            if player is not None:
                results, stopped = _run_interruptibly(player.play_all(db, config, observer, todo))
            else:
                results, stopped = _run_interruptibly(_play_all(db, config, agent, user, make_env, observer, todo))
    except (KeyboardInterrupt, RunInterrupted):
        try:
            _retry_busy(lambda: writes.mark_interrupted(db, run_id), attempts=2)
        except Exception:  # noqa: BLE001 - the interrupt is what the caller must see
            log.warning("could not mark run %s interrupted", run_id, exc_info=True)
        raise
    all_done = len(results) == len(todo) and all(r.status == "done" for r in results)
    status = "stopped" if stopped else "done" if all_done else "incomplete"
    try:
        _retry_busy(lambda: writes.set_run_status(db, run_id, status))
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


async def _play_all(
    db: Database,
    config: RolloutConfig,
    agent: Agent,
    user: UserSimulator,
    make_env: EnvFactory,
    observer: RolloutObserver,
    todo: list[ConversationRecord],
) -> tuple[list[ConversationResult], str | None]:
    """Play `todo`; returns the results of the conversations played and, when a dead
    endpoint stopped the run early, why (the others were not started and stay pending)."""
    limit = asyncio.Semaphore(max(1, config.concurrency))
    guard = RunGuard()

    async def play(record: ConversationRecord) -> ConversationResult | None:
        async with limit:
            if guard.stopped:
                return None
            result = await play_conversation(db, record, config, agent, user, make_env, observer)
            guard.record(result)
            return result

    played = await asyncio.gather(*(play(record) for record in todo))
    return [r for r in played if r is not None], guard.stopped


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


async def record_failure(
    db: Database, result: ConversationResult, error: BaseException | None, trace: str, base_url: str | None,
    *, connection_failure: bool | None = None,
) -> None:
    """Store why a conversation failed (secrets redacted) and classify the failure on
    `result`; local and distributed players share it.

    A full disk is not the conversation's fault: nothing is written (it could not be), the
    conversation stays as it was left for a resume, and `result.storage_failure` stops the run.
    Any other failure is recorded; if even that fails the conversation is left for a resume
    and the error says so (a failure record never ends the run)."""
    secrets = url_secrets(base_url)
    result.error = redact(result.error, secrets)
    result.connection_failure = (
        connection_failure if connection_failure is not None else error is not None and is_connection_failure(error)
    )
    if error is not None and is_storage_failure(error):
        result.storage_failure, result.status = True, "stopped"
        return
    stored = redact((result.error or "") + "\n" + trace, secrets)
    try:
        await asyncio.to_thread(_retry_busy, lambda: writes.fail_conversation(db, result.conversation_id, stored))
    except Exception as record_error:  # noqa: BLE001 - never end the run over a failure record
        log.warning("%s: could not record the failure: %s", result.conversation_id, record_error)
        result.error = f"{result.error} (not recorded: {record_error})"
        if is_storage_failure(record_error):
            result.storage_failure, result.status = True, "stopped"


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
