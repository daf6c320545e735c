"""ReACT agent (section 4.2, appendix E): PLAN / APICALL / SPEAK commands over any backend.

One turn is a sequence of generations until SPEAK or the action cap. Each generation sees
the prompt messages (system prompt, demonstration), the agent's memory of this path and what
it did so far in the turn. APICALL runs the call on the environment and appends
`APIRETURN <result>` as a user message; output that is not a command pair is a format error:
it is recorded, the model gets error feedback, and the turn goes on.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from josh_core.llm.base import (
    API_MODEL_SAMPLING,
    LOCAL_MODEL_SAMPLING,
    ChatBackend,
    ChatRequest,
    ChatResponse,
    ConstraintUnsupported,
    OutputConstraint,
    SamplingParams,
)
from josh_core.policies.base import AgentTurn, Generation, TurnContext
from josh_core.policies.parse import parse_react
from josh_core.policies.prompts import (
    APIRETURN,
    domain_instructions,
    env_api_examples,
    react_format_feedback,
    react_prompt_messages,
)
from josh_core.types import Message, ToolEnvironment

log = logging.getLogger(__name__)

# Generations stop before the model starts writing the environment's part.
REACT_STOP = [APIRETURN]
UNCONSTRAINED_MAX_TOKENS = 200


def generation_seed(turn_seed: int, index: int) -> int:
    """Seed of the index-th generation of a turn (distinct per generation, reproducible)."""
    return (turn_seed * 1_000_003 + index * 7919 + 1) % (2**31 - 1)


class ModelAgent:
    """What the ReACT and function-calling agents share: backend, sampling, constraint."""

    style = "react"

    def __init__(self, backend: ChatBackend, *, temperature: float | None = None,
                 max_actions_per_turn: int = 5, constrained: bool | None = None,
                 grounded: bool | None = None, max_tokens: int | None = None):
        self.backend = backend
        self.name = f"{self.style}:{backend.name}"
        # The backend's own default (the embedded model has one), else appendix B's by kind.
        defaults = getattr(backend, "default_sampling", None) or (
            LOCAL_MODEL_SAMPLING if backend.is_local else API_MODEL_SAMPLING)
        self.base_sampling = defaults.model_copy(update={"temperature": temperature} if temperature is not None else {})
        self.max_actions_per_turn = max_actions_per_turn
        # Structured decoding is on by default for local models (appendix B's sampling at
        # temperature 1.5 breaks a small model's format otherwise); API models stay free.
        self.constrained = backend.is_local if constrained is None else constrained
        # Grounded values (policies/grounding.py) ride on the grammar: on with it by default.
        self.grounded = self.constrained if grounded is None else grounded
        self.max_tokens = max_tokens
        self._warned: set[str] = set()

    # -- to override ------------------------------------------------------------------------
    def constraint(self, tools: list[dict[str, Any]]) -> OutputConstraint | None:
        raise NotImplementedError

    def default_max_tokens(self) -> int:
        return UNCONSTRAINED_MAX_TOKENS

    # -- shared ---------------------------------------------------------------------------
    def sampling(self, seed: int, stop: list[str] | None = None) -> SamplingParams:
        return self.base_sampling.model_copy(update={
            "seed": seed,
            "max_tokens": self.max_tokens or self.default_max_tokens(),
            "stop": stop,
        })

    def _constraint_or_none(self, tools: list[dict[str, Any]],
                            conversation: list[Message] | None = None, **kwargs: Any) -> OutputConstraint | None:
        """The output constraint of one generation; `conversation` (the path's messages so far)
        supplies the grounded values; `kwargs` go to the style's `constraint`. None when the
        agent decodes freely, or when structured decoding is not installed (that generation
        then runs unconstrained, and `generate` records it as such)."""
        if not self.constrained:
            return None
        if self.grounded and conversation is not None:
            from josh_core.policies.grounding import conversation_values, grounded_tools

            tools = grounded_tools(tools, conversation_values(conversation))
        try:
            return self.constraint(tools, **kwargs)
        except ImportError as exc:
            self._warn_once(f"structured decoding unavailable ({exc}); generating unconstrained")
            return None

    async def generate(self, request: ChatRequest) -> tuple[ChatResponse, bool]:
        """One backend call, and whether it ran unconstrained although the agent constrains
        its actions (the Generation records it: `unconstrained`).

        A backend that cannot apply the constraint gets this request without it; the next
        request asks again. The agent is shared by the conversations of a run, so one refusal
        must not turn the constraint off for all of them while the run's configuration still
        says constrained."""
        try:
            return await self.backend.chat(request), self.constrained and request.constraint is None
        except ConstraintUnsupported as exc:
            if request.constraint is None:
                raise
            self._warn_once(f"{self.backend.name} cannot apply the output constraint ({exc}); generating "
                            "unconstrained where it cannot")
            return await self.backend.chat(request.model_copy(update={"constraint": None})), True

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            log.warning("%s", message)


class ReactAgent(ModelAgent):
    style = "react"

    def __init__(self, backend: ChatBackend, *, demonstrate: bool = True, **kwargs: Any):
        super().__init__(backend, **kwargs)
        self.demonstrate = demonstrate

    def constraint(self, tools):
        from josh_core.llm.structured import react_constraint

        return react_constraint(tools)

    def default_max_tokens(self) -> int:
        if self.constrained:
            from josh_core.llm.structured import REACT_MAX_TOKENS

            return REACT_MAX_TOKENS
        return UNCONSTRAINED_MAX_TOKENS

    def prompt_messages(self, env: ToolEnvironment) -> list[Message]:
        """Everything before the conversation: system prompt, demonstration, fence."""
        return react_prompt_messages(env.tools(), env_api_examples(env, []), self.demonstrate,
                                     domain_instructions(env))

    def system_prompt(self, env: ToolEnvironment) -> str:
        return self.prompt_messages(env)[0].content

    async def act(self, ctx: TurnContext) -> AgentTurn:
        env = ctx.env
        tools = env.tools()
        prefix = self.prompt_messages(env)
        turn = AgentTurn()
        for index in range(self.max_actions_per_turn):
            conversation = list(ctx.agent_memory) + turn.internal
            # Per generation: an APIRETURN within the turn adds grounded values.
            constraint = self._constraint_or_none(tools, conversation)
            request = ChatRequest(
                messages=prefix + conversation,
                sampling=self.sampling(generation_seed(ctx.seed, index), REACT_STOP),
                constraint=constraint,
            )
            start = time.perf_counter()
            response, unconstrained = await self.generate(request)
            seconds = time.perf_counter() - start
            text = response.choices[0].text if response.choices else ""
            parsed = parse_react(text)
            stats = {"prompt_tokens": response.prompt_tokens, "completion_tokens": response.completion_tokens,
                     "seconds": seconds, "unconstrained": unconstrained}
            if parsed.kind == "format_error":
                message = Message(role="assistant", content=text)
                turn.generations.append(Generation(text=text, message=message, action="format_error",
                                                   format_error=parsed.error, **stats))
                turn.internal += [message, Message(role="user", content=react_format_feedback(parsed.error or ""))]
                turn.format_errors += 1
                continue
            message = Message(role="assistant", content=parsed.text)
            turn.generations.append(Generation(text=text, message=message, action=parsed.kind, **stats))
            turn.internal.append(message)
            if parsed.kind == "speak":
                turn.speak = parsed.speak or ""
                break
            record = env.execute(parsed.call, parsed.call_text)
            turn.api_calls.append(record)
            turn.internal.append(Message(role="user", content=f"{APIRETURN} {record.result.as_text()}"))
        return turn
