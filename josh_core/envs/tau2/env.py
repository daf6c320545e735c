"""One τ² task as a `ToolEnvironment`: stateful tools whose leaves stay apart, τ² reward.

State. `initial_state()` is the domain's database; `apply(state, call) -> (record,
new_state)` runs one call and never changes `state`. `for_path(calls)` is the view the JOSH
engine gives an agent turn: the initial state with the path's calls replayed (only
successful writes change a state, so the replay is cached by them), whose `execute` applies
its own calls to its own state. Two sibling leaves get two views: neither sees the other's
writes, the root's state never changes, and the tree is the same whatever runs concurrently.
`execute` on the task's environment itself answers from the initial state and keeps nothing.

Goals (JOSH's sparse reward). The task's gold write actions are the goal calls: a goal is
completed by a successful call of its API whose arguments equal the gold arguments (only the
gold action's `compare_args` when it names some).

Reward (τ²-bench's). Replay the path's calls on the initial state, replay the task's gold
actions on the initial state (failing gold actions are skipped, as in τ²-bench), and compare
the two databases record by record; the reward is 1.0 when they are equal and every required
output (`communicate_info`) appears in something the agent said (case-insensitive, commas
removed), else 0.0. τ²-bench's natural-language assertions need an LLM judge and are not
evaluated here (they are kept in the task, and the score says so).
"""

from __future__ import annotations

import copy
import json
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from josh_core.envs.tau2.state import DbState, Transaction
from josh_core.envs.tau2.oracle import GoldTurn, gold_turn
from josh_core.envs.tau2.tasks import Tau2Task, call_key
from josh_core.envs.tau2.tools import ArgumentError, Tool, ToolError, check_arguments
from josh_core.envs.score import MissedGoal, ParamDiff, ScoreReport
from josh_core.types import ApiCallRecord, ApiResult, Message, ToolCall

_BAD_FORMAT_HINT = 'Write the call as JSON: {"name": "<api name>", "parameters": {"<parameter>": <value>}}.'
_STATE_CACHE = 256  # replayed states kept per task environment


@dataclass
class Tau2Domain:
    """What one τ² domain brings: its tools, database, policy and prompt text."""

    name: str  # "retail"
    env_name: str  # "tau2-retail"
    tools: list[Tool]
    api_examples: list[dict[str, Any]]
    role: str  # the first sentence of the agent's instructions
    load_tables: Any  # () -> Tables (shared, never changed)
    load_policy: Any  # () -> str
    _by_name: dict[str, Tool] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self._by_name = {tool.name: tool for tool in self.tools}

    def tool(self, name: str) -> Tool | None:
        return self._by_name.get(name)

    @property
    def write_tools(self) -> set[str]:
        return {tool.name for tool in self.tools if tool.writes}

    def schemas(self) -> list[dict[str, Any]]:
        return [tool.schema() for tool in self.tools]


def _json_copy(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _agent_texts(nodes: Sequence[Any]) -> list[str]:
    return [node.text for node in nodes if getattr(node, "kind", None) == "agent" and node.text]


class CommunicateCheck(BaseModel):
    info: str
    met: bool


class Tau2Score(ScoreReport):
    """ScoreReport (reward, success, completed / missed goal calls) plus τ²'s parts."""

    db_match: bool = False
    db_diff: list[str] = Field(default_factory=list)  # "table/key" of records that differ from the gold state
    communicate: list[CommunicateCheck] = Field(default_factory=list)
    goal_reward: float = 0.0  # share of goal calls (gold writes) completed: JOSH's sparse reward
    reward_basis: list[str] = Field(default_factory=list)  # the task's, for the record
    not_evaluated: list[str] = Field(default_factory=list)  # e.g. NL_ASSERTION (needs an LLM judge)


class Tau2Env:
    """The environment of one τ² task (see the module docstring)."""

    # Optional ToolEnvironment features it has (josh_core/types.py).
    features = frozenset({"for_path", "score", "score_path", "agent_instructions", "api_examples"})

    def __init__(self, domain: Tau2Domain, task: Tau2Task):
        self.domain = domain
        self.task = task
        self.scenario = task
        self._initial = DbState(domain.load_tables())
        self._states: OrderedDict[tuple[str, ...], DbState] = OrderedDict()
        self._gold: DbState | None = None
        self._schemas = domain.schemas()

    # -- what agents read --------------------------------------------------------------------
    @property
    def api_examples(self) -> list[dict[str, Any]]:
        return self.domain.api_examples

    @property
    def agent_instructions(self) -> str:
        """The agent's domain instructions: a role sentence and the domain's policy."""
        return f"{self.domain.role}\n\n<policy>\n{self.domain.load_policy().strip()}\n</policy>"

    def tools(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self._schemas)

    # -- state -------------------------------------------------------------------------------
    def initial_state(self) -> DbState:
        return self._initial

    def apply(self, state: DbState, call: ToolCall | None, raw: str | None = None) -> tuple[ApiCallRecord, DbState]:
        """Run one call on `state`: its record and the state after it (`state` is unchanged)."""
        if call is None:
            shown = (raw or "").strip()
            shown = shown[:200] + ("..." if len(shown) > 200 else "")
            result = ApiResult(ok=False, error_kind="bad_format",
                               error=f"Could not read an API call from {shown!r}. {_BAD_FORMAT_HINT}")
            return ApiCallRecord(call=None, raw=raw, result=result), state
        tool = self.domain.tool(call.name)
        if tool is None:
            names = ", ".join(t.name for t in self.domain.tools)
            result = ApiResult(ok=False, error_kind="unknown_api", error=f"No API named {call.name!r}. APIs: {names}")
            return ApiCallRecord(call=call, raw=raw, result=result), state
        try:
            arguments = check_arguments(tool, call.parameters)
        except ArgumentError as error:
            result = ApiResult(ok=False, error_kind=error.kind, error=error.message)
            return ApiCallRecord(call=call, raw=raw, result=result), state
        transaction = Transaction(state)
        try:
            value = tool.invoke(transaction, **arguments)
        except ToolError as error:
            result = ApiResult(ok=False, error_kind="tool_error", error=str(error))
            return ApiCallRecord(call=call, raw=raw, result=result), state
        except (KeyError, TypeError, ValueError, ArithmeticError) as error:  # a record shaped unlike the data
            result = ApiResult(ok=False, error_kind="tool_error", error=f"{type(error).__name__}: {error}")
            return ApiCallRecord(call=call, raw=raw, result=result), state
        record = ApiCallRecord(call=call, raw=raw, result=ApiResult(ok=True, content=_json_copy(value)))
        return record, transaction.commit()

    def execute(self, call: ToolCall | None, raw: str | None = None) -> ApiCallRecord:
        """One call on the initial state; nothing is kept (use `for_path` to play a path)."""
        return self.apply(self._initial, call, raw)[0]

    def replay(self, calls: Sequence[ApiCallRecord]) -> DbState:
        """The initial state with `calls` applied in order (cached by their successful writes)."""
        writes = tuple(call_key(r.call) for r in calls
                       if r.call is not None and r.result.ok and r.call.name in self.domain.write_tools)
        return self._state_after(writes)

    def _state_after(self, writes: tuple[str, ...]) -> DbState:
        if not writes:
            return self._initial
        cached = self._states.get(writes)
        if cached is not None:
            self._states.move_to_end(writes)
            return cached
        state = self._state_after(writes[:-1])
        name, _, params = writes[-1].partition("\x00")
        _, state = self.apply(state, ToolCall(name=name, parameters=json.loads(params)))
        self._states[writes] = state
        while len(self._states) > _STATE_CACHE:
            self._states.popitem(last=False)
        return state

    def for_path(self, calls: Sequence[ApiCallRecord]) -> Tau2PathEnv:
        return Tau2PathEnv(self, self.replay(calls))

    def gold_state(self) -> DbState:
        """The initial state after the task's gold actions (failing ones skipped)."""
        if self._gold is None:
            state = self._initial
            for action in self.task.actions:
                _, state = self.apply(state, ToolCall(name=action.name, parameters=action.arguments))
            self._gold = state
        return self._gold

    # -- goals -------------------------------------------------------------------------------
    def goal_ids(self) -> list[str]:
        return self.task.goal_call_ids()

    @staticmethod
    def _matches(goal: Any, call: ToolCall) -> bool:
        if call.name != goal.name:
            return False
        keys = goal.compare_args if goal.compare_args else list(goal.parameters)
        return all(key in call.parameters and _json_copy(call.parameters[key]) == goal.parameters.get(key)
                   for key in keys)

    def _completed(self, calls: Sequence[ApiCallRecord]) -> list[str]:
        done = []
        for goal_id, goal in zip(self.goal_ids(), self.task.goal_calls):
            if any(r.call is not None and r.result.ok and self._matches(goal, r.call) for r in calls):
                done.append(goal_id)
        return done

    def completed_goals(self, calls: list[ApiCallRecord]) -> set[str]:
        return set(self._completed(calls))

    # -- reward ------------------------------------------------------------------------------
    def score(self, calls: Sequence[ApiCallRecord], messages: Sequence[str | Message] = ()) -> Tau2Score:
        """τ²'s reward of a conversation: its calls (in order) and what the agent said."""
        state = self._initial
        for record in calls:
            _, state = self.apply(state, record.call, record.raw)
        gold = self.gold_state()
        diff = state.diff(gold)
        said = [(m.content if isinstance(m, Message) else str(m)).lower().replace(",", "") for m in messages]
        checks = [CommunicateCheck(info=info, met=any(info.lower() in text for text in said))
                  for info in self.task.communicate_info]
        reward = 1.0 if not diff and all(c.met for c in checks) else 0.0
        completed = self._completed(calls)
        goals = self.goal_ids()
        missed = [self._explain_miss(goal_id, goal, calls) for goal_id, goal in zip(goals, self.task.goal_calls)
                  if goal_id not in completed]
        return Tau2Score(
            reward=reward, success=reward == 1.0, completed=completed, missed=missed,
            db_match=not diff, db_diff=[f"{t}/{k}" for t, k in diff], communicate=checks,
            goal_reward=len(completed) / len(goals) if goals else 0.0,
            reward_basis=list(self.task.reward_basis),
            not_evaluated=["NL_ASSERTION"] if self.task.nl_assertions else [],
        )

    def score_path(self, nodes: Sequence[Any]) -> Tau2Score:
        """The score of one path of a tree (its nodes in order from the opener)."""
        calls = [call for node in nodes for call in node.api_calls]
        return self.score(calls, _agent_texts(nodes))

    def _explain_miss(self, goal_id: str, goal: Any, calls: Sequence[ApiCallRecord]) -> MissedGoal:
        attempts = [(i, r) for i, r in enumerate(calls) if r.call is not None and r.call.name == goal.name]
        failed = sum(1 for _, r in attempts if not r.result.ok)
        if not attempts:
            return MissedGoal(goal_id=goal_id, api=goal.name, reason="never_attempted")

        def diffs(call: ToolCall) -> list[ParamDiff]:
            out = []
            for key, expected in goal.parameters.items():
                if key not in call.parameters:
                    out.append(ParamDiff(parameter=key, kind="missing", expected=json.dumps(expected)))
                elif _json_copy(call.parameters[key]) != expected:
                    out.append(ParamDiff(parameter=key, kind="wrong_value", expected=json.dumps(expected),
                                         got=json.dumps(call.parameters[key], default=str)))
            return out

        index, closest = min(attempts, key=lambda pair: (len(diffs(pair[1].call)), -pair[0]))
        details = diffs(closest.call)
        if not details:  # right arguments, but the call failed
            reason = "wrong_entity"
        elif all(d.kind == "missing" for d in details):
            reason = "missing_parameter"
        else:
            reason = "wrong_value"
        return MissedGoal(goal_id=goal_id, api=goal.name, reason=reason, attempts=len(attempts), failed_calls=failed,
                          closest_call=index, details=details)


class Tau2PathEnv:
    """A path's view of a task: the state after the path's calls; `execute` moves it on.
    Everything else is the task's, named one by one (a forwarding `__getattr__` would make any
    attribute of the task look like a feature of the view)."""

    features = Tau2Env.features | {"gold_turn"}

    def __init__(self, env: Tau2Env, state: DbState):
        self.env = env
        self.state = state

    def execute(self, call: ToolCall | None, raw: str | None = None) -> ApiCallRecord:
        record, self.state = self.env.apply(self.state, call, raw)
        return record

    def for_path(self, calls: Sequence[ApiCallRecord]) -> Tau2PathEnv:
        return self.env.for_path(calls)

    def gold_turn(self, api_calls: Sequence[ApiCallRecord]) -> GoldTurn:
        """For the oracle agent: the gold actions this path has not made yet, made here, and what
        to say (josh_core/envs/tau2/oracle.py)."""
        return gold_turn(self, api_calls)

    # -- the task's ---------------------------------------------------------------------------
    @property
    def task(self) -> Tau2Task:
        return self.env.task

    @property
    def api_examples(self) -> list[dict[str, Any]]:
        return self.env.api_examples

    @property
    def agent_instructions(self) -> str:
        return self.env.agent_instructions

    def tools(self) -> list[dict[str, Any]]:
        return self.env.tools()

    def goal_ids(self) -> list[str]:
        return self.env.goal_ids()

    def completed_goals(self, calls: list[ApiCallRecord]) -> set[str]:
        return self.env.completed_goals(calls)

    def score(self, calls: Sequence[ApiCallRecord], messages: Sequence[str | Message] = ()) -> Tau2Score:
        return self.env.score(calls, messages)

    def score_path(self, nodes: Sequence[Any]) -> Tau2Score:
        return self.env.score_path(nodes)
