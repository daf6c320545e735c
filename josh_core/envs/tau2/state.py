"""Database states that leaves of a tree can hold side by side.

A τ² database is a few tables of JSON records (retail: products, users, orders; airline:
flights, users, reservations), megabytes in all. A JOSH tree has up to `beam` leaves at once,
each with its own history of writes, so a state is the shared base tables (loaded once, never
changed) plus the records this state wrote (`DbState.overlay`, a few records). States are
values: applying a call makes a new state and leaves the old one as it was.

Tools see a `Transaction` over a state: `get` reads a record (read-only: it may be the shared
base object), `edit` gives a private copy that the tool may change in place, `put` adds a
record. `commit()` makes the new state; a tool that raises leaves nothing behind.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator
from typing import Any

Tables = dict[str, dict[str, Any]]


class DbState:
    """Base tables (shared, never changed) + this state's own records (by table and key)."""

    __slots__ = ("base", "overlay")

    def __init__(self, base: Tables, overlay: Tables | None = None):
        self.base = base
        self.overlay: Tables = overlay or {}

    def get(self, table: str, key: str) -> Any:
        own = self.overlay.get(table)
        if own is not None and key in own:
            return own[key]
        return self.base[table].get(key)

    def keys(self, table: str) -> list[str]:
        keys = list(self.base[table])
        own = self.overlay.get(table)
        if own:
            keys += [k for k in own if k not in self.base[table]]
        return keys

    def changed(self) -> set[tuple[str, str]]:
        """(table, key) of every record this state holds apart from the base."""
        return {(table, key) for table, records in self.overlay.items() for key in records}

    def diff(self, other: DbState) -> list[tuple[str, str]]:
        """Records that differ between two states over the same base, sorted."""
        if other.base is not self.base:
            raise ValueError("states over different bases cannot be compared record by record")
        return sorted(k for k in self.changed() | other.changed() if self.get(*k) != other.get(*k))

    def same_as(self, other: DbState) -> bool:
        return not self.diff(other)

    def digest(self) -> str:
        """A hash of the records that differ from the base (equal states, equal digests)."""
        changed = sorted(k for k in self.changed() if self.get(*k) != self.base[k[0]].get(k[1]))
        payload = [[t, k, self.get(t, k)] for t, k in changed]
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def materialize(self) -> Tables:
        """The whole database as plain dicts (a copy; for tests and exports)."""
        return {table: {key: copy.deepcopy(self.get(table, key)) for key in self.keys(table)}
                for table in self.base}


class Transaction:
    """One tool call's view of a state; `commit()` makes the state after it."""

    def __init__(self, state: DbState):
        self.state = state
        self._writes: Tables = {}

    def get(self, table: str, key: str) -> Any:
        """The record, or None. Read-only: use `edit` to change it."""
        own = self._writes.get(table)
        if own is not None and key in own:
            return own[key]
        return self.state.get(table, key)

    def edit(self, table: str, key: str) -> Any:
        """A private copy of the record, registered as written; change it in place."""
        own = self._writes.setdefault(table, {})
        if key not in own:
            record = self.state.get(table, key)
            if record is None:
                raise KeyError(f"{table}/{key}")
            own[key] = copy.deepcopy(record)
        return own[key]

    def put(self, table: str, key: str, record: Any) -> None:
        self._writes.setdefault(table, {})[key] = record

    def keys(self, table: str) -> list[str]:
        keys = self.state.keys(table)
        own = self._writes.get(table)
        if own:
            known = set(keys)
            keys += [k for k in own if k not in known]
        return keys

    def values(self, table: str) -> Iterator[Any]:
        for key in self.keys(table):
            yield self.get(table, key)

    @property
    def wrote(self) -> bool:
        return any(self._writes.values())

    def commit(self) -> DbState:
        if not self.wrote:
            return self.state
        overlay = {table: dict(records) for table, records in self.state.overlay.items()}
        for table, records in self._writes.items():
            overlay.setdefault(table, {}).update(records)
        return DbState(self.state.base, overlay)
