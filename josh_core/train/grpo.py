"""GRPO online: the policy plays groups of conversations in the environment and learns from
how they scored against each other (DeepSeekMath's Group Relative Policy Optimization, as TRL's
GRPOTrainer computes it), with no exported data.

Per optimiser step (`per_device_train_batch_size` scenarios x `gradient_accumulation_steps`):

1. **Episodes.** Every scenario is played `num_generations` times (a group) by the policy being
   trained, with different seeds, through the project's own player, user simulator and scoring
   (`josh_core/train/online.py`); every conversation is stored as a run tagged with the training
   and step.
2. **Rewards.** The environment's reward (weight `env_reward`) plus the paper's format shaping
   (appendix C: `goal_reward` per goal reached by a correctly formatted generation, `format_reward`
   per correctly formatted generation); each weight may be 0.
3. **Advantages.** Within each group: reward minus the group's mean, divided by the group's
   standard deviation (`scale_rewards="group"`, TRL's default; `"batch"`: the micro-batch's;
   `"none"`: not divided). A group whose conversations all scored the same teaches nothing.
4. **Loss.** On the agent's own sampled tokens only: for every generation of every episode,
   the log-probabilities of what it wrote given exactly the prompt it was given (system prompt,
   the conversation so far, the turn's earlier generations and API results; user turns, API
   results and the prompt are never trained), times the episode's advantage, summed over tokens
   and divided by all the step's agent tokens (TRL's default `loss_type="dapo"`). With
   `beta > 0`, plus beta times the per-token KL estimate to the reference (the starting model:
   the base without the adapter, or a frozen copy of a continued adapter), as TRL does.

One update per batch of episodes (TRL's `num_iterations=1`): the episodes are always the
current policy's own, so the importance ratio is 1 and the clipped surrogate reduces to the
policy gradient; no clipping is needed.

Why our own loop rather than TRL's GRPOTrainer: TRL 1.16's multi-turn paths are its own
tool-calling loop (`tools` / `environment_factory`, TRL's chat template parsing, not the
project's agent styles, grammar and user simulator) and the experimental `rollout_func`, which
takes one prompt and one completion per sample and trains a conversation as one sequence with a
mask. An agent's prompt is not the previous prompt plus what it generated (its history keeps the
canonical text of each action, not the raw sample), so one sequence per conversation would train
tokens the model never wrote in contexts it never saw. Here each generation is scored in its own
exact context. The loop is a `transformers.Trainer` subclass (`grpo_trainer.py`), so the runner's
metrics, checkpoints, resume and adapter saving are those of every other kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from josh_core.envs import get_env
from josh_core.policies.factory import DECODING_MODES, decoding_flags
from josh_core.rollout import RolloutConfig
from josh_core.rollout.options import SELFTRAIN_DEFAULTS, run_option
from josh_core.train.config import TrainConfig, TrainerInputs, TrainingConfigError, check_positive
from josh_core.train.data import TrainingData, TrainingDataError
from josh_core.train.online import RewardWeights, rows_digest, scenario_rows

SCALE_REWARDS = ("group", "batch", "none")
_OWN: Any = object()


def _run(name: str, default: Any = _OWN, help: str | None = None) -> Any:
    """The dataclass field of a setting that is a run option: its default (or an override
    declared here) and its help from the run options; bounds are checked by RolloutConfig."""
    option = run_option(name)
    return field(default=option.default if default is _OWN else default, metadata={"help": option.help_text(help)})



@dataclass
class GRPOTrainConfig(TrainConfig):
    """GRPO online in an environment: groups of the policy's own conversations per scenario."""

    # TRL's GRPOConfig default (1e-6) is for full fine-tuning; TRL's PEFT guide: about ten times
    # that for LoRA.
    learning_rate: float = 1e-5
    num_train_epochs: float = 1.0
    per_device_train_batch_size: int = field(
        default=2, metadata={"help": "Scenarios per micro-batch (each played num_generations times)."})
    gradient_accumulation_steps: int = 1
    lora_r: int = 8  # as SFT and DPO
    lora_alpha: int = 16
    # -- what it plays: run options (rollout/options.py), their defaults and help declared there --
    env: str = _run("env")
    split: str | None = _run("split", help="Scenario split of the environment (default: its JOSH split, train).")
    offset: int = field(default=0, metadata={"help": "Scenarios of the split skipped first."})
    limit: int | None = _run("limit", 100, help="Scenarios trained on (None: the whole split).")
    single_domain: bool = field(default=True, metadata={"help": "Single-domain scenarios only (as selftrain)."})
    user: str | None = _run("user")
    scoring: str | None = _run("scoring")
    style: str = _run("style")
    decoding: str = _run("decoding")
    temperature: float | None = _run("temperature")
    max_turns: int = _run("max_turns", SELFTRAIN_DEFAULTS["max_turns"])  # selftrain's JOSH depth
    max_actions_per_turn: int | None = _run("max_actions_per_turn")
    rollout_concurrency: int | None = field(
        default=None, metadata={"help": "Episodes played at once (None: a whole micro-batch's groups)."})
    # -- GRPO -----------------------------------------------------------------------------------
    num_generations: int = field(
        default=4, metadata={"help": "Conversations per scenario (the group; TRL calls it num_generations)."})
    beta: float = field(
        default=0.0, metadata={"help": "KL coefficient to the starting model (TRL's default 0.0: no reference)."})
    disable_dropout: bool = field(
        default=False, metadata={"help": "Dropout off in the model and LoRA (TRL's option; with beta > 0 the policy "
                                         "and the reference then differ by their weights alone)."})
    scale_rewards: str = field(
        default="group", metadata={"help": "Advantages divided by the std of: group | batch | none (TRL's default group)."})
    env_reward: float = field(default=1.0, metadata={"help": "Weight of the environment's own reward."})
    goal_reward: float = field(
        default=1.0, metadata={"help": "Reward per goal reached by a correctly formatted generation (paper app. C)."})
    format_reward: float = field(
        default=0.1, metadata={"help": "Reward per correctly formatted generation (paper appendix C)."})
    max_agent_turns: int | None = field(
        default=None, metadata={"help": "Budget: stop once the episodes sampled this many agent turns (None: no cap)."})
    logprob_batch_size: int = field(
        default=4, metadata={"help": "Scored sequences per forward/backward pass of the loss (memory, not results)."})

    kind = "grpo"

    def check(self) -> None:
        for name in ("num_generations", "logprob_batch_size", "max_turns"):
            check_positive(self, name)
        if not isinstance(self.num_generations, int) or self.num_generations < 2:
            raise TrainingConfigError(
                f"num_generations must be at least 2 (advantages compare a group), got {self.num_generations!r}")
        check_positive(self, "offset", allow_zero=True)
        for name in ("beta", "env_reward", "goal_reward", "format_reward"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise TrainingConfigError(f"{name} must be a number, got {value!r}")
        check_positive(self, "beta", allow_zero=True)
        for name in ("limit", "max_agent_turns", "rollout_concurrency", "max_actions_per_turn"):
            if getattr(self, name) is not None:
                check_positive(self, name)
        if self.scale_rewards not in SCALE_REWARDS:
            raise TrainingConfigError(f"scale_rewards must be one of {', '.join(SCALE_REWARDS)}, got {self.scale_rewards!r}")
        if self.decoding not in DECODING_MODES:
            raise TrainingConfigError(f"decoding must be one of {', '.join(DECODING_MODES)}, got {self.decoding!r}")
        try:
            environment = get_env(self.env)
            if self.split is not None:
                environment.check_split(self.split)
            rollout_config(self, "embedded")  # the environment's own checks of user, scoring, style
        except ValueError as error:
            raise TrainingConfigError(str(error).splitlines()[0]) from None

    def reward_weights(self) -> RewardWeights:
        return RewardWeights(env=self.env_reward, goal=self.goal_reward, format=self.format_reward)


def rollout_config(config: GRPOTrainConfig, agent: str) -> RolloutConfig:
    """The plain rollout an episode is: the settings `josh rollout` would play with."""
    from pydantic import ValidationError

    constrained, grounded = decoding_flags(config.decoding)
    try:
        return RolloutConfig(
            env=config.env, scoring=config.scoring, josh=False, agent=agent, user=config.user, style=config.style,
            temperature=config.temperature, max_actions_per_turn=config.max_actions_per_turn,
            constrained=constrained, grounded=grounded, max_turns=config.max_turns, seed=config.seed,
            split=config.split, limit=config.limit,
        )
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
                             if e["loc"] else str(e["msg"]) for e in error.errors())
        raise TrainingConfigError(f"episode settings: {problems}") from None


def grpo_episodes(data: str | Path | None, config: Any) -> TrainingData:
    """The scenarios a GRPO training plays: a scenario file (`--data`, JSON of the environment's
    scenarios), else `limit` scenarios of the split from `offset` (single-domain ones only with
    `single_domain`, as `josh selftrain` picks them)."""
    assert isinstance(config, GRPOTrainConfig)
    environment = get_env(config.env)
    try:
        if data is not None:
            path = Path(data)
            if not path.is_file():
                raise TrainingDataError(f"no scenario file at {path}")
            scenarios = environment.load_scenario_file(path)
            description = None
        else:
            environment.ensure_prepared()
            split = config.split or environment.josh_split
            scenarios = environment.load_split(split, None)
            if config.single_domain:
                scenarios = [s for s in scenarios if len(s.domains) == 1]
            end = None if config.limit is None else config.offset + config.limit
            scenarios = scenarios[config.offset:end]
            path = None
            what = "single-domain " if config.single_domain else ""
            description = f"{environment.name}:{split}[{config.offset}:{config.offset + len(scenarios)}] ({what}scenarios)"
    except TrainingDataError:
        raise
    except ValueError as error:  # an unreadable scenario file, an unknown split
        raise TrainingDataError(str(error)) from None
    if not scenarios:
        raise TrainingDataError("no scenarios to play: " + (f"{data} holds none" if data else "the split slice is empty"))
    rows = scenario_rows(scenarios)
    return TrainingData(kind="grpo", path=path, rows=rows, sha256=rows_digest(environment.name, rows),
                        description=description)


def build_grpo_trainer(inputs: TrainerInputs):
    """The GRPO trainer: the policy (the PEFT model being trained) behind the agent of the
    configured style, the user simulator, the environment, and a database for the episodes."""
    from josh_core.llm.specs import build_backend
    from josh_core.policies.agents import build_model_agent
    from josh_core.policies.factory import build_user
    from josh_core.train.grpo_trainer import GRPOLoop
    from josh_core.train.model import resolve_base
    from josh_core.train.online import EpisodePlayer

    config = inputs.config
    assert isinstance(config, GRPOTrainConfig)
    assert inputs.database is not None  # the runner refuses an online kind without one
    episodes = rollout_config(config, inputs.base)
    options = episodes.agent_options()
    backend = build_backend(inputs.base, options, shared=False)
    backend.use_loaded(inputs.model, inputs.tokenizer)
    agent = build_model_agent(backend, options)
    user = build_user(episodes.user, options)
    player = EpisodePlayer(inputs.database, episodes, agent, user, training_id=inputs.training_id, kind=config.kind,
                           weights=config.reward_weights(), concurrency=config.rollout_concurrency)
    environment = get_env(config.env)
    scenarios = [environment.scenario_from_json(row) for row in inputs.data.rows]
    # The shared arguments are TRL's configs'; `max_length` is TRL's own (the loss reads it from
    # the config). Anything else, trl_args included, must be a TrainingArguments field.
    args = {k: v for k, v in inputs.args.items() if k != "max_length"}
    try:
        training_args = _training_arguments()(**args, remove_unused_columns=False)
    except TypeError as error:
        raise TrainingConfigError(f"grpo trains with transformers' TrainingArguments: {error}") from None
    return GRPOLoop(model=inputs.model, args=training_args,
                    tokenizer=inputs.tokenizer, scenarios=scenarios, player=player, backend=backend, config=config,
                    sampling_temperature=agent.base_sampling.temperature, callbacks=inputs.callbacks,
                    continued_adapter=resolve_base(inputs.base).adapter is not None)


def _training_arguments():
    from transformers import TrainingArguments

    return TrainingArguments
