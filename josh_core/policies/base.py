"""The two policy interfaces the JOSH engine drives: an agent and a user simulator.

Both take one turn over a conversation state and are async, so the engine can advance every
leaf of a tree concurrently (`asyncio.gather`). Backends below them batch concurrent requests
(one batched `generate` for in-process models, parallel HTTP for servers). The engine never
knows which model, script or rule set is behind a policy.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, Field

# Generation is defined in josh_core.types (the tree and storage carry it); importable from here too.
from josh_core.types import ApiCallRecord, Generation, Message, ToolEnvironment

__all__ = ["Agent", "AgentTurn", "Generation", "TurnContext", "UserSimulator", "UserTurn"]


class AgentTurn(BaseModel):
    """A whole agent turn: generations until SPEAK (or the action cap), with the API calls."""

    generations: list[Generation] = Field(default_factory=list)
    # Internal messages appended to the agent's own history in order: assistant generations,
    # API returns (ReACT: user-role "APIRETURN ..." messages; FC: tool messages), error feedback.
    internal: list[Message] = Field(default_factory=list)
    api_calls: list[ApiCallRecord] = Field(default_factory=list)
    speak: str = ""  # what the user sees; empty if the turn ended without SPEAK
    format_errors: int = 0


class UserTurn(BaseModel):
    """One user simulator turn."""

    text: str
    ended: bool = False  # the user hung up (END_CONVERSATION); no further agent turns


class TurnContext(BaseModel):
    """Everything a policy may look at when it takes its turn on one leaf of the tree."""

    model_config = {"arbitrary_types_allowed": True}

    # The visible conversation so far, oldest first: user turns as role "user" and agent turns
    # as role "assistant" (the agent's spoken text only).
    history: list[Message]
    # The agent's own internal history on this path (all previous AgentTurn.internal, with the
    # user's utterances interleaved as role "user" messages), excluding the system prompt.
    agent_memory: list[Message] = Field(default_factory=list)
    # All API calls made so far on this path, oldest first (user simulators may read them).
    api_calls: list[ApiCallRecord] = Field(default_factory=list)
    env: Any = None  # ToolEnvironment of this scenario; agents call env.execute()
    scenario: Any = None  # the scenario object (user simulators read the goal from it)
    turn_index: int = 0  # how many turns this policy has taken before on this path
    child_index: int = 0  # which child of its parent this node is (script policies use it)
    seed: int = 0  # per-node seed, derived from the run seed and the node's path


@runtime_checkable
class Agent(Protocol):
    name: str

    async def act(self, ctx: TurnContext) -> AgentTurn:
        """Take one whole turn. Must not raise on bad model output (record a format error)."""
        ...

    def system_prompt(self, env: ToolEnvironment) -> str:
        """The system prompt the agent uses (exported with SFT/KTO/DPO data)."""
        ...


@runtime_checkable
class UserSimulator(Protocol):
    name: str

    async def reply(self, ctx: TurnContext) -> UserTurn:
        """The user's next utterance given the visible conversation (empty history = opener)."""
        ...
