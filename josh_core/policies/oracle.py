"""OracleAgent: a privileged ToolWOZ agent that proves a user simulator gives enough.

It reads the scenario's goal calls, but makes a goal call only once every value in it was
said by the user or returned by an earlier API result on this path, so reaching reward 1.0
with a simulator shows that the simulator conveys everything a perfect agent needs (search
constraints, fallbacks, booking details). It also walks the fallback paths a real agent
would hit: it searches with the first-try constraints and books with the first-try details
the user gave, and reports the failures, so the user has to produce its fallbacks.
It is an instrument for tests and benches, not a model agent.

Its turns are written in the compact agent style (`APICALL {...} <COMMAND_END>`, `APIRETURN
...`, `SPEAK ... <COMMAND_END>`, parameters in schema order, as the action grammar writes
them) behind the compact system prompt, so its conversations export as SFT data a compact
agent can learn the format from: the warm start of the self-training experiment
(docs/experiments.md), stated as such there. Agent SPEC `oracle`.

On environments that know their gold actions (τ²: `env.gold_turn`), the oracle plays those
back instead (josh_core/envs/tau2/oracle.py) and writes them as its turn.
"""

from __future__ import annotations

import re
from typing import Any

from josh_core.policies.base import AgentTurn, TurnContext
from josh_core.policies.compact_agent import compact_action
from josh_core.types import ApiCallRecord, Message, ToolCall, env_feature

_LABELS = {"pricerange": "price range", "leaveAt": "departure time", "arriveBy": "arrival time",
           "stay": "number of nights", "people": "number of people", "food": "type of food"}
_NOUN = {"restaurant": "restaurant", "hotel": "place to stay", "attraction": "attraction", "train": "train"}


def _flat_values(value: Any, out: set[str]) -> None:
    if isinstance(value, dict):
        for v in value.values():
            _flat_values(v, out)
    elif isinstance(value, list):
        for v in value:
            _flat_values(v, out)
    elif value is not None:
        out.add(str(value).lower())


def _stated(slot: str, value: str, user_text: str) -> bool:
    value = value.lower()
    if slot in ("parking", "internet"):
        what = "free parking" if slot == "parking" else "free wifi"
        return (f"no {what}" in user_text) if value == "no" else (f"with {what}" in user_text)
    return re.search(rf"(?<![\w:]){re.escape(value)}(?![\w:])", user_text) is not None


def _in_schema_order(params: dict[str, Any], tools: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The call's parameters in the order its schema declares them (the grammar's order)."""
    for tool in tools:
        fn = tool.get("function", tool)
        if fn.get("name") == name:
            order = list(((fn.get("parameters") or {}).get("properties") or {}))
            return {k: params[k] for k in sorted(params, key=lambda k: order.index(k) if k in order else len(order))}
    return dict(params)


def _gold_agent_turn(records: list[ApiCallRecord], speak: str) -> AgentTurn:
    """An environment's gold actions (already made, with their results) as a compact-style turn."""
    turn = AgentTurn(api_calls=list(records), speak=speak)
    for record in records:
        turn.internal.append(Message(role="assistant", content=compact_action(
            call={"name": record.call.name, "parameters": record.call.parameters})))
        turn.internal.append(Message(role="user", content=f"APIRETURN {record.result.as_text()}"))
    turn.internal.append(Message(role="assistant", content=compact_action(speak=speak)))
    return turn


class OracleAgent:
    name = "oracle"
    style = "compact"

    def prompt_messages(self, env: Any) -> list[Message]:
        from josh_core.policies.prompts import compact_system_prompt, domain_instructions

        return [Message(role="system", content=compact_system_prompt(env.tools(), domain_instructions(env)))]

    def system_prompt(self, env: Any) -> str:
        return self.prompt_messages(env)[0].content

    async def act(self, ctx: TurnContext) -> AgentTurn:
        scenario, env = ctx.scenario, ctx.env
        # Environments with gold actions (τ²) play them back: josh_core/envs/tau2/oracle.py.
        gold = env_feature(env, "gold_turn")
        if callable(gold):
            return _gold_agent_turn(*gold(ctx.api_calls))
        user_text = " ".join(m.content for m in ctx.history if m.role == "user").lower()
        records: list[ApiCallRecord] = list(ctx.api_calls)
        made = {(r.call.name, tuple(sorted(r.call.parameters.items()))) for r in records if r.call}
        turn = AgentTurn()
        said: list[str] = []

        def known(slot: str, value: str) -> bool:
            returned: set[str] = set()
            for r in records:
                if r.result.ok:
                    _flat_values(r.result.content, returned)
            return _stated(slot, value, user_text) or value.lower() in returned

        def call(name: str, params: dict[str, str]) -> ApiCallRecord:
            record = env.execute(ToolCall(name=name, parameters=params), None)
            records.append(record)
            turn.api_calls.append(record)
            made.add((name, tuple(sorted(params.items()))))
            ordered = _in_schema_order(params, env.tools(), name)
            turn.internal.append(Message(role="assistant", content=compact_action(call={"name": name, "parameters": ordered})))
            turn.internal.append(Message(role="user", content=f"APIRETURN {record.result.as_text()}"))
            return record

        ids = scenario.goal_call_ids()
        for domain in scenario.domains:
            goal = scenario.goal[domain]
            noun = _NOUN[domain]
            for gid, g in zip(ids, scenario.goal_calls):
                if g.domain != domain or gid in env.completed_goals(records):
                    continue
                params = {k: v for k, v in g.parameters.items() if v}
                missing = [k for k, v in params.items() if not known(k, v)]
                if g.intent == "search":
                    first = {**goal.info, **goal.fail_info}
                    if goal.fail_info and first != goal.info and all(known(k, v) for k, v in first.items()) \
                            and (g.name, tuple(sorted(first.items()))) not in made:
                        call(g.name, first)
                        said.append(f"Sorry, there is no {noun} like that.")
                        break
                    if missing:
                        said.append(f"What {_LABELS.get(missing[0], missing[0])} would you like for the {noun}?")
                        break
                    record = call(g.name, params)
                    if record.result.ok and record.result.content:
                        said.append(f"I found {record.result.content[0].get('name') or record.result.content[0].get('trainID')}.")
                    continue
                # booking
                name_key = "trainID" if domain == "train" else "name"
                first = {**goal.book, **goal.fail_book, name_key: params.get(name_key, "")}
                if goal.fail_book and first != params and all(known(k, v) for k, v in first.items()) \
                        and (g.name, tuple(sorted(first.items()))) not in made:
                    call(g.name, first)
                    said.append(f"Sorry, booking the {noun} failed.")
                    break
                if missing:
                    wanted = [_LABELS.get(m, m) for m in missing if m != name_key]
                    said.append(f"Would you like me to book the {noun}? What {' and '.join(wanted) or 'details'}?")
                    break
                record = call(g.name, params)
                if record.result.ok and (record.result.content or {}).get("success"):
                    ref = (record.result.content.get("return") or {}).get("reference", "")
                    said.append(f"I have booked the {noun}; the reference number is {ref}.")
            else:
                continue
            break
        turn.speak = " ".join(said) or "Is there anything else I can help you with?"
        turn.internal.append(Message(role="assistant", content=compact_action(speak=turn.speak)))
        return turn
