"""Script policies: an agent and a user that replay JSON files, so any tree can be built and
any run reproduced without a model (DESIGN.md, "Script files").

Agent file: `{"turns": [[alt, alt, ...], ...]}`. `turns[t]` are the alternatives for the
agent's t-th turn on a path; each alternative is the list of generations the agent emits in
that turn, in order, as ReACT text (`PLAN ... <COMMAND_END> APICALL {...} <COMMAND_END>` or
`PLAN ... <COMMAND_END> SPEAK ... <COMMAND_END>`), read exactly as the ReACT agent reads a
model's output. A node that is child `c` of its parent plays alternative
`c % len(turns[t])`. Past the end of the script the agent replays the last turn's
alternatives. A turn ends at the first SPEAK or when its generations run out.

User file: `{"turns": ["utterance", ...]}`; `turns[t]` is the user's t-th utterance on a path
(`turns[0]` is the opener). After the last one the user ends the conversation.

Either file may say `"latency": SECONDS`: every turn then waits that long first, as a model
server would (benchmarks and the distributed tests use it; the tree does not change).
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

from josh_core.policies.base import AgentTurn, Generation, TurnContext, UserTurn
from josh_core.policies.parse import parse_react
from josh_core.policies.prompts import APIRETURN, react_format_feedback
from josh_core.types import END_CONVERSATION, Message, ToolEnvironment


def _load_turns(path: str | Path) -> list[Any]:
    return _load_script(path)[0]


def _load_script(path: str | Path) -> tuple[list[Any], float]:
    """A script file's turns and its latency per turn (seconds, default 0)."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or not isinstance(data.get("turns"), list):
        raise ValueError(f"{path}: expected a JSON object with a 'turns' list")
    latency = data.get("latency", 0)
    if isinstance(latency, bool) or not isinstance(latency, (int, float)) or not math.isfinite(latency) or not 0 <= latency <= 3600:
        raise ValueError(f"{path}: 'latency' must be a number of seconds from 0 to 3600")
    return data["turns"], float(latency)


class ScriptAgent:
    """Replays scripted ReACT generations; API calls really go to the environment."""

    def __init__(self, turns: list[list[list[str]]], name: str = "script", latency: float = 0.0):
        if not turns:
            raise ValueError("a script agent needs at least one turn")
        if not isinstance(turns, list):
            raise ValueError("an agent script's turns must be a list")
        for t, alternatives in enumerate(turns):
            if not isinstance(alternatives, list) or not alternatives or not all(isinstance(alt, list) for alt in alternatives):
                raise ValueError(f"agent script turn {t}: expected a non-empty list of alternatives")
            for a, alternative in enumerate(alternatives):
                if not all(isinstance(text, str) for text in alternative):
                    raise ValueError(f"agent script turn {t}, alternative {a}: generations must be strings")
        self.turns = turns
        self.name = name
        self.latency = latency  # seconds waited before every turn (a model server's latency)

    @classmethod
    def from_file(cls, path: str | Path) -> ScriptAgent:
        turns, latency = _load_script(path)
        return cls(turns, name=f"script:{path}", latency=latency)

    def system_prompt(self, env: ToolEnvironment) -> str:
        from josh_core.policies.prompts import domain_instructions

        names = ", ".join(tool["function"]["name"] for tool in env.tools() if "function" in tool)
        generic = (
            "You are a customer service agent helping a user. Use PLAN, APICALL and SPEAK "
            f"commands, each ended by <COMMAND_END>. Available APIs: {names}."
        )
        instructions = domain_instructions(env)  # τ²: the role and the policy lead
        return f"{instructions}\n\n{generic}" if instructions else generic

    def alternative(self, turn_index: int, child_index: int) -> list[str]:
        alternatives = self.turns[min(turn_index, len(self.turns) - 1)]
        return alternatives[child_index % len(alternatives)]

    async def act(self, ctx: TurnContext) -> AgentTurn:
        # Each text is read exactly as the ReACT agent reads a model's output (same parser,
        # same history text, same error feedback), so a script stands in for a model.
        if self.latency:
            await asyncio.sleep(self.latency)
        turn = AgentTurn()
        for text in self.alternative(ctx.turn_index, ctx.child_index):
            parsed = parse_react(text)
            if parsed.kind == "format_error":
                message = Message(role="assistant", content=text)
                turn.generations.append(
                    Generation(text=text, message=message, action="format_error", format_error=parsed.error)
                )
                turn.internal += [message, Message(role="user", content=react_format_feedback(parsed.error or ""))]
                turn.format_errors += 1
                continue
            message = Message(role="assistant", content=parsed.text)
            turn.generations.append(Generation(text=text, message=message, action=parsed.kind))
            turn.internal.append(message)
            if parsed.kind == "speak":
                turn.speak = parsed.speak or ""
                break
            record = ctx.env.execute(parsed.call, parsed.call_text)
            turn.api_calls.append(record)
            turn.internal.append(Message(role="user", content=f"{APIRETURN} {record.result.as_text()}"))
        return turn


class ScriptUser:
    """Says the scripted utterances in order, then hangs up."""

    def __init__(self, turns: list[str], name: str = "script", latency: float = 0.0):
        if not isinstance(turns, list) or not all(isinstance(t, str) for t in turns):
            raise ValueError("a script user's turns must be strings")
        self.turns = turns
        self.name = name
        self.latency = latency

    @classmethod
    def from_file(cls, path: str | Path) -> ScriptUser:
        turns, latency = _load_script(path)
        return cls(turns, name=f"script:{path}", latency=latency)

    async def reply(self, ctx: TurnContext) -> UserTurn:
        if self.latency:
            await asyncio.sleep(self.latency)
        if ctx.turn_index < len(self.turns):
            return UserTurn(text=self.turns[ctx.turn_index])
        return UserTurn(text=END_CONVERSATION, ended=True)
