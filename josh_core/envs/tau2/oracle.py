"""The oracle agent's turn on a τ² task (agent SPEC `oracle`): the gold actions, played back.

On its first turn the oracle makes every gold action of the task (reads and writes, in the
benchmark's order) on its path's view of the database; on later turns only gold actions the
path has not made yet. Every turn tells the user the required outputs (`communicate_info`).
Its reward is 1.0 on every task: the check that tools, replay and scoring agree
(tests/test_envs_tau2.py). Its turns are written in the compact agent style, like the ToolWOZ
oracle's (josh_core/policies/oracle.py).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from josh_core.policies.base import AgentTurn, TurnContext
from josh_core.policies.compact_agent import compact_action
from josh_core.types import Message, ToolCall


def oracle_turn(env: Any, ctx: TurnContext) -> AgentTurn:
    """One oracle turn on `env` (a path view: Tau2PathEnv) for `ctx.scenario` (a Tau2Task)."""
    from josh_core.envs.tau2.env import call_key

    task = env.task
    made = Counter(call_key(r.call) for r in ctx.api_calls if r.call is not None)
    turn = AgentTurn()
    for action in task.actions:
        call = ToolCall(name=action.name, parameters=action.arguments)
        key = call_key(call)
        if made[key] > 0:  # made on an earlier turn of this path
            made[key] -= 1
            continue
        record = env.execute(call)
        turn.api_calls.append(record)
        turn.internal.append(Message(role="assistant", content=compact_action(
            call={"name": call.name, "parameters": call.parameters})))
        turn.internal.append(Message(role="user", content=f"APIRETURN {record.result.as_text()}"))
    speak = "I have taken care of your request." if turn.api_calls else "Is there anything else I can help you with?"
    if task.communicate_info:
        speak += " For your information: " + "; ".join(task.communicate_info) + "."
    turn.speak = speak
    turn.internal.append(Message(role="assistant", content=compact_action(speak=speak)))
    return turn
