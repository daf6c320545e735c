"""What a run survives (josh_core/rollout/__init__.py lists it): interrupts, database locks
held too long, dead endpoints, a full disk; shared by the local and the distributed player."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from josh_core.redact import redact, url_secrets
from josh_core.rollout.results import ConversationResult
from josh_core.storage import writes
from josh_core.storage.db import Database, DatabaseBusy, DatabaseFull, lock_timeout

T = TypeVar("T")

log = logging.getLogger(__name__)


class RunInterrupted(BaseException):
    """The process was asked to stop (SIGTERM) while a run was played."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


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


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
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


def run_interruptibly(coro: Coroutine[Any, Any, T]) -> T:
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


def retry_busy(fn: Callable[[], Any], attempts: int = 5) -> Any:
    """Call `fn`, again after a pause while the database stays locked (DatabaseBusy)."""
    for attempt in range(attempts):
        try:
            return fn()
        except DatabaseBusy:
            if attempt == attempts - 1:
                raise
            time.sleep(min(lock_timeout(), 5.0))
    return None  # pragma: no cover


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
        await asyncio.to_thread(retry_busy, lambda: writes.fail_conversation(db, result.conversation_id, stored))
    except Exception as record_error:  # noqa: BLE001 - never end the run over a failure record
        log.warning("%s: could not record the failure: %s", result.conversation_id, record_error)
        result.error = f"{result.error} (not recorded: {record_error})"
        if is_storage_failure(record_error):
            result.storage_failure, result.status = True, "stopped"
