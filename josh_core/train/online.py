"""Episodes for online training: the policy being trained plays conversations in a registered
environment, through the project's own player, and each is stored and scored.

One way to play a conversation: an episode is a plain rollout played by `rollout.play_conversation`
(the player `josh rollout` and `josh eval` use: the same agent styles, action grammar, user
simulator, environment and scoring, the same storage of every node), with the agent built around
the training's own model (`HFBackend.use_loaded`), so what is trained is what plays. Each step's
episodes are one run in the database, its configuration tagged with the training (`training`:
id, kind, step, micro-batch, group size and the members' seeds), so the app shows what the policy
did at step k (`training_runs`).

A group is the same scenario played `group_size` times with different seeds: one run holds every
scenario of the micro-batch `group_size` times (positions `member * scenarios + index`), and each
member plays with its own seed (stored with every conversation), so the group's conversations
differ only by sampling.

Rewards (`RewardWeights`): the environment's own reward (ToolWOZ: the share of goal calls made;
τ²: its end-state reward) times `env`, plus the paper's shaping (appendix C, for PPO): `goal` per
goal reached by a generation in correct format, and `format` per generation in correct format
(ReACT: the paper's regular expression `^PLAN .+? <COMMAND_END> (APICALL ({.*?}) <COMMAND_END>|
SPEAK .+? <COMMAND_END>)$`, with any whitespace between the commands; the compact and
function-calling styles: a generation that parsed as an action). Any of the three can be 0.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from josh_core.envs import get_env
from josh_core.rollout import RolloutConfig, RolloutObserver, code_revision, play_conversation
from josh_core.search.tree import ConversationTree, Node, derive_seed
from josh_core.storage import reads, writes
from josh_core.storage.db import Database
from josh_core.storage.locks import run_lock
from josh_core.types import Message

log = logging.getLogger(__name__)

# The paper's ReACT format (appendix C), whitespace between the parts made lenient: the
# canonical text puts a newline where the paper's expression has a space.
_REACT_FORMAT = re.compile(
    r"^\s*PLAN\s.+?\s<COMMAND_END>\s+(APICALL\s*\{.*\}\s*<COMMAND_END>|SPEAK\s.+?\s<COMMAND_END>)\s*$",
    re.DOTALL,
)


@dataclass(frozen=True)
class RewardWeights:
    env: float = 1.0  # times the environment's reward of the conversation
    goal: float = 1.0  # per goal reached by a generation in correct format
    format: float = 0.1  # per generation in correct format


@dataclass
class RewardParts:
    env: float = 0.0  # the environment's reward (unweighted)
    goals: int = 0  # goals reached in correct format
    formatted: int = 0  # generations in correct format
    total: float = 0.0  # the weighted sum: the episode's reward


@dataclass
class Sample:
    """One generation the agent sampled: the messages it was prompted with and what it wrote."""

    prompt: list[Message]
    tools: list[dict[str, Any]] | None  # function calling: the tools rendered with the prompt
    text: str  # the generation as sampled
    message: Message  # as kept in the agent's history (function calling: with its tool calls)


@dataclass
class Episode:
    conversation_id: str
    scenario_id: str
    index: int  # the scenario's place in the micro-batch (its group)
    member: int  # which of the group's conversations
    status: str  # "done" | "failed" | ...
    reward: RewardParts = field(default_factory=RewardParts)
    success: bool = False
    agent_turns: int = 0
    samples: list[Sample] = field(default_factory=list)
    error: str | None = None


def correct_format(style: str, generation: Any) -> bool:
    """Whether one generation is in the agent's correct format (the paper's shaping)."""
    if generation.action == "format_error":
        return False
    if style == "react":
        return bool(_REACT_FORMAT.match(generation.text))
    return True


def shaped_reward(tree: ConversationTree, env_reward: float, style: str, weights: RewardWeights) -> RewardParts:
    """The reward of one played conversation (a plain rollout: one path)."""
    parts = RewardParts(env=float(env_reward))
    counted: set[str] = set()
    for node in _agent_path(tree):
        calls = iter(zip(node.api_calls, node.call_goals or [[] for _ in node.api_calls]))
        for generation in node.generations:
            good = correct_format(style, generation)
            parts.formatted += good
            if generation.action != "apicall":
                continue
            # Each APICALL generation made the turn's next call (function calling: all of its calls).
            made = [next(calls, None)] if style != "fc" else list(calls)
            for item in made:
                if item is None:
                    continue
                _, goals = item
                reached = [g for g in goals if g in node.goals_hit and g not in counted]
                counted.update(reached)
                if good:
                    parts.goals += len(reached)
    parts.total = weights.env * parts.env + weights.goal * parts.goals + weights.format * parts.formatted
    return parts


def _agent_path(tree: ConversationTree) -> list[Node]:
    """The agent turns of a plain conversation in order (its tree is one path)."""
    return sorted(tree.agent_nodes(), key=lambda n: n.depth)


def generation_samples(tree: ConversationTree, prompt_messages: list[Message],
                       tools: list[dict[str, Any]] | None, style: str) -> list[Sample]:
    """Every generation of a played conversation with exactly the messages the agent sent for
    it: its prompt messages, its memory of the path before the turn, and the turn so far."""
    samples = []
    fc_tools = tools if style == "fc" else None
    for node in _agent_path(tree):
        assert node.parent_id is not None
        before = prompt_messages + tree.agent_memory(node.parent_id)
        assistant = [i for i, m in enumerate(node.internal) if m.role == "assistant"]
        for generation, position in zip(node.generations, assistant):
            samples.append(Sample(prompt=before + node.internal[:position], tools=fc_tools,
                                  text=generation.text, message=node.internal[position]))
    return samples


def group_seeds(seed: int, step: int, micro: int, group_size: int) -> list[int]:
    """The rollout seed of each member of a step's groups (distinct, reproducible)."""
    return [derive_seed(seed, f"episodes/step{step}/micro{micro}/member{m}") for m in range(group_size)]


class EpisodePlayer:
    """Plays groups of episodes with one agent and user into a database."""

    def __init__(self, db: Database, config: RolloutConfig, agent: Any, user: Any, *, training_id: str,
                 kind: str, weights: RewardWeights, concurrency: int | None = None):
        self.db = db
        self.config = config
        self.agent = agent
        self.user = user
        self.environment = get_env(config.env)
        self.make_env = self.environment.env_factory(config.scoring)
        self.training_id = training_id
        self.kind = kind
        self.weights = weights
        self.concurrency = concurrency

    def play(self, scenarios: list[Any], group_size: int, *, step: int, micro: int, seed: int) -> tuple[str, list[Episode]]:
        """Play every scenario `group_size` times as one run; (run id, episodes in run order)."""
        seeds = group_seeds(seed, step, micro, group_size)
        ordered = [(member, index, s) for member in range(group_size) for index, s in enumerate(scenarios)]
        training = {"id": self.training_id, "kind": self.kind, "step": step, "micro": micro,
                    "group_size": group_size, "member_seeds": seeds}
        run_id = writes.create_run(
            self.db, kind="plain", config={**self.config.stored(), "training": training},
            scenarios=[(self.environment.scenario_id(s), s.model_dump(mode="json")) for _, _, s in ordered],
            agent_spec=self.config.agent, user_spec=self.config.user,
            agent_name=getattr(self.agent, "name", None), user_name=getattr(self.user, "name", None),
            seed=seeds[0], code_revision=code_revision(),
        )
        records = reads.list_conversations(self.db, run_id=run_id)
        by_position = {r.position: r for r in records}
        configs = [self.config.model_copy(update={"seed": s}) for s in seeds]
        observer = RolloutObserver()
        limit = asyncio.Semaphore(self.concurrency or len(ordered))

        async def one(position: int):
            member = ordered[position][0]
            async with limit:
                return await play_conversation(self.db, by_position[position], configs[member], self.agent,
                                               self.user, self.make_env, observer)

        async def all_of_them():
            return await asyncio.gather(*(one(p) for p in range(len(ordered))))

        with run_lock(self.db.path, run_id):
            try:
                results = asyncio.run(all_of_them())
            except BaseException:
                writes.mark_interrupted(self.db, run_id)
                raise
            writes.set_run_status(self.db, run_id, "done" if all(r.status == "done" for r in results) else "incomplete")
        return run_id, self._episodes(run_id, ordered, results)

    def _episodes(self, run_id: str, ordered: list, results: list) -> list[Episode]:
        done = [r.conversation_id for r in results if r.status == "done"]
        trees = reads.load_trees(self.db, done) if done else {}
        records = {c.id: c for c in reads.list_conversations(self.db, run_id=run_id)}
        style = self.config.style
        episodes = []
        for (member, index, _), result in zip(ordered, results):
            episode = Episode(conversation_id=result.conversation_id, scenario_id=result.scenario_id, index=index,
                              member=member, status=result.status, success=result.success, error=result.error)
            tree = trees.get(result.conversation_id)
            if tree is not None:
                record = records[result.conversation_id]
                prompt = [Message.model_validate(m) for m in record.prompt_messages or []]
                episode.reward = shaped_reward(tree, result.reward, style, self.weights)
                episode.agent_turns = len(tree.agent_nodes())
                episode.samples = generation_samples(tree, prompt, record.tools, style)
            else:
                log.warning("episode %s failed: %s", result.conversation_id, result.error)
            episodes.append(episode)
        return episodes


def training_runs(db: Database, training_id: str) -> list[dict[str, Any]]:
    """The runs an online training played, in step order: run id, step, micro-batch, status,
    conversations (for the app: what the policy did at step k)."""
    out = []
    for run in reads.list_runs(db):
        tag = run.config.get("training") if isinstance(run.config, dict) else None
        if isinstance(tag, dict) and tag.get("id") == training_id:
            out.append({"run_id": run.id, "step": tag.get("step"), "micro": tag.get("micro"),
                        "group_size": tag.get("group_size"), "status": run.status})
    return sorted(out, key=lambda r: (r["step"] or 0, r["micro"] or 0))


def scenario_rows(scenarios: list[Any]) -> list[dict[str, Any]]:
    return [s.model_dump(mode="json") for s in scenarios]


def rows_digest(env: str, rows: list[dict[str, Any]]) -> str:
    import hashlib

    text = json.dumps({"env": env, "scenarios": rows}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()
