"""Records the storage functions return (trees come back as `ConversationTree`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

RunKind = Literal["josh", "plain"]
ConversationStatus = Literal["pending", "running", "done", "failed", "interrupted"]


class RunRecord(BaseModel):
    id: str
    created_at: datetime
    kind: RunKind
    status: str
    agent_spec: str | None = None
    user_spec: str | None = None
    agent_name: str | None = None
    user_name: str | None = None
    seed: int | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    code_revision: str | None = None
    finished_at: datetime | None = None


class ConversationRecord(BaseModel):
    id: str
    run_id: str
    position: int
    scenario_id: str
    scenario: dict[str, Any] | None = None
    status: ConversationStatus
    stop_reason: str | None = None
    reward: float | None = None
    success: bool | None = None
    goals: list[str] = Field(default_factory=list)
    goals_reached: list[str] = Field(default_factory=list)
    score: dict[str, Any] | None = None
    system_prompt: str | None = None
    prompt_messages: list[dict[str, Any]] | None = None  # the agent's messages before the conversation
    tools: list[dict[str, Any]] | None = None
    seed: int | None = None
    steps: int | None = None
    node_count: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    seconds: float | None = None
    error: str | None = None
    worker: str | None = None  # distributed runs (--ray): the worker that played it

    @field_validator("goals", "goals_reached", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value  # pending conversations have no goals yet


class AnnotationRecord(BaseModel):
    id: str
    node_id: str
    conversation_id: str
    label: str | None = None
    comment: str | None = None
    author: str | None = None
    created_at: datetime


class ExportRecord(BaseModel):
    id: str
    created_at: datetime
    kind: str
    format: str
    path: str
    run_id: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    rows: int
    conversations: int
