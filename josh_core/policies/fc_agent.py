"""Function-calling agent: the OpenAI tools schema, tool calls executed, plain text = SPEAK.

A turn is generations until the model answers in text (or the action cap). Every tool call
of a generation is run on the environment and answered with a tool message. A generation
with neither a readable call nor text is a format error (recorded, with feedback).
"""

from __future__ import annotations

import time
from typing import Any

from josh_core.llm.base import ChatRequest
from josh_core.policies.base import AgentTurn, Generation, TurnContext
from josh_core.policies.prompts import FC_FORMAT_FEEDBACK, fc_system_prompt
from josh_core.policies.react_agent import ModelAgent, generation_seed
from josh_core.types import Message, ToolCall, ToolEnvironment

FC_MAX_TOKENS = 200


class FunctionCallingAgent(ModelAgent):
    style = "fc"

    def constraint(self, tools):
        from josh_core.llm.structured import fc_constraint

        return fc_constraint(tools)

    def default_max_tokens(self) -> int:
        return FC_MAX_TOKENS

    def system_prompt(self, env: ToolEnvironment) -> str:
        return fc_system_prompt(env)

    async def act(self, ctx: TurnContext) -> AgentTurn:
        env = ctx.env
        tools = env.tools()
        system = Message(role="system", content=self.system_prompt(env))
        turn = AgentTurn()
        call_serial = 0
        for index in range(self.max_actions_per_turn):
            conversation = [*ctx.agent_memory, *turn.internal]
            request = ChatRequest(
                messages=[system, *conversation],
                tools=tools,
                sampling=self.sampling(generation_seed(ctx.seed, index)),
                constraint=self._constraint_or_none(tools, conversation),
            )
            start = time.perf_counter()
            response, unconstrained = await self.generate(request)
            stats: dict[str, Any] = {"prompt_tokens": response.prompt_tokens,
                                     "completion_tokens": response.completion_tokens,
                                     "seconds": time.perf_counter() - start, "unconstrained": unconstrained}
            choice = response.choices[0] if response.choices else None
            text = (choice.text if choice else "").strip()
            calls = list(choice.tool_calls or []) if choice else []
            if calls:
                # Ids unique within the path, so tool messages pair with their call.
                named: list[ToolCall] = []
                for call in calls:
                    call_serial += 1
                    named.append(call.model_copy(update={"id": f"t{ctx.turn_index}g{index}c{call_serial}"}))
                message = Message(role="assistant", content=text, tool_calls=named)
                turn.generations.append(Generation(text=text, message=message, action="apicall", **stats))
                turn.internal.append(message)
                for call in named:
                    record = env.execute(call, None)
                    turn.api_calls.append(record)
                    turn.internal.append(Message(role="tool", content=record.result.as_text(), tool_call_id=call.id))
                continue
            if not text or text.startswith('{"tool_call"'):
                message = Message(role="assistant", content=text)
                reason = "empty reply" if not text else "unreadable tool call"
                turn.generations.append(Generation(text=text, message=message, action="format_error",
                                                   format_error=reason, **stats))
                turn.internal += [message, Message(role="user", content=FC_FORMAT_FEEDBACK)]
                turn.format_errors += 1
                continue
            message = Message(role="assistant", content=text)
            turn.generations.append(Generation(text=text, message=message, action="speak", **stats))
            turn.internal.append(message)
            turn.speak = text
            break
        return turn
