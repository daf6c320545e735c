"""Shared fixtures for the engine, storage, extraction and rollout tests.

`ToyEnv` is a tiny ToolEnvironment whose goals are specific calls: goal `i:name` is completed
by a successful call of `name` whose parameters include the goal's parameters. It answers
every call from the call alone, as the engine requires.
"""

from __future__ import annotations

from typing import Any

from josh_core.llm.structured import format_react
from josh_core.policies.script import ScriptAgent, ScriptUser
from josh_core.types import ApiCallRecord, ApiResult, ToolCall


def call(api: str, /, **parameters: Any) -> str:
    """A ReACT generation that makes one API call (in the canonical text the agent keeps)."""
    return format_react(f"call {api}", call={"name": api, "parameters": parameters})


def speak(text: str, plan: str = "answer the user") -> str:
    """A ReACT generation that speaks to the user (ends the turn)."""
    return format_react(plan, speak=text)


class ToyEnv:
    def __init__(self, goals: list[tuple[str, dict[str, str]]], apis: list[str] | None = None):
        self.goals = goals
        self.apis = apis or sorted({name for name, _ in goals} | {"search_other"})
        self.executed = 0

    def tools(self) -> list[dict[str, Any]]:
        return [
            {"type": "function", "function": {"name": name, "description": f"the {name} API",
                                              "parameters": {"type": "object", "properties": {}}}}
            for name in self.apis
        ]

    def execute(self, call: ToolCall | None, raw: str | None = None) -> ApiCallRecord:
        self.executed += 1
        if call is None:
            result = ApiResult(ok=False, error_kind="bad_format", error="could not parse the call")
        elif call.name not in self.apis:
            result = ApiResult(ok=False, error_kind="unknown_api", error=f"no API named {call.name}")
        else:
            result = ApiResult(ok=True, content=[{"api": call.name, **call.parameters}])
        return ApiCallRecord(call=call, raw=raw, result=result)

    def goal_ids(self) -> list[str]:
        return [f"{i}:{name}" for i, (name, _) in enumerate(self.goals)]

    def completed_goals(self, calls: list[ApiCallRecord]) -> set[str]:
        done = set()
        for goal_id, (name, params) in zip(self.goal_ids(), self.goals):
            for record in calls:
                c = record.call
                if c and record.result.ok and c.name == name and params.items() <= c.parameters.items():
                    done.add(goal_id)
                    break
        return done


def agent(turns: list[list[list[str]]]) -> ScriptAgent:
    return ScriptAgent(turns)


def user(n: int = 20, prefix: str = "user says") -> ScriptUser:
    return ScriptUser([f"{prefix} {i}" for i in range(n)])


def chatty_agent(n_turns: int = 20) -> ScriptAgent:
    """An agent that only talks (two alternatives per turn), never reaching a goal."""
    return ScriptAgent(
        [[[speak(f"turn {t} option A")], [speak(f"turn {t} option B")]] for t in range(n_turns)]
    )


def store_conversations(db, searches: list[tuple], kind: str = "josh", config: dict | None = None) -> list:
    """Run each (agent, user, env, search config) into one new run of `db`; returns the trees.

    The system prompt stored for each conversation is "SYS".
    """
    import asyncio

    from josh_core.search.engine import JoshSearch
    from josh_core.storage import writes

    run_id = writes.create_run(
        db, kind=kind, config=config or {}, scenarios=[(f"s{i}", {"id": f"s{i}"}) for i in range(len(searches))]
    )
    trees = []
    for i, (agent_, user_, env, search_config) in enumerate(searches):
        cid = writes.conversation_id(run_id, i)
        writes.start_conversation(db, cid, system_prompt="SYS", tools=env.tools(), seed=0, goals=env.goal_ids())
        search = JoshSearch(agent_, user_, env, config=search_config, conversation_id=cid, sink=writes.TreeWriter(db))
        asyncio.run(search.run_to_end())
        writes.finish_conversation(db, search.tree, seconds=0.1)
        trees.append(search.tree)
    return trees
