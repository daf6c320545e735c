"""What an environment's score of a finished path says, in every environment: the reward,
success, the goal calls completed and why each missed one was missed.

ToolWOZ's scoring (envs/toolwoz/scoring.py) fills it from goal completion; τ²'s extends it
(envs/tau2/env.py: `Tau2Score`). The analysis reads it back from the stored conversation.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

MissReason = Literal["never_attempted", "missing_parameter", "wrong_value", "wrong_entity"]


class ParamDiff(BaseModel):
    """One parameter where the closest attempt differs from the goal."""

    parameter: str
    kind: Literal["missing", "wrong_value", "unexpected"]
    expected: str | None = None  # the goal's value (None for an unexpected parameter)
    got: str | None = None  # the call's value (None for a missing parameter)


class MissedGoal(BaseModel):
    goal_id: str
    api: str
    reason: MissReason
    attempts: int = 0  # executed calls of this API
    failed_calls: int = 0  # calls of this API rejected as bad calls
    closest_call: int | None = None  # index of the closest attempt in the calls given
    served: str | None = None  # entity id that attempt was served / booked, if any
    details: list[ParamDiff] = Field(default_factory=list)


class ScoreReport(BaseModel):
    reward: float
    success: bool
    completed: list[str]
    missed: list[MissedGoal]
