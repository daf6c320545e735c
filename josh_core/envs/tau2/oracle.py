"""The oracle agent's turn on a τ² task (agent SPEC `oracle`): the gold actions, played back.

On its first turn the oracle makes every gold action of the task (reads and writes, in the
benchmark's order) on its path's view of the database; on later turns only gold actions the
path has not made yet. Every turn tells the user the required outputs (`communicate_info`).
Its reward is 1.0 on every task: the check that tools, replay and scoring agree
(tests/test_envs_tau2.py).

The environment says what to do (`Tau2PathEnv.gold_turn`: the calls it made and the sentence
to say); the oracle agent (josh_core/policies/oracle.py) writes them as its turn, in the
compact agent style, so the environment needs nothing from the agents' layer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, NamedTuple

from josh_core.envs.tau2.tasks import call_key
from josh_core.types import ApiCallRecord, ToolCall


class GoldTurn(NamedTuple):
    api_calls: list[ApiCallRecord]  # the gold actions this turn made, in order, with their results
    speak: str  # what the oracle says to the user


def gold_turn(env: Any, api_calls: Sequence[ApiCallRecord]) -> GoldTurn:
    """The gold actions the path (`api_calls` so far) has not made yet, made on `env` (a path
    view: Tau2PathEnv, whose `task` is a Tau2Task), and what to say."""
    task = env.task
    made = Counter(call_key(r.call) for r in api_calls if r.call is not None)
    records: list[ApiCallRecord] = []
    for action in task.actions:
        call = ToolCall(name=action.name, parameters=action.arguments)
        key = call_key(call)
        if made[key] > 0:  # made on an earlier turn of this path
            made[key] -= 1
            continue
        records.append(env.execute(call))
    speak = "I have taken care of your request." if records else "Is there anything else I can help you with?"
    if task.communicate_info:
        speak += " For your information: " + "; ".join(task.communicate_info) + "."
    return GoldTurn(records, speak)
