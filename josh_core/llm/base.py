"""One chat interface for every model backend.

Messages in; text or tool calls out; sampling parameters; n samples; async. A backend may
batch concurrent `chat` calls (in-process models run one batched `generate` for every request
that is waiting), so callers simply `asyncio.gather` their requests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

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


class BackendOptions(BaseModel):
    """A backend's own settings beside its SPEC (a device, a server dialect, a context size):
    typed and checked (an unknown name is refused), and part of the key a shared in-process
    backend is kept under, so asking again with other settings gets another backend."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def key(self) -> str:
        return self.model_dump_json()


def is_embedded_target(rest: str) -> bool:
    """Whether a SPEC's part after `kind:` names the embedded model (`vllm:embedded`,
    `llamacpp:embedded@DIR`)."""
    return rest == "embedded" or rest.startswith("embedded@")


def compact_for_embedded(rest: str) -> str:
    """`default_style` of backends that also play the embedded model: compact for it (a short
    prompt and no PLAN measured several times faster and no worse; bench/bench_player.py),
    ReACT (appendix E) for every other model."""
    return "compact" if is_embedded_target(rest) else "react"


def split_adapter(rest: str) -> tuple[str, str | None]:
    """`"path@adapter"` -> `("path", "adapter")`; `"path"` -> `("path", None)`."""
    if "@" in rest:
        base, adapter = rest.rsplit("@", 1)
        return base, (adapter or None)
    return rest, None


def model_problems(base: str | None, adapter: str | None) -> list[str]:
    """What can be seen wrong with a local model and its LoRA adapter before loading them: a
    model path (not a hub id) that does not exist, an adapter folder that holds no finished
    adapter."""
    from josh_core.adapter_folder import adapter_problem

    problems = []
    if adapter:
        problem = adapter_problem(adapter)
        if problem:
            problems.append(problem)
    if base and base.startswith((".", "/", "~")) and not Path(base).expanduser().exists():
        problems.append(f"no model at {base}")
    return problems


def adapter_folder(adapter: str | None) -> str | None:
    """The folder of `adapter` (`shipped:NAME` resolved, adapter_folder.py), checked before the
    model loads: an adapter folder an unfinished training left, or a shipped name with no
    adapter, is refused (another missing folder is reported by the loader, which may also take
    hub ids)."""
    if not adapter:
        return None
    from josh_core.adapter_folder import SHIPPED_PREFIX, adapter_problem, resolve_adapter, unfinished_training

    problem = adapter_problem(adapter) if adapter.startswith(SHIPPED_PREFIX) else unfinished_training(adapter)
    if problem:
        raise ValueError(problem)
    return resolve_adapter(adapter)


def _react(rest: str) -> str:
    return "react"


def _no_problems(rest: str, base_url: str | None) -> list[str]:
    return []


@dataclass(frozen=True)
class BackendKind:
    """A model backend's registration: everything the rest of the code asks about a backend
    without loading it. Each backend module defines one (`BACKEND`); `llm/specs.py` lists them.

    build(rest, options, base_url): the backend for SPEC `kind:rest` (`rest` keeps a bare
      kind's `@ADAPTER`), with `options` an instance of `options` and the run's base URL.
    in_process: the model runs in this process. Such backends are shared per SPEC and options
      within a process, and a Ray run asks a GPU for each worker that loads one.
    bare: the SPEC is `kind[@ADAPTER]`, without a colon (`embedded`).
    grammar(options, base_url): whether it applies the action grammar (Lark or GBNF) when
      decoding; decoding `grounded` and `grammar` need it.
    default_style(rest): the agent style `auto` means for the SPEC.
    check(rest, base_url): problems with the SPEC that can be seen without loading a model.
    """

    kind: str
    usage: str  # how its SPEC is written (help texts, errors)
    summary: str  # what it is, in a line
    options: type[BackendOptions]
    build: Callable[[str, Any, str | None], ChatBackend]
    in_process: bool = True
    bare: bool = False
    grammar: Callable[[Any, str | None], bool] = lambda options, base_url: True
    default_style: Callable[[str], str] = _react
    check: Callable[[str, str | None], list[str]] = _no_problems
