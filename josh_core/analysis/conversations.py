"""The unit every metric and error count is computed from: one finished conversation, seen
along the path that counts.

A plain rollout is one path. A JOSH tree counts by its final reward, which is the reward of
its ideal path (the path through every node that became a root); the error analysis reads the
ideal path too, since it is the conversation the search settled on. With `nodes="all"` the
call and format errors are read from every agent turn of the tree instead (every alternative
the search tried), and so is why a goal was missed (never attempted, or the parameters of the
closest attempt anywhere in the tree: ToolWOZ scores every call of the tree for it; τ²'s score
needs one path and stays the ideal path's); whether a goal was reached stays the stored
reward's.

Only conversations with status "done" are analysed; `load_conversations` also says how many
were left out (still running, pending, or failed with an exception).

A stored scenario names its environment (τ² tasks carry `env`; ToolWOZ scenarios predate
environments): the scenario is read by that environment, and `env_reward` / `env_success` are
the environment's own score of the ideal path (ToolWOZ: the goal share again; τ²: the
database-and-outputs reward that Pass^k counts).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from josh_core.search.labels import ideal_path
from josh_core.search.tree import ConversationTree, Node
from josh_core.storage import reads
from josh_core.storage.db import Database
from josh_core.storage.models import ConversationRecord, RunRecord
from josh_core.envs import DEFAULT_ENV, env_of_scenario, get_env, score_path
from josh_core.envs.score import MissedGoal, MissReason, ScoreReport
from josh_core.types import ApiCallRecord, env_feature

NodeScope = Literal["ideal", "all"]
NODE_SCOPES: tuple[str, ...] = ("ideal", "all")


class GoalOutcome(BaseModel):
    """One goal call of the scenario and whether the conversation reached it."""

    goal_id: str  # "<index>:<api>"
    api: str
    domain: str
    completed: bool
    reason: MissReason | None = None  # why it was missed (None when completed)


class AnalysedConversation(BaseModel):
    run_id: str
    conversation_id: str
    scenario_id: str
    env: str = DEFAULT_ENV  # the environment the scenario belongs to
    scoring: str | None = None  # the run's reward semantics (ToolWOZ: toolwoz | reference)
    domains: list[str]
    reward: float  # the stored final reward (JOSH trees: the ideal path's)
    success: bool  # every goal reached
    goals: list[GoalOutcome]
    nodes: NodeScope = "ideal"  # which agent turns `calls` and the generation counts come from
    calls: list[ApiCallRecord] = Field(default_factory=list)  # in conversation order
    agent_turns: int = 0  # agent turns analysed (in the scope `nodes`)
    generations: int = 0  # agent generations on those turns
    format_error_generations: int = 0  # generations whose action could not be read
    missed: list[MissedGoal] = Field(default_factory=list)  # missed goals, explained from the scope's calls
    env_reward: float | None = None  # the environment's own score of the ideal path (τ²: 0 or 1)
    env_success: bool | None = None


class LoadedConversations(BaseModel):
    """What `load_conversations` found: the finished conversations and the rest, counted."""

    conversations: list[AnalysedConversation]
    run_ids: list[str]  # runs whose conversations were looked at
    not_done: dict[str, int] = Field(default_factory=dict)  # status -> count, left out


def _agent_nodes(tree: ConversationTree, nodes: NodeScope) -> list[Node]:
    if nodes == "ideal":
        return [n for n in ideal_path(tree) if n.kind == "agent"]
    # Every agent turn the search made, in tree order.
    return sorted(tree.agent_nodes(), key=lambda n: (n.step, n.path_key()))


def _score(record: ConversationRecord, scenario: Any, tree: ConversationTree, env: str = DEFAULT_ENV) -> ScoreReport:
    """The environment's score of the ideal path: stored with the conversation when it
    finished; computed again only for rows that predate it."""
    if record.score:
        return ScoreReport.model_validate(record.score)
    return ScoreReport.model_validate(score_path(get_env(env).make_env(scenario), ideal_path(tree)))


def _scope_score(scenario: Any, env: str, agent_nodes: list[Node]) -> ScoreReport | None:
    """Every call of the scope scored at once, to say why each goal was missed (ToolWOZ:
    `score(calls)` only reads the calls). None where the score needs one coherent path (τ²
    replays a database), which keeps the ideal path's explanation."""
    environment = get_env(env).make_env(scenario)
    if env_feature(environment, "score_path") is not None or env_feature(environment, "score") is None:
        return None
    report = environment.score([call for node in agent_nodes for call in node.api_calls])
    return ScoreReport.model_validate(report.model_dump(mode="json"))


def analyse_conversation(
    record: ConversationRecord, tree: ConversationTree, nodes: NodeScope = "ideal"
) -> AnalysedConversation:
    """One stored conversation (its record and tree) as the analysis sees it."""
    if nodes not in NODE_SCOPES:
        raise ValueError(f"nodes must be one of {', '.join(NODE_SCOPES)}, not {nodes!r}")
    if record.scenario is None:
        raise ValueError(f"conversation {record.id} has no stored scenario")
    env = env_of_scenario(record.scenario)
    scenario = get_env(env).scenario_from_json(record.scenario)
    score = _score(record, scenario, tree, env)
    agent_nodes = _agent_nodes(tree, nodes)
    explained = _scope_score(scenario, env, agent_nodes) if nodes == "all" else None
    missed = (explained or score).missed
    missed_by_goal = {m.goal_id: m for m in missed}
    # Goal completion follows the stored reward events (they make the stored reward);
    # why a goal was missed comes from the environment's score of the ideal path.
    reached = set(record.goals_reached)
    goals = []
    for goal_id, call in zip(scenario.goal_call_ids(), scenario.goal_calls):
        completed = goal_id in reached
        miss = None if completed else missed_by_goal.get(goal_id)
        goals.append(
            GoalOutcome(
                goal_id=goal_id, api=call.name, domain=call.domain, completed=completed,
                reason=miss.reason if miss else None,
            )
        )  # fmt: skip
    generations = [g for node in agent_nodes for g in node.generations]
    return AnalysedConversation(
        run_id=record.run_id,
        conversation_id=record.id,
        scenario_id=record.scenario_id,
        env=env,
        domains=list(scenario.domains),
        reward=float(record.reward or 0.0),
        success=bool(record.success),
        goals=goals,
        nodes=nodes,
        calls=[call for node in agent_nodes for call in node.api_calls],
        agent_turns=len(agent_nodes),
        generations=len(generations),
        format_error_generations=sum(1 for g in generations if g.action == "format_error"),
        missed=[m for m in missed if m.goal_id not in reached],
        env_reward=score.reward,
        env_success=score.success,
    )


def run_scoring(run: RunRecord) -> str | None:
    """The reward semantics a run was played with: stored in its configuration, else (runs
    from before there was a choice) its environment's default."""
    scoring = run.config.get("scoring")
    if isinstance(scoring, str):
        return scoring
    try:
        return get_env(run.config.get("env") or DEFAULT_ENV).default_scoring
    except ValueError:  # an environment this installation lacks: nothing to say
        return None


def load_conversations(
    db: Database | str, run_id: str | None = None, nodes: NodeScope = "ideal", scoring: str | None = None
) -> LoadedConversations:
    """Every finished conversation of the database (or of one run), ready for analysis;
    with `scoring`, only those of runs played with that reward semantics."""
    database = db if isinstance(db, Database) else Database(db)
    if run_id is not None:
        reads.get_run(database, run_id)  # KeyError for an unknown run
    records = reads.list_conversations(database, run_id=run_id)
    scorings = {rid: run_scoring(reads.get_run(database, rid)) for rid in dict.fromkeys(r.run_id for r in records)}
    if scoring is not None:
        records = [r for r in records if scorings[r.run_id] == scoring]
    done = [r for r in records if r.status == "done"]
    not_done: dict[str, int] = {}
    for record in records:
        if record.status != "done":
            not_done[record.status] = not_done.get(record.status, 0) + 1
    trees = reads.load_trees(database, [r.id for r in done])
    conversations = [analyse_conversation(r, trees[r.id], nodes).model_copy(update={"scoring": scorings[r.run_id]})
                     for r in done if r.id in trees]  # fmt: skip
    run_ids = list(dict.fromkeys(r.run_id for r in records))
    return LoadedConversations(conversations=conversations, run_ids=run_ids, not_done=not_done)


# -- the conversation list and the compare view of the Trees page ------------------------------


class ListFilter(BaseModel):
    """What the conversation list keeps: every set left empty keeps everything."""

    runs: list[str] = Field(default_factory=list)
    envs: list[str] = Field(default_factory=list)
    apis: list[str] = Field(default_factory=list)  # a conversation whose tree called any of them
    error_kinds: list[str] = Field(default_factory=list)  # any call rejected with any of them
    success: bool | None = None
    min_reward: float | None = None
    max_reward: float | None = None


def filter_conversation_list(frame: Any, keep: ListFilter) -> Any:
    """The rows of `reads.conversation_list_frame` that `keep` keeps (a pandas frame)."""
    mask = frame["id"].notna()
    if keep.runs:
        mask &= frame["run_id"].isin(keep.runs)
    if keep.envs:
        mask &= frame["env"].isin(keep.envs)
    if keep.apis:
        wanted = set(keep.apis)
        mask &= frame["apis"].map(lambda names: bool(wanted.intersection(list(names))))
    if keep.error_kinds:
        wanted_kinds = set(keep.error_kinds)
        mask &= frame["error_kinds"].map(lambda kinds: bool(wanted_kinds.intersection(list(kinds))))
    if keep.success is not None:
        mask &= frame["success"].fillna(False).astype(bool) == keep.success
    reward = frame["reward"]
    if keep.min_reward is not None:
        mask &= reward.notna() & (reward >= keep.min_reward - 1e-9)
    if keep.max_reward is not None:
        mask &= reward.notna() & (reward <= keep.max_reward + 1e-9)
    return frame[mask]


class TurnDiff(BaseModel):
    """One position of two conversations' ideal paths side by side."""

    position: int  # 1 for the opener
    kind: str  # "user" | "agent" | "user / agent" when the two differ
    same: bool
    runs: list[tuple[str, str]] = Field(default_factory=list)  # word diff (pairs.word_diff), first -> second


def ideal_path_diff(first: ConversationTree, second: ConversationTree) -> list[TurnDiff]:
    """The two ideal paths turn by turn (what each said, and the calls each agent turn
    made): a base and a trained agent on one scenario, where they part and how."""
    from josh_core.analysis.pairs import turn_text, word_diff

    a, b = ideal_path(first), ideal_path(second)
    out = []
    for i in range(max(len(a), len(b))):
        left, right = (a[i] if i < len(a) else None), (b[i] if i < len(b) else None)
        kinds = {n.kind for n in (left, right) if n is not None}
        ltext, rtext = (turn_text(left) if left else ""), (turn_text(right) if right else "")
        out.append(TurnDiff(position=i + 1, kind=" / ".join(sorted(kinds)), same=ltext == rtext and len(kinds) == 1,
                            runs=word_diff(ltext, rtext)))  # fmt: skip
    return out
