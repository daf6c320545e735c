"""One process per run: an advisory file lock held while a run is being played.

Two processes playing the same run (a `--resume` started while the first is still going)
would each replay the unfinished conversations and overwrite each other's nodes. The lock is
an OS file lock (`flock`), so the kernel releases it when its process dies, even on SIGKILL:
resuming after a crash never finds a stale lock. Lock files live in the cache (keyed by the
database's absolute path), not beside the user's database. Without `fcntl` (Windows) runs are
not locked.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from josh_core.paths import cache_root

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class RunBusy(RuntimeError):
    """Another process is playing this run."""


def lock_path(db_path: str | Path, run_id: str) -> Path:
    digest = hashlib.sha1(str(Path(db_path).resolve()).encode()).hexdigest()[:16]
    safe_run = re.sub(r"[^A-Za-z0-9._-]", "_", run_id)
    return cache_root() / "locks" / f"{digest}-{safe_run}.lock"


@contextmanager
def exclusive_lock(path: Path, busy: Callable[[str], Exception]) -> Iterator[None]:
    """Hold an OS file lock on `path` for the block, writing our process into it; when another
    process holds it, raise `busy(owner)` (owner: what that process wrote). The kernel releases
    the lock when its process dies. Without `fcntl` (Windows) nothing is locked."""
    if fcntl is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise busy(owner) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()}".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def lock_is_held(path: Path) -> bool:
    """True while some process holds the lock on `path` (False when there is no lock file)."""
    if fcntl is None:
        return True  # cannot tell: assume alive
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


@contextmanager
def run_lock(db_path: str | Path, run_id: str) -> Iterator[None]:
    """Hold the run's lock for the block; raises RunBusy if another process holds it."""
    busy = lambda owner: RunBusy(  # noqa: E731
        f"run {run_id} is being played by {owner}; wait for it to finish or stop it, then resume")
    with exclusive_lock(lock_path(db_path, run_id), busy):
        yield
