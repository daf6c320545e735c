"""The four MultiWOZ databases, indexed for cheap repeated queries.

Query semantics (shared by serving, scoring and goal generation): a row matches when every
given parameter equals the row's value after normalisation, except the train time bounds:
`leaveAt` keeps trains leaving strictly later than the value, `arriveBy` trains arriving
strictly earlier. Results keep database order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from josh_core.envs.toolwoz.normalize import normalize, parse_time

# Parameters compared as bounds rather than by equality: name -> direction.
TIME_BOUNDS: dict[str, dict[str, str]] = {"train": {"leaveAt": "after", "arriveBy": "before"}}


def entity_id_field(domain: str) -> str:
    """The field that names a bookable entity: `trainID` for trains, else `name`."""
    return "trainID" if domain == "train" else "name"


def clean_row(domain: str, row: dict[str, Any]) -> dict[str, Any]:
    """A database row as it is stored and served (the same cleaning for every source).

    Drops map coordinates, flattens hotel prices into single/double/family, and names the
    hotel booking flag `takesbookings` (convlab's copy calls it `n` for one hotel).
    """
    out = {key: value for key, value in row.items() if key != "location"}
    if domain == "hotel":
        if "n" in out and "takesbookings" not in out:
            out["takesbookings"] = out.pop("n")
        out.pop("n", None)
        prices = out.pop("price", None)
        if isinstance(prices, dict):
            for room in ("single", "double", "family"):
                if room in prices:
                    out[room] = prices[room]
    return out


class Database:
    """Rows per domain plus an inverted index per field (normalised value -> row indices)."""

    def __init__(self, tables: Mapping[str, list[dict[str, Any]]]):
        self.tables: dict[str, list[dict[str, Any]]] = {d: list(rows) for d, rows in tables.items()}
        self._norm_rows: dict[str, list[dict[str, str]]] = {}
        self._index: dict[str, dict[str, dict[str, frozenset[int]]]] = {}
        self._times: dict[str, dict[str, list[int | None]]] = {}
        self._by_id: dict[str, dict[str, list[int]]] = {}  # trainIDs repeat in MultiWOZ
        self._cache: dict[tuple[str, frozenset[tuple[str, str]]], tuple[int, ...]] = {}
        for domain, rows in self.tables.items():
            norm_rows = []
            index: dict[str, dict[str, set[int]]] = {}
            for i, row in enumerate(rows):
                norm = {
                    key: n
                    for key, value in row.items()
                    if isinstance(value, (str, int, float)) and (n := normalize(value)) is not None
                }
                norm_rows.append(norm)
                for key, value in norm.items():
                    index.setdefault(key, {}).setdefault(value, set()).add(i)
            self._norm_rows[domain] = norm_rows
            self._index[domain] = {
                key: {value: frozenset(ids) for value, ids in values.items()}
                for key, values in index.items()
            }
            self._times[domain] = {
                field: [parse_time(row.get(field, "")) for row in rows]
                for field in TIME_BOUNDS.get(domain, {})
            }
            id_field = entity_id_field(domain)
            self._by_id[domain] = {}
            for i, norm in enumerate(norm_rows):
                if id_field in norm:
                    self._by_id[domain].setdefault(norm[id_field], []).append(i)

    def query(self, domain: str, params: Mapping[str, str]) -> tuple[int, ...]:
        """Indices of the rows matching normalised `params` (see module doc), in DB order."""
        key = (domain, frozenset(params.items()))
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        bounds = TIME_BOUNDS.get(domain, {})
        candidates: set[int] | None = None
        equalities = sorted(
            ((k, v) for k, v in params.items() if k not in bounds),
            key=lambda kv: len(self._index[domain].get(kv[0], {}).get(kv[1], ())),
        )
        for field, value in equalities:
            ids = self._index[domain].get(field, {}).get(value, frozenset())
            candidates = set(ids) if candidates is None else candidates & ids
            if not candidates:
                break
        if candidates is None:
            candidates = set(range(len(self.tables[domain])))
        for field, direction in bounds.items():
            if field in params and candidates:
                limit = parse_time(params[field])
                times = self._times[domain][field]
                candidates = {
                    i for i in candidates if _within(times[i], limit, direction)
                }
        result = tuple(sorted(candidates))
        if len(self._cache) > 200_000:  # bound memory in very long runs
            self._cache.clear()
        self._cache[key] = result
        return result

    def matches(self, domain: str, params: Mapping[str, str], index: int) -> bool:
        """Whether row `index` satisfies normalised `params` (same rules as `query`)."""
        bounds = TIME_BOUNDS.get(domain, {})
        row = self._norm_rows[domain][index]
        for field, value in params.items():
            if field in bounds:
                if not _within(self._times[domain][field][index], parse_time(value), bounds[field]):
                    return False
            elif row.get(field) != value:
                return False
        return True

    def row(self, domain: str, index: int) -> dict[str, Any]:
        return self.tables[domain][index]

    def entity_id(self, domain: str, index: int) -> str:
        return str(self.tables[domain][index].get(entity_id_field(domain), ""))

    def norm_id(self, domain: str, index: int) -> str | None:
        """The normalised entity id of a row."""
        return self._norm_rows[domain][index].get(entity_id_field(domain))

    def rows_with_id(self, domain: str, norm_id: str) -> list[int]:
        """Rows whose normalised id is `norm_id`, in DB order."""
        return self._by_id[domain].get(norm_id, [])

    def find(self, domain: str, entity_id: str) -> int | None:
        """The first row whose id (name, or trainID) is `entity_id`, normalised."""
        norm = normalize(entity_id)
        rows = self._by_id[domain].get(norm, []) if norm is not None else []
        return rows[0] if rows else None

    def find_row(self, domain: str, row: Mapping[str, Any]) -> int | None:
        """The index of a row given its content (a served row). The MultiWOZ train table
        repeats some trainIDs on other routes, so the other fields decide between them."""
        norm = normalize(row.get(entity_id_field(domain)))
        candidates = self._by_id[domain].get(norm, []) if norm is not None else []
        if len(candidates) <= 1:
            return candidates[0] if candidates else None
        wanted = {k: normalize(v) for k, v in row.items() if isinstance(v, (str, int, float))}
        for index in candidates:
            own = self._norm_rows[domain][index]
            if all(own.get(k) == v for k, v in wanted.items() if v is not None):
                return index
        return candidates[0]


def _within(time: int | None, limit: int | None, direction: str) -> bool:
    if time is None or limit is None:
        return False
    return time > limit if direction == "after" else time < limit
