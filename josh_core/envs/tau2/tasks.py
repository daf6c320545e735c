"""τ²-bench tasks as scenarios of the workbench.

A `Tau2Task` keeps the benchmark's task (user scenario, gold actions, required outputs,
reward basis) and shows it the way the rest of the workbench reads a scenario: an `id`
unique across environments (`retail-0`), `env` (the registry name, so a stored scenario finds
its environment), `domains`, `instructions` (the user's instructions as lines, shown in the
app) and `goal_calls`: the task's gold *write* actions, JOSH's sparse reward (as the paper did
for τ-bench), with goal ids `<index>:<api>` like ToolWOZ's.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

from josh_core.types import END_CONVERSATION, ToolCall


def call_key(call: ToolCall) -> str:
    """A call as a comparable key: its name and its parameters (replays and gold actions match on it)."""
    return call.name + "\x00" + json.dumps(call.parameters, sort_keys=True, default=str)


class GoldAction(BaseModel):
    action_id: str = ""
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    compare_args: list[str] | None = None  # compare only these arguments (None: all of them)
    info: Any = None


class Tau2GoalCall(BaseModel):
    """A gold write action as a JOSH goal call."""

    name: str
    parameters: dict[str, Any]
    domain: str
    action_id: str = ""
    compare_args: list[str] | None = None

    @property
    def intent(self) -> str:
        return "write"


class Tau2Task(BaseModel):
    id: str  # "<domain>-<task id>"
    env: str  # "tau2-retail" | "tau2-airline"
    source: str = "tau2-bench"
    task_id: str
    domains: list[str]
    instructions: list[str]
    user_scenario: dict[str, Any] = Field(default_factory=dict)
    description: dict[str, Any] | None = None
    actions: list[GoldAction] = Field(default_factory=list)
    goal_calls: list[Tau2GoalCall] = Field(default_factory=list)
    communicate_info: list[str] = Field(default_factory=list)
    nl_assertions: list[str] | None = None
    reward_basis: list[str] = Field(default_factory=list)
    trial: int = 0  # which trial of the task this is (`josh eval --trials K`: Pass^k); seeds differ per trial

    def goal_call_ids(self) -> list[str]:
        return [f"{i}:{g.name}" for i, g in enumerate(self.goal_calls)]

    @property
    def domain(self) -> str:
        return self.domains[0]

    @property
    def user_reminder(self) -> str:
        return USER_REMINDER

    def user_system_prompt(self) -> str:
        """The LLM user's system prompt: who they are and what they want (our own wording)."""
        return USER_TEMPLATE.format(domain=self.domain, instructions="\n".join(self.instructions),
                                    end=END_CONVERSATION)


USER_TEMPLATE = """You play a customer who contacts the customer service of {domain} company by chat. Your situation and what you want:
{instructions}

How to behave:
- Say only what a customer in this situation would say, a little at a time; do not give every detail at once.
- Give facts only from the instructions above. If the agent asks for something you do not know, say you do not know it.
- Follow the instructions above about what you accept and what you refuse.
- Keep each message short, as the customer. Never act as the agent.
- When your request is handled, or the agent clearly cannot help, say goodbye and then {end}."""


USER_REMINDER = ("(Reminder: you are the customer. Say the next thing this customer would say, following your "
                 f"instructions; do not give everything at once. Write {END_CONVERSATION} to end the chat. Reply "
                 "with the customer's next message only.)")


_PARTS = (("reason_for_call", "Reason for your call"), ("known_info", "What you know"),
          ("unknown_info", "What you do not know"), ("task_instructions", "How you behave"))


def instruction_lines(user_scenario: dict[str, Any]) -> list[str]:
    """The user's instructions as lines (persona first, then the instruction parts)."""
    lines = []
    if user_scenario.get("persona"):
        lines.append(f"Persona: {user_scenario['persona']}")
    instructions = user_scenario.get("instructions")
    if isinstance(instructions, str):
        return lines + [instructions]
    for key, label in _PARTS:
        value = (instructions or {}).get(key)
        if value:
            lines.append(f"{label}: {' '.join(str(value).split())}")
    return lines


def task_from_benchmark(raw: dict[str, Any], env: str, domain: str, write_tools: set[str]) -> Tau2Task:
    """One entry of τ²-bench's tasks.json as a Tau2Task."""
    criteria = raw.get("evaluation_criteria") or {}
    actions = [GoldAction.model_validate(a) for a in criteria.get("actions") or []]
    goals = [Tau2GoalCall(name=a.name, parameters=a.arguments, domain=domain, action_id=a.action_id,
                          compare_args=a.compare_args)
             for a in actions if a.name in write_tools]
    scenario = raw.get("user_scenario") or {}
    return Tau2Task(
        id=f"{domain}-{raw['id']}", env=env, task_id=str(raw["id"]), domains=[domain],
        instructions=instruction_lines(scenario), user_scenario=scenario, description=raw.get("description"),
        actions=actions, goal_calls=goals, communicate_info=[str(x) for x in criteria.get("communicate_info") or []],
        nl_assertions=criteria.get("nl_assertions"), reward_basis=list(criteria.get("reward_basis") or []),
    )
