"""OpenAI-compatible chat backend (OpenAI itself, `vllm serve`, llama.cpp's server, ...).

Uses the official `openai` SDK (AsyncOpenAI). Concurrent `chat` calls run as parallel HTTP
requests, capped by a semaphore. Retries with exponential backoff (and the server's
Retry-After when it sends one) on 429, 5xx, timeouts and dropped connections; other errors
surface at once. `n` samples are asked for in one request; a server that refuses `n > 1` or
returns fewer choices is topped up with single requests (and remembered as such).

A dead endpoint costs bounded time: each request waits at most `timeout_s`
(`JOSH_LLM_TIMEOUT`, default 120 s), and one request with all its retries and pauses at most
`call_timeout_s` (`JOSH_LLM_CALL_TIMEOUT`, default 300 s), after which `EndpointUnreachable`
(a ConnectionError) is raised. Once a request has failed to connect with every retry, the
endpoint is taken as down: later requests try once, without retries, until one gets an answer.
The run that uses the backend stops after a few such failures (rollout.RunGuard).

What the server sends back is untrusted: lone surrogates are replaced (safe_text) and
secrets (the API key, credentials of the base URL, anything `redact` recognises) are masked
in the text and the tool calls before anything else sees them.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import random
import time
from typing import Any, Literal

from pydantic import Field

from josh_core.llm.base import (
    API_MODEL_SAMPLING,
    BackendKind,
    BackendOptions,
    ChatRequest,
    ChatResponse,
    Choice,
    ConstraintUnsupported,
    OutputConstraint,
)
from josh_core.llm.structured import GBNF_REACT_MAX_TOKENS, gbnf_for, plain_schema
from josh_core.redact import redact, redact_url, url_secrets
from josh_core.safe_text import valid_json, valid_text
from josh_core.types import ToolCall

log = logging.getLogger(__name__)

# Which dialect of the protocol the server speaks (constraints and extra sampling fields).
SERVER_KINDS = ("openai", "vllm", "vllm-legacy", "llamacpp")
ServerKind = Literal["openai", "vllm", "vllm-legacy", "llamacpp"]


def guess_server_kind(base_url: str | None) -> str:
    """OpenAI's own API takes only standard fields; anything else is assumed vLLM-like."""
    if not base_url or "api.openai.com" in base_url:
        return "openai"
    return "vllm"


def strict_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tools rewritten for OpenAI strict mode, which wants every property required.

    Optional parameters become nullable; the model passes null for what it leaves out and
    `_parse_arguments` drops the nulls again.
    """
    out = []
    for tool in copy.deepcopy(tools):
        fn = tool.get("function", tool)
        params = fn.setdefault("parameters", {"type": "object", "properties": {}})
        props = params.setdefault("properties", {})
        for prop in props.values():
            kind = prop.get("type", "string")
            prop["type"] = [kind, "null"] if isinstance(kind, str) else list({*kind, "null"})
            if "enum" in prop and None not in prop["enum"]:
                prop["enum"] = [*prop["enum"], None]
        params["required"] = list(props)
        params["additionalProperties"] = False
        fn["strict"] = True
        out.append(tool)
    return out


def _parse_arguments(raw: str | None) -> dict[str, Any] | None:
    try:
        value = json.loads(raw or "{}")
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    return valid_json({k: v for k, v in value.items() if v is not None})


class EndpointUnreachable(ConnectionError):
    """The endpoint did not answer one request within its time (all retries included), or
    is down and refused again."""


def _env_seconds(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if value > 0 and value != float("inf") else default


class OpenAIBackend:
    is_local = False

    def __init__(self, model: str, *, base_url: str | None = None, api_key: str | None = None,
                 server: str | None = None, timeout_s: float | None = None, max_retries: int = 5,
                 backoff_s: float = 1.0, max_backoff_s: float = 30.0, concurrency: int = 16,
                 name: str | None = None, client: Any = None, call_timeout_s: float | None = None):
        from openai import AsyncOpenAI

        self.model = model
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        self.server = server or guess_server_kind(self.base_url)
        if self.server not in SERVER_KINDS:
            raise ValueError(f"unknown server kind {self.server!r}: expected one of {SERVER_KINDS}")
        self.name = name or f"openai:{model}"
        # A local server (vLLM, llama.cpp) samples like a local model (appendix B).
        self.is_local = self.server != "openai"
        self.default_sampling = API_MODEL_SAMPLING
        self.max_retries = max_retries
        self.timeout_s = float(timeout_s) if timeout_s else _env_seconds("JOSH_LLM_TIMEOUT", 120.0)
        self.call_timeout_s = (float(call_timeout_s) if call_timeout_s
                               else _env_seconds("JOSH_LLM_CALL_TIMEOUT", max(300.0, self.timeout_s)))
        self.endpoint_down = False  # the last request failed to connect with every retry
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.supports_n = True
        self._concurrency = concurrency
        self._semaphores: dict[int, asyncio.Semaphore] = {}  # per event loop
        key = api_key or os.environ.get("OPENAI_API_KEY") or ("EMPTY" if self.base_url else None)
        if key is None:
            raise ValueError("openai backend: set OPENAI_API_KEY (or give a base URL for a local server)")
        # What the server echoes of these is masked in its replies.
        self._secrets = [key, *url_secrets(self.base_url)]
        # The SDK's own retries are off: ours below log, honour Retry-After and are testable.
        self.client = client or AsyncOpenAI(base_url=self.base_url, api_key=key, timeout=self.timeout_s,
                                            max_retries=0)
        self.requests_sent = 0
        self.retries = 0

    # ---- request building (pure) -----------------------------------------------------------
    def request_kwargs(self, request: ChatRequest, n: int) -> dict[str, Any]:
        """Keyword arguments for `client.chat.completions.create` for this request."""
        s = request.sampling
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [m.to_openai() for m in request.messages],
            "temperature": s.temperature,
            "max_tokens": s.max_tokens,
        }
        if n != 1:
            kwargs["n"] = n
        if s.top_p is not None:
            kwargs["top_p"] = s.top_p
        if s.stop:
            kwargs["stop"] = s.stop[:4]  # OpenAI takes at most four stop sequences
        if s.seed is not None:
            kwargs["seed"] = s.seed
        extra: dict[str, Any] = {}
        if s.top_k is not None and self.server != "openai":
            extra["top_k"] = s.top_k
        if request.tools:
            # With tools, a constraint means "strict tool calls", not a JSON reply format:
            # the server's native tool calling already gives the structure we want.
            kwargs["tools"] = strict_tools(request.tools) if (request.constraint and self.server == "openai") else request.tools
        elif request.constraint is not None:
            fields = constraint_for_openai(request.constraint, self.server)
            extra.update(fields.pop("extra_body", {}))
            kwargs.update(fields)
            if request.constraint.kind == "lark":
                # Sent as its GBNF twin, which caps lines in characters, not tokens: a line of
                # digits (one token each) outgrows the agent's token budget and is cut, and a
                # cut action never parses. Measured on vllm serve (CPU, embedded model).
                kwargs["max_tokens"] = max(s.max_tokens, GBNF_REACT_MAX_TOKENS)
        if extra:
            kwargs["extra_body"] = extra
        return kwargs

    @staticmethod
    def choices_from(response: Any, secrets: list[str | None] | None = None) -> list[Choice]:
        """The response's choices, made safe to keep: lone surrogates replaced, and `secrets`
        (and whatever `redact` recognises) masked in the text and the tool calls."""

        def clean(text: str | None) -> str:
            return redact(valid_text(text or ""), secrets or ()) or ""

        choices = []
        for c in response.choices:
            msg = c.message
            text = clean(msg.content)
            calls: list[ToolCall] = []
            for tc in msg.tool_calls or []:
                name, raw = clean(tc.function.name), clean(tc.function.arguments)
                args = _parse_arguments(raw)
                if args is None:  # keep the unreadable call visible as text
                    text += json.dumps({"tool_call": {"name": name, "arguments": raw}})
                    continue
                calls.append(ToolCall(name=name, parameters=args, id=tc.id and clean(tc.id)))
            choices.append(Choice(text=text, tool_calls=calls or None, finish_reason=c.finish_reason))
        return choices

    # ---- sending -------------------------------------------------------------------------
    def _semaphore(self) -> asyncio.Semaphore:
        key = id(asyncio.get_running_loop())
        if key not in self._semaphores:
            self._semaphores = {key: asyncio.Semaphore(self._concurrency)}
        return self._semaphores[key]

    async def _create(self, kwargs: dict[str, Any]) -> Any:
        """One request, retried as the module docstring says, within `call_timeout_s`."""
        import openai

        attempt = 0
        deadline: float | None = None  # set once the request first gets a concurrency slot
        # An endpoint that just failed every retry gets one try: a dead server must not cost
        # every conversation the full retry schedule.
        was_down = self.endpoint_down
        retries = 0 if was_down else self.max_retries
        while True:
            try:
                async with self._semaphore():
                    now = time.monotonic()
                    deadline = deadline or now + self.call_timeout_s
                    timeout = min(self.timeout_s, max(deadline - now, 0.001))
                    self.requests_sent += 1
                    response = await self.client.chat.completions.create(**kwargs, timeout=timeout)
                    self.endpoint_down = False
                    return response
            except (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError,
                    openai.APITimeoutError) as exc:
                connection = isinstance(exc, openai.APIConnectionError)  # APITimeoutError is one
                if not connection:
                    self.endpoint_down = False  # it answered, if only with an error
                delay = self._retry_delay(exc, attempt)
                out_of_time = deadline is not None and time.monotonic() + delay >= deadline
                if attempt >= retries or out_of_time:
                    if not connection:
                        raise
                    self.endpoint_down = True
                    raise self._unreachable(exc, attempt + 1, out_of_time, was_down) from exc
                log.warning("%s: %s; retry %d in %.1fs", self.name, type(exc).__name__, attempt + 1, delay)
                self.retries += 1
                attempt += 1
                await asyncio.sleep(delay)
            except openai.APIStatusError as exc:
                self.endpoint_down = False
                if exc.status_code >= 500 and attempt < self.max_retries:  # e.g. 502/503 from a proxy
                    delay = self._retry_delay(exc, attempt)
                    if deadline is not None and time.monotonic() + delay >= deadline:
                        raise
                    self.retries += 1
                    attempt += 1
                    await asyncio.sleep(delay)
                    continue
                raise

    def _unreachable(self, exc: Exception, attempts: int, out_of_time: bool, was_down: bool) -> EndpointUnreachable:
        where = redact_url(self.base_url)[0] or "the OpenAI API"
        import openai

        waited = "no answer" if isinstance(exc, openai.APITimeoutError) else "no connection"
        why = (f"{waited} within {self.call_timeout_s:g} s (JOSH_LLM_CALL_TIMEOUT)" if out_of_time
               else "still no connection (the endpoint was down already; not retried)" if was_down
               else "no connection")
        detail = redact(" ".join(str(exc).split()), self._secrets) or type(exc).__name__
        return EndpointUnreachable(f"{where}: {why} after {attempts} attempt{'s' if attempts > 1 else ''} "
                                   f"({type(exc).__name__}: {detail})")

    def _retry_delay(self, exc: Exception, attempt: int) -> float:
        response = getattr(exc, "response", None)
        header = response.headers.get("retry-after") if response is not None else None
        if header:
            try:
                return min(float(header), self.max_backoff_s)
            except ValueError:
                pass
        base = min(self.backoff_s * (2 ** attempt), self.max_backoff_s)
        return base * (0.5 + random.random() / 2)  # jitter: concurrent retries spread out

    async def chat(self, request: ChatRequest) -> ChatResponse:
        import openai

        if request.constraint is not None and request.constraint.kind != "json_schema" and self.server == "openai":
            raise ConstraintUnsupported("OpenAI's API takes JSON schemas, not grammars")
        start = time.perf_counter()
        responses: list[Any] = []
        wanted = request.n
        if wanted > 1 and self.supports_n:
            try:
                responses.append(await self._create(self.request_kwargs(request, wanted)))
            except openai.BadRequestError as exc:
                if "n" not in str(exc).lower():
                    raise
                log.info("%s refused n=%d; sending one request per sample", self.name, wanted)
                self.supports_n = False
        have = sum(len(r.choices) for r in responses)
        if have < wanted:
            single = self.request_kwargs(request, 1)
            responses.extend(await asyncio.gather(*[self._create(dict(single)) for _ in range(wanted - have)]))
        choices = [c for r in responses for c in self.choices_from(r, self._secrets)][:wanted]
        prompt_tokens = completion_tokens = None
        usages = [r.usage for r in responses if getattr(r, "usage", None) is not None]
        if usages:
            prompt_tokens = usages[0].prompt_tokens
            completion_tokens = sum(u.completion_tokens or 0 for u in usages)
        return ChatResponse(choices=choices, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                            seconds=time.perf_counter() - start,
                            model=getattr(responses[0], "model", None) if responses else self.model)

    async def aclose(self) -> None:
        await self.client.close()


def constraint_for_openai(constraint: OutputConstraint, server: str = "openai") -> dict[str, Any]:
    """Keyword arguments to add to `client.chat.completions.create(...)` for this constraint.

    server "openai": response_format json_schema (OpenAI and any server that follows it; Lark
    grammars are not supported there). "vllm": vLLM >= 0.10.2 `structured_outputs` (grammar
    sent as GBNF, which both its xgrammar and guidance backends accept). "vllm-legacy": the
    `guided_json` / `guided_grammar` fields of older vLLM. "llamacpp": llama-cpp-python's
    server, which takes a GBNF `grammar`.
    """
    if server not in SERVER_KINDS:
        raise ValueError(f"unknown server {server!r}: expected one of {SERVER_KINDS}")
    if constraint.kind == "json_schema" and constraint.json_schema is not None:
        schema = plain_schema(constraint.json_schema)
        if server == "vllm":
            return {"extra_body": {"structured_outputs": {"json": schema}}}
        if server == "vllm-legacy":
            return {"extra_body": {"guided_json": schema}}
        if server == "llamacpp":
            return {"extra_body": {"grammar": gbnf_for(constraint)}}
        return {
            "response_format": {
                "type": "json_schema",
                # Not strict: OpenAI's strict mode demands every key be required.
                "json_schema": {"name": "action", "schema": schema, "strict": False},
            }
        }
    if server == "openai":
        raise ConstraintUnsupported("OpenAI-style servers take JSON schemas, not grammars")
    grammar = gbnf_for(constraint)
    if server == "vllm":
        return {"extra_body": {"structured_outputs": {"grammar": grammar}}}
    if server == "vllm-legacy":
        return {"extra_body": {"guided_grammar": grammar}}
    return {"extra_body": {"grammar": grammar}}


# -- registration (josh_core/llm/specs.py) ---------------------------------------------------


class OpenAIOptions(BackendOptions):
    """`openai:MODEL`'s settings beside the run's base URL."""

    api_key: str | None = None  # else OPENAI_API_KEY ("EMPTY" for a local server)
    server: ServerKind | None = None  # the protocol's dialect; None: guessed from the base URL
    timeout_s: float | None = Field(None, gt=0)  # per request; None: JOSH_LLM_TIMEOUT
    max_retries: int | None = Field(None, ge=0)
    concurrency: int | None = Field(None, ge=1)  # requests in flight at once


def _build(rest: str, options: OpenAIOptions, base_url: str | None) -> OpenAIBackend:
    if not rest:
        raise ValueError("openai SPEC needs a model: openai:MODEL")
    given = {k: v for k, v in options.model_dump().items() if v is not None}
    return OpenAIBackend(rest, base_url=base_url, **given)


def _grammar(options: OpenAIOptions, base_url: str | None) -> bool:
    # OpenAI's own API takes JSON schemas only; vLLM and llama.cpp servers take grammars.
    return (options.server or guess_server_kind(base_url or os.environ.get("OPENAI_BASE_URL"))) != "openai"


def _check(rest: str, base_url: str | None) -> list[str]:
    problems = [] if rest else ["needs a model, openai:MODEL"]
    if not (base_url or os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_API_KEY")):
        problems.append("give a base URL (e.g. a `vllm serve` endpoint) or set OPENAI_API_KEY")
    return problems


BACKEND = BackendKind(
    kind="openai", usage="openai:MODEL",
    summary="OpenAI-compatible HTTP (OPENAI_BASE_URL / --base-url, OPENAI_API_KEY)",
    options=OpenAIOptions, build=_build, in_process=False, grammar=_grammar, check=_check,
)  # fmt: skip
