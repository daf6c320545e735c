"""LLMUser: the goal-based user simulator of section 4.3, over any chat backend.

The model plays the customer: the system prompt carries the scenario's goal; the visible
conversation is given with roles swapped (the agent's words as "user" messages, the
simulator's own earlier words as "assistant"), and a reminder closes every request. It
says END_CONVERSATION to hang up (the token stays in the stored text, as with the agenda user). Temperature
0 by default, as in the paper. Scenarios of other environments bring their own goal text
(`scenario.user_system_prompt()`, `scenario.user_reminder`: τ² tasks).
"""

from __future__ import annotations

from josh_core.llm.base import ChatBackend, ChatRequest, SamplingParams
from josh_core.policies.base import TurnContext, UserTurn
from josh_core.policies.prompts import END_CONVERSATION, USER_OPENER_CUE, USER_REMINDER, user_system_prompt
from josh_core.types import Message

USER_MAX_TOKENS = 96


class LLMUser:
    def __init__(self, backend: ChatBackend, *, temperature: float = 0.0, max_tokens: int = USER_MAX_TOKENS,
                 max_turns: int = 30):
        self.backend = backend
        self.name = f"llm:{backend.name}"
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.max_turns = max_turns

    def messages(self, ctx: TurnContext) -> list[Message]:
        """The request: goal prompt, the conversation from the customer's side, a reminder."""
        out = [Message(role="system", content=user_system_prompt(ctx.scenario))]
        # The customer's view: the agent speaks as "user", the customer as "assistant". The
        # phone is answered first so the roles alternate from the start.
        out.append(Message(role="user", content=USER_OPENER_CUE))
        for msg in ctx.history:
            role = "assistant" if msg.role == "user" else "user"
            out.append(Message(role=role, content=msg.content))
        reminder = getattr(ctx.scenario, "user_reminder", None) or USER_REMINDER  # τ² tasks bring their own
        if out[-1].role == "user":
            out[-1] = Message(role="user", content=out[-1].content + "\n\n" + reminder)
        else:  # only when the history ends with the customer (not in normal turn order)
            out.append(Message(role="user", content=reminder))
        return out

    async def reply(self, ctx: TurnContext) -> UserTurn:
        users_turns = sum(1 for m in ctx.history if m.role == "user")
        if users_turns >= self.max_turns:
            return UserTurn(text=f"Goodbye. {END_CONVERSATION}", ended=True)
        request = ChatRequest(
            messages=self.messages(ctx),
            sampling=SamplingParams(temperature=self.temperature, max_tokens=self.max_tokens,
                                    seed=ctx.seed, stop=["\nAgent:", "\nAGENT:"]),
        )
        response = await self.backend.chat(request)
        return parse_user_text(response.choices[0].text if response.choices else "")


def parse_user_text(text: str) -> UserTurn:
    """A model's customer line -> UserTurn; END_CONVERSATION anywhere means hang up."""
    text = text.strip()
    for prefix in ("Customer:", "CUSTOMER:", "User:", "USER:"):
        if text.startswith(prefix):
            text = text[len(prefix):].strip()
    ended = END_CONVERSATION in text
    spoken = text.replace(END_CONVERSATION, "").strip()
    if ended:
        return UserTurn(text=(spoken + " " + END_CONVERSATION).strip(), ended=True)
    if not spoken:
        # An empty line from the model would stall the agent; treat it as hanging up.
        return UserTurn(text=END_CONVERSATION, ended=True)
    return UserTurn(text=spoken)
