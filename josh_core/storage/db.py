"""DuckDB access: the one place that opens database files.

Concurrency strategy. DuckDB lets one process hold a database file open for writing and then
refuses every other process, readers included, until it lets go. A rollout writes for hours
while the app (another process) must read the same file. So nobody keeps a file open:

- Each process keeps one in-memory DuckDB instance (building an instance costs ~30-60 ms of
  catalog setup, so we never build one per operation) and ATTACHes the file for one operation:
  a write batch (one transaction) or a read, then DETACHes it, which releases the file lock.
  Attach + detach costs about a millisecond.
- Writes are batched: the search's nodes that finish together are written in one transaction
  (`TreeWriter` in writes.py group-commits concurrent nodes), so the file is held for
  milliseconds per batch (a batch of one phase's nodes costs ~25-30 ms all told here).
- Whoever finds the file locked by another process retries every 1-3 ms (random) for up to
  `JOSH_DB_LOCK_TIMEOUT` seconds (default 60), then fails with `DatabaseBusy`. The retries are
  short on purpose: a writer running fast policies leaves gaps of only a few milliseconds
  between batches, and a reader with exponential backoff was starved for a second at a time.
- Detach does not checkpoint; committed transactions live in the WAL, which DuckDB replays on
  the next attach (a killed writer loses nothing committed). Replaying a WAL full of node rows
  costs more with every batch, a checkpoint ~25 ms, so a writer checkpoints whenever the WAL
  passes `CHECKPOINT_WAL_BYTES` (16 KiB measured best: 1.3 s for a 213-node tree, against
  2.9 s checkpointing every batch and 3.2 s at 256 KiB) and at the end of each conversation.
- Within a process a lock serialises operations on the shared instance (threads, the app's
  sessions, the async writer).

Schema guard. A database records its schema version (`schema_migrations`). A handle opened
for writing migrates a database older than the code (`LATEST_VERSION`, the last of
`MIGRATIONS`); every handle refuses a database newer than the code (`SchemaTooNew`) and a
DuckDB file that holds other tables but no JOSH schema (`NotAJoshDatabase`), before reading or
writing anything. A `read_only` handle (the read commands: export, metrics, errors,
leaderboard) never writes: it reads an older schema as it is and refuses a file with no JOSH
schema at all. Files DuckDB cannot open (not DuckDB, empty) and files that cannot be written
raise `DatabaseError` subclasses with a plain message instead of DuckDB's exceptions.

bench/bench_engine.py measures the cost (bench/results/engine.md).
"""

from __future__ import annotations

import errno
import os
import random
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import duckdb

from josh_core.storage.schema import LATEST_VERSION, current_version, migrate

T = TypeVar("T")

CHECKPOINT_WAL_BYTES = 16 * 1024
_ALIAS = "josh"

_instance_lock = threading.RLock()
_instance: duckdb.DuckDBPyConnection | None = None


class DatabaseError(RuntimeError):
    """A database file the workbench cannot use; the message says why, for people."""


class DatabaseBusy(DatabaseError):
    """Another process kept the database file locked for longer than the lock timeout."""


class NotAJoshDatabase(DatabaseError):
    """The file is not a DuckDB database, is empty, or holds no JOSH schema."""


class BlankDatabase(NotAJoshDatabase):
    """A DuckDB file holding no tables at all: a JOSH schema could be created in it, but a
    read-only handle leaves it as it is."""


class SchemaTooNew(DatabaseError):
    """The database was written by a newer version of the workbench than this code."""


class DatabaseReadOnly(DatabaseError):
    """The database file (or its folder) cannot be written."""


class DatabaseFull(DatabaseError):
    """The disk holding the database is full (ENOSPC): nothing more can be written until
    space is freed. Committed transactions are kept; a run stops and resumes later."""


def _is_disk_full(error: BaseException) -> bool:
    """Whether an error (or one it came from) is a full disk or quota."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(current).lower()
        if "no space left on device" in text or "disk quota exceeded" in text:
            return True
        current = current.__cause__ or current.__context__
    return False


class DatabaseDamaged(DatabaseError):
    """The file is a DuckDB database that cannot be read to its end (truncated, corrupted)."""


# DuckDB's words for a file it cannot read through (a truncated copy, a damaged block).
_DAMAGE_WORDS = ("could not read enough bytes", "corrupt", "checksum", "has been invalidated",
                 "checkpoint failed", "failed to read", "invalid block")  # fmt: skip


def _damaged_error(path: Path, error: BaseException) -> DatabaseError | None:
    """A plain error for a DuckDB failure that means the file is damaged (None: another kind)."""
    text = " ".join(str(error).split())
    if not isinstance(error, (duckdb.IOException, duckdb.InternalException, duckdb.FatalException,
                              duckdb.SerializationException)) and "corrupt" not in text.lower():
        return None
    if not any(word in text.lower() for word in _DAMAGE_WORDS):
        return None
    return DatabaseDamaged(f"{path} is damaged or truncated and cannot be read ({text[:200]}); "
                           "restore it from a copy or give another --db")


_DUCKDB_HEADERS = 3 * 4096  # the main header and two database headers


def truncated_file_problem(path: Path) -> str | None:
    """What is wrong with a DuckDB file cut short (a truncated copy), or None. A DuckDB file is
    its 12 KiB of headers and whole storage blocks (the block size is in its header), so a file
    that ends inside a block is damaged. The header's block count is no test: DuckDB trims free
    blocks at the end of the file. A copy cut exactly at a block boundary passes. Only for a
    file no one is writing (a concurrent writer extends the file block by block)."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(_DUCKDB_HEADERS)
    except OSError:
        return None  # missing or unreadable: opening it reports that
    if len(head) < _DUCKDB_HEADERS or head[8:12] != b"DUCK":
        return None  # not DuckDB, or empty: opening it says so
    headers = [struct.unpack_from("<QqqQQ", head, offset + 8) for offset in (4096, 8192)]
    block_size = max(headers)[4]  # the header of the latest iteration
    if not (4096 <= block_size <= 1 << 30) or block_size & (block_size - 1):
        return None  # a layout we do not know: leave it to DuckDB
    if (size - _DUCKDB_HEADERS) % block_size:
        return f"{path} is truncated: its {size} bytes end inside a {block_size}-byte storage block"
    return None


def _plain_error(path: Path, error: BaseException) -> DatabaseError | None:
    """The DatabaseError that says plainly what a DuckDB or OS error during an operation means
    (a full disk, a damaged file), or None when it is none of those."""
    if _is_disk_full(error):
        return _full_error(path, error)
    return _damaged_error(path, error)


def _full_error(path: Path, error: BaseException) -> DatabaseFull:
    return DatabaseFull(f"{path} cannot be written: the disk is full (no space left on device); free some space first")


def _drop_shared_instance() -> None:
    """Forget the shared instance after a fatal error (a failed checkpoint invalidates the
    attached file and DETACH then fails): the next operation builds a fresh one instead of
    meeting the stale attachment ("Unique file handle conflict")."""
    global _instance
    with _instance_lock:
        if _instance is not None:
            try:
                _instance.close()
            except duckdb.Error:
                pass
        _instance = None


def _shared_instance() -> duckdb.DuckDBPyConnection:
    global _instance
    if _instance is None:
        _instance = duckdb.connect(":memory:")
        try:
            # Newer DuckDB: do not checkpoint on every detach (we checkpoint by WAL size).
            _instance.execute("SET GLOBAL checkpoint_on_detach = 'DISABLED'")
        except duckdb.Error:
            pass  # older DuckDB checkpoints on detach: slower writes, same behaviour
    return _instance


def _is_lock_error(error: duckdb.Error) -> bool:
    text = str(error).lower()
    return "lock" in text and ("could not set" in text or "conflicting" in text)


def lock_timeout() -> float:
    return float(os.environ.get("JOSH_DB_LOCK_TIMEOUT", "60"))


def _open_error(path: Path, error: duckdb.Error, read_only: bool) -> DatabaseError:
    """A plain error for a file DuckDB could not attach (not a lock conflict)."""
    text = " ".join(str(error).split())  # DuckDB's messages span lines
    lowered = text.lower()
    if "not a valid duckdb database" in lowered:
        try:
            empty = path.stat().st_size == 0
        except OSError:
            empty = False
        what = "an empty file" if empty else "not a DuckDB database file"
        return NotAJoshDatabase(f"{path} is {what}, not a JOSH database; give another --db")
    if not read_only and any(
        word in lowered for word in ("permission denied", "read-only", "read only", "readonly")
    ):
        return DatabaseReadOnly(f"{path} cannot be written ({text})")
    return DatabaseError(f"{path} could not be opened: {text or type(error).__name__}")


def _schema_state(con: duckdb.DuckDBPyConnection, path: Path) -> int:
    """The attached database's schema version; raises for a foreign or too new database."""
    version = current_version(con)
    if version == 0:
        tables = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_catalog = current_database()"
        ).fetchone()[0]
        if tables:
            raise NotAJoshDatabase(f"{path} is a DuckDB file without the JOSH schema: not a JOSH database")
    if version > LATEST_VERSION:
        raise SchemaTooNew(
            f"{path} has schema version {version}, newer than this code's {LATEST_VERSION}: it was "
            "written by a newer JOSH Workbench; upgrade to read or write it"
        )
    return version


class Database:
    """A DuckDB file used through short attach/detach operations (see module docstring)."""

    def __init__(self, path: str | Path, *, read_only: bool = False, migrate: bool = True):
        """`read_only`: never write (refuse writes, never migrate). `migrate=False`: write
        into an existing JOSH database without creating or migrating its schema."""
        self.path = Path(path)
        self.read_only = read_only
        self.migrate = migrate and not read_only
        self._schema_checked = False  # read side: the version was checked
        self._write_checked = False  # write side: the schema was checked (and migrated)
        self.stats = {"writes": 0, "reads": 0, "lock_waits": 0, "checkpoints": 0}

    def __repr__(self) -> str:
        return f"Database({str(self.path)!r})"

    @property
    def wal_path(self) -> Path:
        return self.path.with_name(self.path.name + ".wal")

    @contextmanager
    def _attached(self, read_only: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        with _instance_lock:
            con = _shared_instance().cursor()
            options = " (READ_ONLY)" if read_only else ""
            # The path is data, but ATTACH takes no parameters: quote it as a SQL string.
            quoted = "'" + str(self.path).replace("'", "''") + "'"
            deadline = time.monotonic() + lock_timeout()
            while True:
                try:
                    con.execute(f"ATTACH {quoted} AS {_ALIAS}{options}")
                    break
                except duckdb.Error as error:
                    if not _is_lock_error(error):
                        con.close()
                        raise _open_error(self.path, error, read_only) from error
                    if time.monotonic() >= deadline:
                        con.close()
                        raise DatabaseBusy(
                            f"{self.path} stayed locked by another process for "
                            f"{lock_timeout():g} s: {' '.join(str(error).split())}"
                        ) from error
                    self.stats["lock_waits"] += 1
                    # Retry soon: a busy writer leaves gaps of a few milliseconds between
                    # batches, and a reader that backs off longer keeps missing them.
                    time.sleep(random.uniform(0.001, 0.003))
            failed = False
            try:
                con.execute(f"USE {_ALIAS}")
                yield con
            except BaseException:
                failed = True
                raise
            finally:
                try:
                    con.execute("USE memory")
                    con.execute(f"DETACH {_ALIAS}")
                except duckdb.Error:
                    _drop_shared_instance()  # the attachment is unusable: start afresh
                    if not failed:
                        raise  # nothing else is on its way out: this is the error to tell
                finally:
                    con.close()

    def write(self, fn: Callable[[duckdb.DuckDBPyConnection], T], checkpoint: bool = False) -> T:
        """Run `fn` in one write transaction (migrating the schema first if needed)."""
        if self.read_only:
            raise DatabaseReadOnly(f"{self.path} was opened read-only")
        if not self.path.parent.exists():
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise DatabaseReadOnly(f"{self.path.parent} cannot be created ({error.strerror})") from error
        try:
            return self._write(fn, checkpoint)
        except DatabaseError:
            raise
        except (duckdb.Error, OSError) as error:
            plain = _plain_error(self.path, error)
            if plain is not None:
                raise plain from error
            raise

    def _write(self, fn: Callable[[duckdb.DuckDBPyConnection], T], checkpoint: bool) -> T:
        with self._attached(read_only=False) as con:
            if not self._write_checked:
                version = _schema_state(con, self.path)
                if version < LATEST_VERSION:
                    if not self.migrate and version == 0:
                        raise NotAJoshDatabase(f"{self.path} holds no JOSH schema: not a JOSH database")
                    if self.migrate:
                        migrate(con)
                self._write_checked = self._schema_checked = True
            con.execute("BEGIN TRANSACTION")
            try:
                result = fn(con)
                con.execute("COMMIT")
            except BaseException:
                try:
                    con.execute("ROLLBACK")
                except duckdb.Error:
                    pass  # a failed COMMIT ends the transaction itself: its error is the one to tell
                raise
            self.stats["writes"] += 1
            if checkpoint or self._wal_size() > CHECKPOINT_WAL_BYTES:
                con.execute(f"CHECKPOINT {_ALIAS}")
                self.stats["checkpoints"] += 1
            return result

    def read(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run `fn` on a read-only attachment of the file."""
        if not self.path.exists():
            raise FileNotFoundError(f"no database at {self.path}")
        try:
            if not self._schema_checked:
                self._check_schema()
            with self._attached(read_only=True) as con:
                self.stats["reads"] += 1
                return fn(con)
        except DatabaseError:
            raise
        except duckdb.Error as error:
            plain = _damaged_error(self.path, error)
            if plain is not None:
                raise plain from error
            raise

    def ensure_schema(self) -> int:
        """Create or migrate the schema; returns the schema version."""
        return self.write(lambda con: current_version(con))

    def _check_schema(self) -> None:
        with self._attached(read_only=True) as con:
            version = _schema_state(con, self.path)
        if version == 0 and (self.read_only or not self.migrate):
            # (_schema_state has refused a file with other tables: this one holds none.)
            raise BlankDatabase(f"{self.path} holds no JOSH data: not a JOSH database")
        if version < LATEST_VERSION and self.migrate:
            self.ensure_schema()  # migrations need a write attachment
        self._schema_checked = True

    def _wal_size(self) -> int:
        try:
            return self.wal_path.stat().st_size
        except FileNotFoundError:
            return 0


def open_database(path: str | Path) -> Database:
    return Database(path)
