"""Distributed rollouts on Ray: `josh rollout|eval --ray [ADDRESS]` (docs/distributed.md).

What runs where:

- The driver (the `josh` process, `RayPlayer`) holds the run's lock, reads the run, hands
  conversations to workers and is the database's single writer: every step a worker reports
  is written with the same storage functions as a local run (`writes.start_conversation`,
  `writes.TreeWriter`, `writes.finish_conversation`, `writes.fail_conversation`), as it arrives,
  so the app follows a distributed run exactly as a local one. Progress goes to the run's
  observer (`conversation_worker` / `worker_status` say which worker plays what).
- Workers are Ray actors (`RolloutWorker`), one per GPU or per endpoint or per CPU: each builds
  the run's agent and user once from the run's configuration (`build_policies`; with
  `endpoints`, against its own base URL) and plays conversations with `JoshSearch`. A
  conversation is a streaming actor call: the worker yields its start (system prompt, tools,
  goals, seed), then each step's new nodes, status changes and reward events the moment the
  step ends, then its score. Each worker plays up to `config.concurrency` conversations at once.

Faults:

- A worker that dies mid-conversation (process killed, node lost) surfaces on the driver as a
  Ray actor error; the conversation is played again from its start on another worker
  (`start_conversation` clears what the dead attempt wrote) and a replacement worker is started
  where the cluster has room. A conversation survives `JOSH_RAY_RETRIES` (default 3) worker
  deaths, then fails alone. With no worker alive for `JOSH_RAY_WORKER_TIMEOUT` seconds (default
  600) the run stops (status `stopped`) and resumes later.
- A killed driver takes its workers with it (they belong to its Ray job); `--resume` replays the
  unfinished conversations, with or without `--ray`.
- Every node's seed derives from the run seed, the scenario id and the node's path, never from
  the worker or the order, so a distributed run stores the same trees as a single-process run.

Ray is imported only here, and only when a run asks for it (the `[ray]` extra).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import traceback
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from josh_core.distributed import RayUnavailable
from josh_core.rollout import (
    ConversationResult,
    EnvFactory,
    PolicyError,
    RolloutConfig,
    RolloutObserver,
    RunGuard,
    build_policies,
    busy_retries,
    conversation_outcome,
    environment_factory,
    is_connection_failure,
    prepare_conversation,
    record_failure,
)
from josh_core.llm.specs import in_process_kinds, split_spec
from josh_core.redact import redact, url_secrets
from josh_core.rollout.options import run_option
from josh_core.search.engine import JoshSearch, StepEvent
from josh_core.search.tree import ConversationTree, Node
from josh_core.storage import writes
from josh_core.storage.db import Database, DatabaseBusy, lock_timeout
from josh_core.storage.models import ConversationRecord

log = logging.getLogger(__name__)

LOCAL = "local"  # `--ray` alone: Ray's own default (RAY_ADDRESS if set, else a new local instance)
FORWARDED_ENV_PREFIXES = ("JOSH_", "OPENAI_")  # the driver's settings the workers get too


def loads_a_model(spec: str) -> bool:
    """Whether a SPEC's model runs in the process that builds it (its backend's registration,
    llm/specs.py): a worker that plays it asks Ray for a GPU when the cluster has one."""
    try:
        kind, _ = split_spec(spec)
    except ValueError:
        return False
    return kind in in_process_kinds()


def ray_retries() -> int:
    """Worker deaths a conversation survives (it is replayed from its start after each)."""
    return max(0, int(os.environ.get("JOSH_RAY_RETRIES", "3")))


def worker_timeout() -> float:
    """Seconds the driver waits with no worker alive (none started yet, or all dead) before it
    gives up: the first worker must be up by then, and a run whose workers all died stops."""
    return float(os.environ.get("JOSH_RAY_WORKER_TIMEOUT", "600"))


@dataclass
class RayOptions:
    """Where and how a run is spread over Ray. None of it changes the trees, so none of it is
    stored with the run: a resume may use other workers, or none.

    address: "local" (or None): Ray's default, RAY_ADDRESS if set, else a Ray instance started in
      this process; "auto": the cluster this machine belongs to; "HOST:PORT": a cluster's head.
    workers: how many actors (default: one per GPU for in-process models on a cluster with
      GPUs, else one per endpoint, else one per `num_cpus` CPUs of the cluster).
    endpoints: OpenAI-compatible base URLs (e.g. several `vllm serve`); worker i plays against
      endpoints[i % len(endpoints)] instead of the run's base URL.
    num_cpus / num_gpus: what each worker reserves (num_gpus None: 1 for in-process models when
      the cluster has GPUs, else 0).
    """

    address: str | None = LOCAL
    workers: int | None = None
    endpoints: list[str] = field(default_factory=list)
    num_cpus: float = 1.0
    num_gpus: float | None = None

    def __post_init__(self) -> None:
        problem = run_option("ray_workers").problem(self.workers)  # its bounds: rollout/options.py
        if problem:
            raise ValueError(problem)
        if self.num_cpus < 0 or (self.num_gpus is not None and self.num_gpus < 0):
            raise ValueError("worker resources cannot be negative")
        self.endpoints = [e.strip() for e in self.endpoints if e and e.strip()]

    def player(self, config: RolloutConfig, make_env: EnvFactory | None = None) -> RayPlayer:
        """The run's Player (`josh_core.rollout.player`): `start_run(..., ray=options)` and
        `resume_run` build it once the configuration is known, and close it."""
        return RayPlayer(self, config, make_env)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as error:  # pragma: no cover - the [ray] extra is installed in CI
        raise RayUnavailable(
            "--ray needs Ray: pip install -e '.[ray]' (on the driver and on every node)"
        ) from error
    return ray


def _worker_lost_errors() -> tuple[type[BaseException], ...]:
    """The Ray errors that mean a worker (or its node) is gone, not that the conversation broke."""
    import ray.exceptions as rex

    names = ("RayActorError", "WorkerCrashedError", "NodeDiedError", "ObjectLostError",
             "OwnerDiedError", "LocalRayletDiedError", "RaySystemError")  # fmt: skip
    return tuple(getattr(rex, name) for name in names if hasattr(rex, name))


# -- the worker -------------------------------------------------------------------------------


class _StepShipper:
    """The search's TreeSink on a worker: collects a step's nodes and turns the step into a
    record the driver can write (snapshots: nodes change status in later steps)."""

    def __init__(self) -> None:
        self._created: list[Node] = []
        self._events_sent = 0

    async def node_created(self, node: Node) -> None:
        self._created.append(node)

    async def step_done(self, tree: ConversationTree, event: StepEvent) -> None:
        pass  # the worker's play loop takes the record after each step

    def record(self, tree: ConversationTree, event: StepEvent) -> dict[str, Any]:
        created, self._created = self._created, []
        new_events = tree.reward_events[self._events_sent :]
        self._events_sent = len(tree.reward_events)
        changed = {nid: tree.nodes[nid].status for nid in [*event.pruned, *event.ended]}
        return {
            "kind": "step",
            "event": event.model_copy(deep=True),
            "nodes": [node.model_copy(deep=True) for node in created],
            "statuses": changed,
            "reward_events": [e.model_copy(deep=True) for e in new_events],
            "tree": {
                "reward": tree.reward, "step": tree.step, "done": tree.done, "stop_reason": tree.stop_reason,
                "remaining_goals": list(tree.remaining_goals), "roots": list(tree.roots),
                "leaves": list(tree.leaves),
            },  # fmt: skip
        }


class RolloutWorker:
    """A Ray actor that holds one agent and user (one model backend) and plays conversations.

    Wrapped with `ray.remote` when a run starts, so this module imports without Ray."""

    def __init__(self, name: str, config: dict[str, Any], make_env: EnvFactory | None, base_url: str | None):
        self.name = name
        self.error: str | None = None
        self.agent = self.user = None
        try:
            built = RolloutConfig.model_validate(config)
            if base_url:
                built = built.model_copy(update={"base_url": base_url})
            self.config = built
            self.make_env = make_env or environment_factory(built)
            self.agent, self.user = build_policies(built)
        except Exception as error:  # noqa: BLE001 - told to the driver by info()
            self.error = " ".join(str(error).split()) or type(error).__name__

    def info(self) -> dict[str, Any]:
        import ray

        context = ray.get_runtime_context()
        try:
            gpus = [str(g) for g in context.get_accelerator_ids().get("GPU", [])]
        except Exception:  # noqa: BLE001 - informational
            gpus = []
        return {
            "name": self.name, "pid": os.getpid(), "host": socket.gethostname(),
            "ip": ray.util.get_node_ip_address(), "node_id": context.get_node_id(), "gpus": gpus,
            "agent_name": getattr(self.agent, "name", None), "user_name": getattr(self.user, "name", None),
            "error": self.error,
        }  # fmt: skip

    async def play(self, record: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Play one conversation from its start, yielding its start, every step and its end
        (or the error that ended it)."""
        start = time.perf_counter()
        try:
            conversation = ConversationRecord.model_validate(record)
            prepared = prepare_conversation(conversation, self.config, self.agent, self.make_env)
            yield {
                "kind": "start", "scenario_id": prepared.scenario.id,
                "max_depth": prepared.search_config.max_depth, "stored": prepared.stored,
            }  # fmt: skip
            shipper = _StepShipper()
            search = JoshSearch(
                self.agent, self.user, prepared.env,
                config=prepared.search_config, conversation_id=conversation.id,
                scenario=prepared.scenario, sink=shipper,
            )  # fmt: skip
            while not search.done:
                event = await search.step()
                yield shipper.record(search.tree, event)
            score, reward, success = conversation_outcome(self.config, prepared.env, search.tree)
            yield {
                "kind": "end", "score": score, "reward": reward, "success": success,
                "nodes": len(search.tree.nodes), "seconds": time.perf_counter() - start,
            }  # fmt: skip
        except Exception as error:  # one broken conversation fails alone, as in a local run
            yield {
                "kind": "error", "error": f"{type(error).__name__}: {error}", "trace": traceback.format_exc(),
                "connection_failure": is_connection_failure(error),
            }  # fmt: skip


# -- the driver -------------------------------------------------------------------------------


class _Mirror:
    """The driver's copy of a worker's tree, rebuilt from its step records, so that the
    storage functions (TreeWriter, finish_conversation) see the tree they see in a local run."""

    def __init__(self, conversation_id: str, goals: list[str]):
        self.tree = ConversationTree(conversation_id=conversation_id, goal_ids=list(goals),
                                     remaining_goals=list(goals))

    def apply(self, step: dict[str, Any]) -> list[Node]:
        tree = self.tree
        for node in step["nodes"]:
            tree.add(node)
        for nid, status in step["statuses"].items():
            tree.nodes[nid].status = status
        tree.reward_events.extend(step["reward_events"])
        for name, value in step["tree"].items():
            setattr(tree, name, value)
        return step["nodes"]


@dataclass
class _Worker:
    index: int
    actor: Any
    endpoint: str | None
    ready: Any = None  # the ObjectRef of its info() call
    info: dict[str, Any] | None = None
    alive: bool = False  # ready and not lost
    lost: bool = False

    @property
    def label(self) -> str:
        info = self.info or {}
        node = str(info.get("node_id") or "")[:8]
        where = f" on {info.get('ip')} (node {node}, pid {info.get('pid')})" if info else ""
        return f"w{self.index}{where}"


@dataclass
class _Attempt:
    status: str  # "done" | "failed" | "lost" (the worker died)
    worker: _Worker
    error: str | None = None
    trace: str = ""
    exception: BaseException | None = None
    connection_failure: bool = False
    end: dict[str, Any] | None = None
    tree: ConversationTree | None = None


class RayPlayer:
    """A Player (`josh_core.rollout.player`) on Ray workers (see the module docstring). Start it before
    the run is recorded (`names` are the policies' names, from the first worker), `play_all`
    inside the run's lock, and `close` it afterwards."""

    def __init__(self, options: RayOptions, config: RolloutConfig, make_env: EnvFactory | None = None):
        self.options = options
        self.config = config
        self.make_env = make_env
        check_reachable(options.address)  # before Ray, which retries a closed port for ever
        self.ray = _import_ray()
        self._owns_ray = False
        self._connect()
        self.workers: list[_Worker] = []
        self._next_index = 1
        self._remote_class = self.ray.remote(RolloutWorker)
        try:
            count, self._resources = self._plan()
            self.count = count
            for _ in range(count):
                self._spawn()
            first = self._wait_first()
        except BaseException:
            self.close()
            raise
        self.names = (first.info or {}).get("agent_name"), (first.info or {}).get("user_name")

    # -- cluster ------------------------------------------------------------------------------

    def _connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return
        address = self.options.address
        kwargs: dict[str, Any] = dict(log_to_driver=False, logging_level=logging.WARNING,
                                      configure_logging=True)  # fmt: skip
        env_vars = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES)}
        if env_vars:
            kwargs["runtime_env"] = {"env_vars": env_vars}
        if address in (None, "", LOCAL):
            kwargs["include_dashboard"] = False
            address = None
        else:
            _join_with_token()
        try:
            ray.init(address=address, **kwargs)
        except Exception as error:
            shown = address or "a local Ray instance"
            raise RayUnavailable(f"--ray {shown}: {' '.join(str(error).split())}") from error
        self._owns_ray = True

    def _plan(self) -> tuple[int, dict[str, float]]:
        """How many workers, and what each reserves."""
        resources = self.ray.cluster_resources()
        cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
        wants_gpu = loads_a_model(self.config.agent) or (self.config.user.startswith("llm:")
                                                           and loads_a_model(self.config.user[len("llm:"):]))
        num_gpus = self.options.num_gpus
        if num_gpus is None:
            num_gpus = 1.0 if wants_gpu and gpus >= 1 else 0.0
        num_cpus = self.options.num_cpus
        count = self.options.workers
        if count is None:
            if num_gpus > 0:
                count = int(gpus // num_gpus)
            elif self.options.endpoints:
                count = len(self.options.endpoints)
            else:
                count = int(cpus // num_cpus) if num_cpus > 0 else 1
        count = max(1, count)
        return count, {"num_cpus": num_cpus, "num_gpus": num_gpus}

    def _spawn(self) -> _Worker:
        index = self._next_index
        self._next_index += 1
        endpoints = self.options.endpoints
        endpoint = endpoints[(index - 1) % len(endpoints)] if endpoints else None
        # A conversation per concurrency slot, plus the info() calls.
        actor = self._remote_class.options(
            max_restarts=0, max_concurrency=max(2, self.config.concurrency + 1), **self._resources,
        ).remote(f"w{index}", self.config.model_dump(mode="json"), self.make_env, endpoint)  # fmt: skip
        worker = _Worker(index=index, actor=actor, endpoint=endpoint)
        worker.ready = actor.info.remote()
        self.workers.append(worker)
        return worker

    def _wait_first(self) -> _Worker:
        """Block until one worker is up (it built the policies: their names go with the run);
        a SPEC the workers cannot build is a PolicyError, as in a local run."""
        ray = self.ray
        deadline = time.monotonic() + worker_timeout()
        pending = {w.ready: w for w in self.workers}
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            done, _ = ray.wait(list(pending), num_returns=1, timeout=min(left, 5.0))
            for ref in done:
                worker = pending.pop(ref)
                try:
                    worker.info = ray.get(ref)
                except _worker_lost_errors() as error:
                    worker.lost = True
                    log.warning("Ray worker w%d did not start: %s", worker.index, error)
                    continue
                if worker.info.get("error"):
                    raise PolicyError(redact(worker.info["error"], url_secrets(self.config.base_url)))
                worker.alive = True
                return worker
        res = self.ray.cluster_resources()
        raise RayUnavailable(
            f"no Ray worker started within {worker_timeout():.0f} s (JOSH_RAY_WORKER_TIMEOUT): each asks for "
            f"{self._resources['num_cpus']:g} CPU and {self._resources['num_gpus']:g} GPU; the cluster has "
            f"{res.get('CPU', 0):g} CPU and {res.get('GPU', 0):g} GPU"
        )

    def close(self) -> None:
        """Stop the workers (and the Ray instance this process started)."""
        ray = self.ray
        for worker in getattr(self, "workers", []):
            try:
                ray.kill(worker.actor)
            except Exception:  # noqa: BLE001 - already gone
                pass
        if self._owns_ray:
            try:
                ray.shutdown()
            except Exception:  # noqa: BLE001
                log.warning("ray.shutdown failed", exc_info=True)
            self._owns_ray = False

    # -- playing ------------------------------------------------------------------------------

    async def play_all(
        self,
        db: Database,
        config: RolloutConfig,
        observer: RolloutObserver,
        todo: list[ConversationRecord],
    ) -> tuple[list[ConversationResult], str | None]:
        """Play `todo` on the workers; the Player contract (`josh_core.rollout.player`), as a
        local run's `LocalPlayer`."""
        self.db, self.observer = db, observer
        # One entry per free conversation slot of a live worker; None wakes the waiters once
        # the run stops. Waiters are served in order, so conversations start in run order.
        self.pool: asyncio.Queue[_Worker | None] = asyncio.Queue()
        self.stopped: str | None = None
        self._replacements = 0
        self._starting: set[asyncio.Task] = set()
        for worker in self.workers:
            if worker.alive:
                self._join(worker)
            elif not worker.lost:
                self._starting.add(asyncio.ensure_future(self._await_ready(worker)))
        guard = RunGuard()

        async def play(record: ConversationRecord) -> ConversationResult | None:
            result = await self._play_conversation(record)
            if result is None:
                return None
            why = guard.record(result)
            if why and not self.stopped:
                self._stop(why)
            return result

        watchdog = asyncio.ensure_future(self._watch())
        try:
            played = await asyncio.gather(*(play(record) for record in todo))
        finally:
            watchdog.cancel()
            for task in self._starting:
                task.cancel()
        return [r for r in played if r is not None], self.stopped

    def _stop(self, why: str) -> None:
        if not self.stopped:
            self.stopped = why
        self.pool.put_nowait(None)

    async def _watch(self) -> None:
        """Stop the run when no worker has been alive for `worker_timeout()` seconds."""
        since: float | None = None
        while not self.stopped:
            await asyncio.sleep(1.0)
            if any(w.alive for w in self.workers):
                since = None
            elif since is None:
                since = time.monotonic()
            elif time.monotonic() - since > worker_timeout():
                self._stop(f"no Ray worker alive for {worker_timeout():.0f} s (JOSH_RAY_WORKER_TIMEOUT); "
                           "resume the run once the cluster has room for workers")  # fmt: skip

    def _join(self, worker: _Worker) -> None:
        worker.alive = True
        self.observer.worker_status(worker.label, "ready")
        for _ in range(max(1, self.config.concurrency)):
            self.pool.put_nowait(worker)

    async def _await_ready(self, worker: _Worker) -> None:
        try:
            worker.info = await worker.ready
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - a worker that cannot start is left out
            worker.lost = True
            log.warning("Ray worker w%d did not start: %s", worker.index, error)
            self.observer.worker_status(f"w{worker.index}", f"did not start: {error}")
            return
        if worker.info.get("error"):
            worker.lost = True
            self.observer.worker_status(worker.label, f"could not build the policies: {worker.info['error']}")
            return
        self._join(worker)

    def _lose(self, worker: _Worker, why: str) -> None:
        """A worker died: leave it out and start a replacement where the cluster has room."""
        if worker.lost:
            return
        worker.lost, worker.alive = True, False
        log.warning("Ray worker %s lost: %s", worker.label, why)
        self.observer.worker_status(worker.label, "lost")
        try:
            self.ray.kill(worker.actor)
        except Exception:  # noqa: BLE001 - already gone
            pass
        if self._replacements < 2 * self.count + 4:
            self._replacements += 1
            replacement = self._spawn()
            self._starting.add(asyncio.ensure_future(self._await_ready(replacement)))

    async def _acquire(self) -> _Worker | None:
        """A free slot of a live worker, in turn (None once the run stopped: nothing new starts)."""
        while True:
            worker = await self.pool.get()
            if self.stopped:
                self.pool.put_nowait(worker)  # pass it on: every waiter learns the run stopped
                return None
            if worker is not None and worker.alive:
                return worker

    async def _play_conversation(self, record: ConversationRecord) -> ConversationResult | None:
        """Play one conversation to its end on some worker, again on another if one dies."""
        start = time.perf_counter()
        deaths, busy, attempts = 0, 0, 0
        while True:
            worker = await self._acquire()
            if worker is None:
                return None  # stopped: the conversation stays pending for a resume
            attempts += 1
            try:
                attempt = await self._attempt(worker, record, start)
            finally:
                if worker.alive:
                    self.pool.put_nowait(worker)
            if attempt.status == "lost":
                deaths += 1
                self._lose(worker, attempt.error or "lost")
                if deaths <= ray_retries():
                    self.observer.worker_status(worker.label, f"lost while playing {record.scenario_id}; "
                                                "it restarts on another worker")  # fmt: skip
                    continue
                attempt.error = f"{deaths} workers died while playing it (JOSH_RAY_RETRIES={ray_retries()}): {attempt.error}"
            elif attempt.status == "failed" and isinstance(attempt.exception, DatabaseBusy) and busy < busy_retries():
                busy += 1
                log.warning("%s: database locked (%s); attempt %d in %.1f s", record.id, attempt.error,
                            attempts + 1, lock_timeout())  # fmt: skip
                await asyncio.sleep(lock_timeout())
                continue
            break
        result = ConversationResult(
            conversation_id=record.id, position=record.position, scenario_id=record.scenario_id,
            status="failed", attempts=attempts, seconds=time.perf_counter() - start,
        )  # fmt: skip
        if attempt.status == "done":
            tree, end = attempt.tree, attempt.end
            result = result.model_copy(update=dict(
                status="done", reward=end["reward"], success=end["success"], stop_reason=tree.stop_reason,
                nodes=len(tree.nodes),
            ))  # fmt: skip
        else:
            result.error = attempt.error
            await record_failure(self.db, result, attempt.exception, attempt.trace, self.config.base_url,
                                 connection_failure=attempt.connection_failure)  # fmt: skip
        self.observer.conversation_finished(result)
        return result

    async def _attempt(self, worker: _Worker, record: ConversationRecord, start: float) -> _Attempt:
        """One attempt on one worker: write what it reports as it reports it."""
        db, observer = self.db, self.observer
        stream = worker.actor.play.remote(record.model_dump(mode="json"))
        writer: writes.TreeWriter | None = None
        mirror: _Mirror | None = None
        try:
            async for ref in stream:
                message = await ref
                kind = message["kind"]
                if kind == "start":
                    await asyncio.to_thread(writes.start_conversation, db, record.id, worker=worker.label,
                                            **message["stored"])  # fmt: skip
                    observer.conversation_started(record.id, message["scenario_id"], message["max_depth"])
                    observer.conversation_worker(record.id, worker.label)
                    mirror = _Mirror(record.id, message["stored"]["goals"])
                    writer = writes.TreeWriter(db)
                elif kind == "step":
                    assert mirror is not None and writer is not None, "a step before the start"
                    for node in mirror.apply(message):
                        await writer.node_created(node)
                    await writer.step_done(mirror.tree, message["event"])
                    observer.step(record.id, message["event"])
                elif kind == "end":
                    assert mirror is not None and writer is not None, "an end before the start"
                    await writer.flush()
                    tree = mirror.tree
                    if message["nodes"] != len(tree.nodes) or not tree.done:
                        raise RuntimeError(f"the driver's copy of {record.id} differs from the worker's tree "
                                           f"({len(tree.nodes)} nodes, worker {message['nodes']})")  # fmt: skip
                    await asyncio.to_thread(
                        writes.finish_conversation, db, tree, seconds=time.perf_counter() - start,
                        score=message["score"], reward=message["reward"], success=message["success"],
                    )  # fmt: skip
                    return _Attempt("done", worker, end=message, tree=tree)
                elif kind == "error":
                    return _Attempt("failed", worker, error=message["error"], trace=message["trace"],
                                    connection_failure=message["connection_failure"])  # fmt: skip
            raise RuntimeError("the worker's stream ended without the conversation's end")
        except _worker_lost_errors() as error:
            return _Attempt("lost", worker, error=f"{type(error).__name__}: {_first_line(error)}")
        except Exception as error:  # a write that failed (database locked, disk), or a bug
            self._cancel(stream)
            return _Attempt("failed", worker, error=f"{type(error).__name__}: {error}",
                            trace=traceback.format_exc(), exception=error)  # fmt: skip
        except BaseException:  # interrupted (SIGINT / SIGTERM, cancelled): stop the worker's part
            self._cancel(stream)
            raise
        finally:
            if writer is not None:
                try:
                    await writer.flush()
                except Exception:  # noqa: BLE001 - the attempt's outcome is already decided
                    pass

    def _cancel(self, stream: Any) -> None:
        try:
            self.ray.cancel(stream)
        except Exception:  # noqa: BLE001 - finished or gone
            pass


def connect_timeout() -> float:
    """Seconds to wait for a cluster's head (`--ray HOST:PORT`) to accept a connection."""
    return float(os.environ.get("JOSH_RAY_CONNECT_TIMEOUT", "15"))


def check_reachable(address: str | None) -> None:
    """RayUnavailable unless the head of `--ray HOST:PORT` (or `ray://HOST:PORT`) accepts a
    TCP connection within `connect_timeout()`: `ray.init` itself retries a closed or
    unreachable port without end. "local" and "auto" are left to Ray (nothing to dial yet)."""
    if address in (None, "", LOCAL, "auto"):
        return
    target = address.split("://", 1)[1] if "://" in address else address
    host, sep, port_text = target.rstrip("/").rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise RayUnavailable(f"--ray {address!r}: expected HOST:PORT (a cluster head), auto, or nothing")
    timeout = connect_timeout()
    try:
        with socket.create_connection((host, int(port_text)), timeout=timeout):
            pass
    except socket.timeout:
        raise RayUnavailable(f"--ray {address}: no answer from the cluster head within {timeout:g} s "
                             "(JOSH_RAY_CONNECT_TIMEOUT); is `ray start --head` running there?") from None
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise RayUnavailable(f"--ray {address}: cannot reach the cluster head ({reason}); is `ray start "
                             "--head` running there?") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _join_with_token() -> None:
    """Before joining a cluster: `ray start --head` turns token authentication on when the
    machine has a token (~/.ray/auth_token or RAY_AUTH_TOKEN), and a driver must then present it,
    which Ray (2.60) does only when RAY_AUTH_MODE=token. Say so when a token is at hand, and make
    Ray, imported before, read the setting again (as its own `ray start` does)."""
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is None and _token_available():
        os.environ["RAY_AUTH_MODE"] = mode = "token"
    if mode == "token":
        try:
            from ray._raylet import Config

            Config.initialize("")
        except Exception:  # noqa: BLE001 - another Ray: its own rules apply
            log.debug("could not refresh Ray's configuration", exc_info=True)


def _token_available() -> bool:
    """Whether this machine has a Ray authentication token (env or ~/.ray/auth_token)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.join(os.path.expanduser("~"), ".ray", "auth_token")
    try:
        return os.path.getsize(path) > 0
    except OSError:
        return False
