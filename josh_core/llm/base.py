"""One chat interface for every model backend.

Messages in; text or tool calls out; sampling parameters; n samples; async. A backend may
batch concurrent `chat` calls (in-process models run one batched `generate` for every request
that is waiting), so callers simply `asyncio.gather` their requests.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from josh_core.types import Message, ToolCall


class SamplingParams(BaseModel):
    temperature: float = 1.0
    top_p: float | None = None
    top_k: int | None = None
    max_tokens: int = 256
    stop: list[str] | None = None
    seed: int | None = None


# Appendix B: API models sample at temperature 1.0; local models at 1.5 / top_k 50 / top_p 0.75.
API_MODEL_SAMPLING = SamplingParams(temperature=1.0)
LOCAL_MODEL_SAMPLING = SamplingParams(temperature=1.5, top_k=50, top_p=0.75)
# The embedded SmolLM2-135M at 1.5 writes noise and rarely acts: on 8 train openers (32 samples,
# grounded action grammar, PLAN cap 64 tokens) it chose APICALL in 4 of them at 1.5, 10 at 0.7. Appendix
# B's setting is for an 8B model; the embedded model (`embedded`, `llamacpp:embedded`) uses this.
EMBEDDED_MODEL_SAMPLING = SamplingParams(temperature=0.7, top_k=50, top_p=0.75)


class OutputConstraint(BaseModel):
    """Structured decoding request (see `josh_core/llm/structured.py`).

    kind "lark": a llguidance Lark grammar (may embed JSON schemas with %json);
    kind "json_schema": a JSON Schema the whole output must match.
    Backends that cannot honour a constraint raise `ConstraintUnsupported`.
    """

    kind: str
    grammar: str | None = None
    json_schema: dict[str, Any] | None = None


class ChatRequest(BaseModel):
    messages: list[Message]
    tools: list[dict[str, Any]] | None = None  # OpenAI tools schema (function calling)
    sampling: SamplingParams = Field(default_factory=SamplingParams)
    n: int = 1
    constraint: OutputConstraint | None = None


class Choice(BaseModel):
    text: str = ""
    tool_calls: list[ToolCall] | None = None
    finish_reason: str | None = None


class ChatResponse(BaseModel):
    choices: list[Choice]
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    seconds: float | None = None
    model: str | None = None


class ConstraintUnsupported(RuntimeError):
    """The backend cannot apply the requested output constraint."""


@runtime_checkable
class ChatBackend(Protocol):
    name: str  # e.g. "embedded", "openai:gpt-4o-mini"
    is_local: bool  # picks LOCAL_MODEL_SAMPLING vs API_MODEL_SAMPLING as defaults

    async def chat(self, request: ChatRequest) -> ChatResponse: ...

    async def aclose(self) -> None: ...
