"""The seven ToolWOZ APIs: one small class each, its schema beside its `invoke`.

Names, parameters and enums follow the original ToolWOZ definitions; the descriptions are
ours. Every parameter is optional and a string. What `invoke` serves depends on the
scenario (Algorithms 2 and 3 of the paper); `ServingContext` carries what it needs.

There is no `book_attraction`: the original tools.json lists one without parameters that
always fails, the paper's API list leaves it out, so calling it is an unknown API here.
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

from josh_core.envs.toolwoz.db import TIME_BOUNDS, Database
from josh_core.envs.toolwoz.normalize import is_normalized_subset, normalize, parse_time

_AREAS = ["centre", "north", "south", "east", "west"]
_PRICES = ["cheap", "moderate", "expensive"]


@dataclass(frozen=True)
class Param:
    description: str
    enum: tuple[str, ...] | None = None


@dataclass
class ServingContext:
    """What serving needs from the scenario, normalised once per environment."""

    db: Database
    search_goals: dict[str, dict[str, str]] = field(default_factory=dict)  # domain -> G
    booking_ids: dict[str, str] = field(default_factory=dict)  # domain -> B (normalised id)
    book_goals: dict[str, dict[str, str]] = field(default_factory=dict)  # domain -> book params
    book_returns: dict[str, Any] = field(default_factory=dict)  # domain -> booking return
    _goal_rows: dict[str, frozenset[int]] = field(default_factory=dict)

    def goal_rows(self, domain: str) -> frozenset[int]:
        """Rows satisfying the domain's goal search parameters."""
        if domain not in self._goal_rows:
            self._goal_rows[domain] = frozenset(self.db.query(domain, self.search_goals.get(domain, {})))
        return self._goal_rows[domain]


class Tool:
    """One API. Subclasses declare name, domain, description and parameters."""

    name: ClassVar[str]
    domain: ClassVar[str]
    description: ClassVar[str]
    parameters: ClassVar[dict[str, Param]]

    @classmethod
    def schema(cls) -> dict[str, Any]:
        """The OpenAI `tools` entry."""
        properties: dict[str, Any] = {}
        for pname, param in cls.parameters.items():
            prop: dict[str, Any] = {"type": "string", "description": param.description}
            if param.enum:
                prop["enum"] = list(param.enum)
            properties[pname] = prop
        return {
            "type": "function",
            "function": {
                "name": cls.name,
                "description": cls.description,
                "parameters": {"type": "object", "properties": properties, "required": []},
            },
        }

    def invoke(self, ctx: ServingContext, args: dict[str, str]) -> Any:
        raise NotImplementedError


class SearchTool(Tool):
    """Serves at most one row, chosen by Algorithm 2 so that only goal-like calls get the goal."""

    def invoke(self, ctx: ServingContext, args: dict[str, str]) -> list[dict[str, Any]]:
        index = serve_search(ctx, self.domain, args)
        return [] if index is None else [dict(ctx.db.row(self.domain, index))]


class BookTool(Tool):
    """Algorithm 3: succeeds, with the goal's return, only for the goal's booking."""

    def invoke(self, ctx: ServingContext, args: dict[str, str]) -> dict[str, Any]:
        goal = ctx.book_goals.get(self.domain)
        if goal is not None and is_normalized_subset(goal, args):
            return {"success": True, "return": ctx.book_returns[self.domain]}
        return {"success": False, "return": None}


def serve_search(ctx: ServingContext, domain: str, args: dict[str, str]) -> int | None:
    """Row index served for normalised `args`, or None for an empty result (Algorithm 2)."""
    rows = ctx.db.query(domain, args)
    if not rows:
        return None
    goal = ctx.search_goals.get(domain)
    if goal is None:  # the scenario has no goal in this domain: nothing to protect
        return rows[0]
    booking_id = ctx.booking_ids.get(domain) if domain in ctx.book_goals else None
    # correct: the first row that is the booking entity B
    correct = None
    if booking_id is not None:
        correct = next(
            (i for i in ctx.db.rows_with_id(domain, booking_id) if ctx.db.matches(domain, args, i)), None
        )
    # wrong: the last row that does not satisfy G (and is not B); a row satisfies G exactly
    # when the query for G returns it
    goal_rows = ctx.goal_rows(domain)
    wrong = next(
        (i for i in reversed(rows) if i not in goal_rows and ctx.db.norm_id(domain, i) != booking_id), None
    )
    if is_normalized_subset(goal, args):
        if booking_id is not None:
            return correct if correct is not None else wrong
        return rows[0]
    if is_normalized_subset(args, goal):
        if wrong is not None:
            return wrong
        if correct is not None:
            return correct
    return rows[0]


class SearchRestaurant(SearchTool):
    name = "search_restaurant"
    domain = "restaurant"
    description = "Find a restaurant in Cambridge. Returns at most one matching restaurant."
    parameters = {
        "food": Param("Cuisine served, e.g. italian"),
        "pricerange": Param("How expensive the restaurant is", tuple(_PRICES)),
        "name": Param("Name of the restaurant, e.g. pizza hut city centre"),
        "area": Param("Part of town the restaurant is in", tuple(_AREAS)),
    }


class BookRestaurant(BookTool):
    name = "book_restaurant"
    domain = "restaurant"
    description = "Reserve a table at a restaurant. Returns a reference number on success."
    parameters = {
        "time": Param("Time of the reservation, 24-hour HH:MM, e.g. 18:30"),
        "day": Param("Day of the week of the reservation, e.g. saturday"),
        "people": Param("Number of people, e.g. 4"),
        "name": Param("Name of the restaurant to book"),
    }


class SearchHotel(SearchTool):
    name = "search_hotel"
    domain = "hotel"
    description = "Find a hotel or guesthouse in Cambridge. Returns at most one matching place."
    parameters = {
        "name": Param("Name of the hotel, e.g. the lensfield hotel"),
        "area": Param("Part of town the hotel is in", tuple(_AREAS)),
        "parking": Param("Whether free parking is offered", ("yes", "no")),
        "pricerange": Param("How expensive the hotel is", tuple(_PRICES)),
        "stars": Param("Star rating", ("0", "1", "2", "3", "4")),
        "internet": Param("Whether free wifi is offered", ("yes", "no")),
        "type": Param("Kind of place to stay", ("hotel", "guesthouse")),
    }


class BookHotel(BookTool):
    name = "book_hotel"
    domain = "hotel"
    description = "Book rooms at a hotel. Returns a reference number on success."
    parameters = {
        "stay": Param("Number of nights, e.g. 3"),
        "day": Param("Day of the week the stay starts, e.g. monday"),
        "people": Param("Number of guests, e.g. 2"),
        "name": Param("Name of the hotel to book"),
    }


class SearchAttraction(SearchTool):
    name = "search_attraction"
    domain = "attraction"
    description = "Find a place to visit in Cambridge. Returns at most one matching attraction."
    parameters = {
        "type": Param("Kind of attraction, e.g. museum, college, park"),
        "name": Param("Name of the attraction, e.g. kettle's yard"),
        "area": Param("Part of town the attraction is in", tuple(_AREAS)),
    }


class SearchTrain(SearchTool):
    name = "search_train"
    domain = "train"
    description = (
        "Find a train. leaveAt keeps trains leaving after that time, arriveBy trains arriving "
        "before it. Returns at most one matching train."
    )
    parameters = {
        "leaveAt": Param("Earliest departure time, 24-hour HH:MM; trains leave after it"),
        "destination": Param("Station the train goes to, e.g. cambridge"),
        "day": Param("Day of the week of travel, e.g. friday"),
        "arriveBy": Param("Latest arrival time, 24-hour HH:MM; trains arrive before it"),
        "departure": Param("Station the train leaves from, e.g. ely"),
    }


class BookTrain(BookTool):
    name = "book_train"
    domain = "train"
    description = "Buy train tickets. Returns a reference number on success."
    parameters = {
        "people": Param("Number of tickets, e.g. 2"),
        "trainID": Param("ID of the train, e.g. TR1234"),
    }


TOOL_CLASSES: tuple[type[Tool], ...] = (
    SearchRestaurant,
    BookRestaurant,
    SearchHotel,
    BookHotel,
    SearchAttraction,
    SearchTrain,
    BookTrain,
)
TOOLS_BY_NAME: dict[str, Tool] = {cls.name: cls() for cls in TOOL_CLASSES}
TOOLS: list[dict[str, Any]] = [cls.schema() for cls in TOOL_CLASSES]
API_PARAMETERS: dict[str, list[str]] = {cls.name: list(cls.parameters) for cls in TOOL_CLASSES}
API_NAMES: tuple[str, ...] = tuple(API_PARAMETERS)

# One filled call per API for the agent prompt. Real database values that match (searches)
# or name real entities (bookings), picked to be ordinary rather than like any one scenario.
API_EXAMPLES: list[dict[str, Any]] = [
    {"name": "search_restaurant", "parameters": {"food": "modern european", "pricerange": "moderate", "area": "centre"}},
    {"name": "book_restaurant", "parameters": {"time": "18:30", "day": "saturday", "people": "4", "name": "riverside brasserie"}},
    {"name": "search_hotel", "parameters": {"area": "north", "parking": "yes", "pricerange": "moderate", "stars": "4", "internet": "yes", "type": "guesthouse"}},
    {"name": "book_hotel", "parameters": {"stay": "3", "day": "monday", "people": "2", "name": "acorn guest house"}},
    {"name": "search_attraction", "parameters": {"type": "museum", "area": "centre"}},
    {"name": "search_train", "parameters": {"departure": "cambridge", "destination": "stansted airport", "day": "friday", "leaveAt": "09:30"}},
    {"name": "book_train", "parameters": {"people": "2", "trainID": "TR2048"}},
]  # fmt: skip


_SHOW = reprlib.Repr()
_SHOW.maxlevel, _SHOW.maxstring, _SHOW.maxother, _SHOW.maxlist, _SHOW.maxdict = 3, 80, 80, 6, 6


def _shown(value: Any) -> str:
    """A short, bounded repr of a value from an agent (deep or huge values stay small)."""
    try:
        return _SHOW.repr(value)
    except Exception:  # noqa: BLE001 - a value whose repr fails is still shown as something
        return f"<{type(value).__name__}>"


class CallError(Exception):
    """A bad call: carries the ApiErrorKind and the text shown to the agent."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


def validate_call(name: str, parameters: Any) -> tuple[Tool, dict[str, str]]:
    """The tool and its normalised arguments, or CallError for a bad call.

    Numbers are accepted as strings; lists, dicts and booleans are not. Empty and
    "don't care" values are dropped. Enum values and train times are checked after
    normalisation.
    """
    tool = TOOLS_BY_NAME.get(name)
    if tool is None:
        hint = " (attractions cannot be booked)" if name == "book_attraction" else ""
        raise CallError(
            "unknown_api",
            f"There is no API named {_shown(name)}{hint}. Available APIs: {', '.join(API_NAMES)}.",
        )
    if not isinstance(parameters, dict):
        raise CallError("bad_format", f"The parameters of {name} must be a JSON object.")
    args: dict[str, str] = {}
    allowed = tool.parameters
    for key, value in parameters.items():
        if key not in allowed:
            raise CallError(
                "unknown_parameter",
                f"{name} has no parameter {_shown(key)}. Its parameters are: {', '.join(allowed)}.",
            )
        if isinstance(value, (list, dict, tuple, set, bool)):
            raise CallError(
                "invalid_value",
                f"Parameter {key!r} of {name} must be a single string value, got {_shown(value)}.",
            )
        norm = normalize(value)
        if norm is None:
            continue
        enum = allowed[key].enum
        if enum and norm not in enum:
            raise CallError(
                "invalid_value",
                f"Parameter {key!r} of {name} must be one of {', '.join(enum)}; got {_shown(value)}.",
            )
        if key in TIME_BOUNDS.get(tool.domain, {}) and tool.name.startswith("search_"):
            minutes = parse_time(norm)
            if minutes is None:
                raise CallError(
                    "invalid_value",
                    f"Parameter {key!r} of {name} must be a time as HH:MM; got {_shown(value)}.",
                )
            norm = f"{minutes // 60:02d}:{minutes % 60:02d}"
        args[key] = norm
    return tool, args
