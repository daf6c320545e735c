"""Small shared types that every layer speaks: messages, tool calls and their results.

Environment-specific types (ToolWOZ scenarios) live in each environment (`josh_core/envs/`);
tree types live in `josh_core/search/tree.py`. `Generation` is here, not beside the agents that
make it, because the tree (search) and the stored rows (storage) carry it too. Everything here is plain pydantic so that
it round-trips through JSON (DuckDB rows, JSONL exports, the app).
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field

Role = Literal["system", "user", "assistant", "tool"]

# What a user says to hang up: every user simulator writes it, and an environment's own user
# instructions (τ²'s tasks) name it.
END_CONVERSATION = "END_CONVERSATION"


class ToolCall(BaseModel):
    """One API call as the agent asked for it (ToolWOZ names arguments `parameters`)."""

    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    id: str | None = None  # function-calling backends give calls an id; ReACT calls have none


class Message(BaseModel):
    """A chat message. Agent-internal messages use role/content plus optional tool_calls."""

    role: Role
    content: str = ""
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    def to_openai(self) -> dict[str, Any]:
        """The message as the OpenAI chat-completions API expects it."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            import json

            out["tool_calls"] = [
                {
                    "id": call.id or f"call_{i}",
                    "type": "function",
                    "function": {"name": call.name, "arguments": json.dumps(call.parameters)},
                }
                for i, call in enumerate(self.tool_calls)
            ]
        if self.tool_call_id:
            out["tool_call_id"] = self.tool_call_id
        return out


class Generation(BaseModel):
    """One model generation inside an agent turn (ReACT: one `PLAN ... <COMMAND_END> X ...`)."""

    text: str  # raw text as generated (FC: the assistant content; tool calls live in `message`)
    message: Message  # the assistant message appended to the agent's internal history
    action: str  # "apicall" | "speak" | "format_error"
    format_error: str | None = None  # why the text did not parse, when it did not
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    seconds: float | None = None
    # The agent constrains its actions but this generation ran without the constraint (the
    # backend could not apply it, or structured decoding is not installed).
    unconstrained: bool = False


ApiErrorKind = Literal[
    "unknown_api",  # no API of that name
    "unknown_parameter",  # a parameter key outside the API's definition
    "invalid_value",  # a value outside an enum, or a list/dict value
    "bad_format",  # the call text could not be parsed (not JSON, no name, ...)
    "tool_error",  # a well-formed call the tool refused (stateful environments: not found, not allowed, ...)
]


class ApiResult(BaseModel):
    """What the environment answered to one call. Bad calls never raise: they get an error."""

    ok: bool
    content: Any = None  # served rows / booking return; None on error
    error_kind: ApiErrorKind | None = None
    error: str | None = None  # the text shown to the agent on error

    def as_text(self) -> str:
        """The text the agent sees after APIRETURN (or as a tool message)."""
        import json

        if not self.ok:
            return f"ERROR: {self.error}"
        return json.dumps(self.content)


class ApiCallRecord(BaseModel):
    """A call and its result, kept on the tree node that made it."""

    call: ToolCall | None  # None when the text could not be parsed into a call at all
    raw: str | None = None  # the agent's raw call text (ReACT) when there is one
    result: ApiResult


@runtime_checkable
class ToolEnvironment(Protocol):
    """What an agent needs from an environment during its turn.

    The JOSH engine itself only sees `goal_ids` and `completed_goals`; agents see `tools`
    and `execute`. ToolWOZ implements it in `josh_core/envs/toolwoz/env.py`; the
    registered environments are in `josh_core/envs/`.

    Optional: `for_path(calls) -> ToolEnvironment`, a view whose state is the initial state
    with a path's calls replayed and whose `execute` applies its own calls to that state
    (stateful tools, τ²). The engine gives each agent turn such a view when the environment
    has one; without it, `execute` must answer from the call alone (ToolWOZ).
    """

    def tools(self) -> list[dict[str, Any]]:
        """OpenAI `tools` schema of the available APIs."""
        ...

    def execute(self, call: ToolCall | None, raw: str | None = None) -> ApiCallRecord:
        """Run one call; never raises for bad calls."""
        ...

    def goal_ids(self) -> list[str]:
        """Stable ids of the scenario's goals (one per goal API call)."""
        ...

    def completed_goals(self, calls: list[ApiCallRecord]) -> set[str]:
        """Which goals the given calls (a whole path of the conversation) complete."""
        ...
