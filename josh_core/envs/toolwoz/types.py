"""ToolWOZ scenario types (pydantic): a user goal per domain and the goal API calls.

A scenario file (`josh toolwoz show ID --json`) is `Scenario.model_dump()`; its JSON Schema
is `josh toolwoz schema`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

Domain = Literal["restaurant", "hotel", "attraction", "train"]
DOMAINS: tuple[str, ...] = ("restaurant", "hotel", "attraction", "train")
Split = Literal["train", "val", "test", "official-test"]


class DomainGoal(BaseModel):
    """The user's goal in one domain, in MultiWOZ's vocabulary."""

    info: dict[str, str] = Field(default_factory=dict)  # final search constraints
    fail_info: dict[str, str] = Field(default_factory=dict)  # tried first, matches nothing
    book: dict[str, str] = Field(default_factory=dict)  # booking constraints (people, day, ...)
    fail_book: dict[str, str] = Field(default_factory=dict)  # booking values that fail first
    reqt: list[str] = Field(default_factory=list)  # slots the user asks about (phone, ...)


class GoalCall(BaseModel):
    """One goal API call: the agent earns 1/len(goal_calls) by making it correctly."""

    name: str  # e.g. "search_hotel", "book_train"
    parameters: dict[str, str]  # search: final info params; book: book params + unique id
    returns: Any = None  # search: matching rows (or served entity); book: booked entry with reference
    unique_id: str | None = None  # booking entity id (name, or trainID for trains)

    @property
    def domain(self) -> str:
        return self.name.split("_", 1)[1]

    @property
    def intent(self) -> str:
        return self.name.split("_", 1)[0]


class Scenario(BaseModel):
    """One ToolWOZ conversation seed."""

    id: str
    source: Literal["toolwoz-synth", "official"] = "toolwoz-synth"
    domains: list[str]  # in the order the user pursues them
    goal: dict[str, DomainGoal]  # keyed by domain
    instructions: list[str]  # user-facing goal sentences (MultiWOZ's goal "message" role)
    goal_calls: list[GoalCall]

    def goal_call_ids(self) -> list[str]:
        """Stable goal ids: `<index>:<api name>` (an API may appear once per domain)."""
        return [f"{i}:{g.name}" for i, g in enumerate(self.goal_calls)]
