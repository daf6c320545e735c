"""Compact agent: ReACT's actions without PLAN, behind a prompt of a few hundred tokens.

Made for small local models (the embedded SmolLM2-135M), where every prompt token is paid by
every leaf of a JOSH tree and the PLAN line was about half of all decoded tokens. Everything
else is the ReACT agent's: the same `APICALL {...} <COMMAND_END>` / `SPEAK ... <COMMAND_END>`
actions and parser, the same action grammar with grounded values, the same APIRETURN
messages, so its trees, exports and metrics read exactly like ReACT's.

One difference in the turn: the last generation a turn may have is constrained to SPEAK, so
every turn ends with a message to the customer (a turn cut off after API calls leaves the
user simulator nothing to answer).
"""

from __future__ import annotations

import time
from typing import Any

from josh_core.llm.base import ChatRequest
from josh_core.policies.base import AgentTurn, Generation, TurnContext
from josh_core.policies.parse import parse_react
from josh_core.policies.prompts import APIRETURN, compact_format_feedback, compact_system_prompt, domain_instructions
from josh_core.policies.react_agent import REACT_STOP, ModelAgent, generation_seed
from josh_core.types import Message, ToolEnvironment

# Generations are one line; these budgets always fit one with the grammar's caps below.
COMPACT_SPEAK_MAX_TOKENS = 48
COMPACT_MAX_TOKENS = 160  # an APICALL with every value of the longest API at its cap
COMPACT_MAX_ACTIONS = 3  # e.g. search, book, then SPEAK
COMPACT_FREE_MAX_TOKENS = 120


def compact_action(*, call: dict[str, Any] | None = None, speak: str | None = None) -> str:
    """The canonical text of one compact generation (what the grammar produces)."""
    from josh_core.llm.structured import COMMAND_END, format_react

    return format_react("", call=call, speak=speak).split(f"{COMMAND_END}\n", 1)[1]


class CompactAgent(ModelAgent):
    style = "compact"

    def constraint(self, tools, actions=("apicall", "speak")):
        from josh_core.llm.structured import react_constraint

        return react_constraint(tools, actions, plan=False, speak_max_tokens=COMPACT_SPEAK_MAX_TOKENS)

    def default_max_tokens(self) -> int:
        return COMPACT_MAX_TOKENS if self.constrained else COMPACT_FREE_MAX_TOKENS

    def prompt_messages(self, env: ToolEnvironment) -> list[Message]:
        return [Message(role="system", content=compact_system_prompt(env.tools(), domain_instructions(env)))]

    def system_prompt(self, env: ToolEnvironment) -> str:
        return self.prompt_messages(env)[0].content

    async def act(self, ctx: TurnContext) -> AgentTurn:
        env = ctx.env
        tools = env.tools()
        prefix = self.prompt_messages(env)
        turn = AgentTurn()
        for index in range(self.max_actions_per_turn):
            conversation = list(ctx.agent_memory) + turn.internal
            last = index == self.max_actions_per_turn - 1
            request = ChatRequest(
                messages=prefix + conversation,
                sampling=self.sampling(generation_seed(ctx.seed, index), REACT_STOP),
                constraint=self._constraint_or_none(tools, conversation,
                                                    actions=("speak",) if last else ("apicall", "speak")),
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
                turn.internal += [message, Message(role="user", content=compact_format_feedback(parsed.error or ""))]
                turn.format_errors += 1
                continue
            # The kept text is the action alone (a PLAN, if a free model wrote one, is dropped).
            kept = parsed.text.split("\n", 1)[1] if parsed.plan is not None and "\n" in parsed.text else parsed.text
            message = Message(role="assistant", content=kept)
            turn.generations.append(Generation(text=text, message=message, action=parsed.kind, **stats))
            turn.internal.append(message)
            if parsed.kind == "speak":
                turn.speak = parsed.speak or ""
                break
            record = env.execute(parsed.call, parsed.call_text)
            turn.api_calls.append(record)
            turn.internal.append(Message(role="user", content=f"{APIRETURN} {record.result.as_text()}"))
        return turn
