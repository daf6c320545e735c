"""`josh selftrain`: rounds of JOSH rollouts -> filter -> export -> train -> evaluate.

One experiment lives in one DuckDB file (its runs, trainings and stage records) and one work
directory (exports and adapters). Stages, in order:

    round 0   warmstart-rollout, warmstart-export, warmstart-train   (only with warm_start > 0)
              eval                      the starting agent on the held-out scenarios
    round k   rollout                   JOSH with round k-1's agent on a fresh slice of train scenarios
              export-KIND, train-KIND   per training kind (SFT, KTO, DPO), from round k-1's adapter
              eval-KIND                 the trained agent on the same held-out scenarios and seeds
              rollout-rs-sft, export-rs-sft, train-rs-sft, eval-rs-sft
                                        the rejection-sampling SFT control (`control="rs-sft"`)
              train-KIND, eval-KIND     an online kind (GRPO): no export; it plays the round's
                                        JOSH scenarios itself, from round k-1's agent, with the
                                        agent-turn budget the round's JOSH trees sampled

Round k+1 starts from the adapter of the first kind of round k (iterated self-training; the
paper did one round).

The control arm (STaR-style rejection sampling) asks whether JOSH is what helps, or any further
SFT on the agent's own successes would: plain rollouts of the control's agent (round 1: the same
starting agent) on the round's JOSH scenarios, with the same budget of sampled agent turns per
scenario as the JOSH tree of that scenario (its stored agent nodes: every agent turn the search
sampled, pruned ones included). Each scenario is played again with a fresh seed until its budget
is spent; the last conversation's turn cap is cut to the turns left, so the control never samples
more agent turns than JOSH did. Its successes (`filter="full"`: reward 1.0; `"partial"`: any goal
reached, the whole conversation) are SFT data, trained with the SFT settings from the control's
previous adapter, and evaluated like the other arms. Round k+1's control continues round k's
control adapter, so both arms iterate from their own best.

KTO and DPO exports always keep only trees that reached 100% (the paper's filter): a tree with no
goal has no ideal path, so under `filter="partial"` it gave its first-turn alternatives as
undesirable rows with nothing desirable beside them. `filter` applies to SFT (and the control).

The warm start is an SFT on conversations of the privileged rule-based oracle agent (`oracle`),
for a base model too weak to ever reach a goal: with it the experiment measures JOSH's gain
above that floor (docs/experiments.md says so wherever it is used).

Every stage is recorded in `selftrain_stages` before and after it runs: a finished stage is
never redone; a rollout or evaluation that was interrupted resumes its stored run (finished
conversations are kept); an interrupted export is redone from its start, and an interrupted
training goes on from its last timed checkpoint (the same training rerun into the same folder,
`josh_core.train.runner`).
Scenario slices are fixed by the configuration, so a rerun plays the same scenarios.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from josh_core.analysis.compare import Comparison, compare_runs
from josh_core.envs import get_env
from josh_core.policies.factory import decoding_flags
from josh_core.rollout import RolloutConfig, RolloutObserver, resume_run, start_run
from josh_core.rollout.options import SELFTRAIN_DEFAULTS
from josh_core.rollout.options import run_option as _run
from josh_core.storage import stages as stage_store
from josh_core.storage.db import Database
from josh_core.envs.base import Scenario
from josh_core.train.config import TrainingConfigError
from josh_core.train.kinds import KINDS, build_config

TrainKind = str  # a registered training kind (josh_core/train/kinds.py)
Control = Literal["none", "rs-sft"]
CONTROL_ARM = "rs-sft"  # stage suffix and summary kind of the rejection-sampling SFT control
# A plain conversation is its own ideal path, so "partial" for the control means "reached at least
# one goal": its reward is k/|G| > 0, the smallest possible one far above this threshold.
ANY_GOAL = 1e-6


class SelftrainConfig(BaseModel):
    """Everything that decides an experiment (stored with its stages; a rerun must match)."""

    experiment: str = "selftrain"
    # The settings shared with a run take their defaults, bounds and help from its run options
    # (rollout/options.py), self-training's own defaults from SELFTRAIN_DEFAULTS there.
    env: str = _run("env").field()  # experiments stored before it were ToolWOZ's
    base: str = _run("agent").field()  # the starting agent SPEC
    user: str | None = _run("user").field()  # None: the environment's (resolved on creation)
    scoring: str | None = _run("scoring").field()
    style: str = _run("style").field()
    decoding: str = _run("decoding").field()
    rounds: int = Field(1, ge=1)
    kinds: list[TrainKind] = Field(default_factory=lambda: ["sft"], min_length=1)
    # SFT (and the control): full keeps 100% conversations only (appendix B); partial keeps every
    # tree's ideal path up to its last goal. KTO and DPO always keep 100% trees only.
    filter: Literal["full", "partial"] = "full"
    # "rs-sft": also train the rejection-sampling SFT control arm, budget-matched to JOSH
    # (needs "sft" in kinds: it is trained with the same SFT settings).
    control: Control = "none"
    warm_start: int = Field(0, ge=0)  # oracle conversations for a warm-start SFT (0: none)
    train_split: str | None = None  # None: the environment's JOSH split (resolved on creation)
    train_limit: int = Field(100, ge=1)  # JOSH conversations per round
    # Usable train scenarios skipped before the JOSH slices (after the warm start's): the ones a
    # starting adapter was already trained on, so that JOSH never plays its training data.
    train_offset: int = Field(0, ge=0)
    eval_split: str | None = None  # None: the environment's held-out split (ToolWOZ: val)
    eval_limit: int = Field(100, ge=1)
    single_domain: bool = True
    beam: int = _run("beam").field()
    branching: int = _run("branching").field()
    max_turns: int = _run("max_turns").field(SELFTRAIN_DEFAULTS["max_turns"])  # JOSH depth (agent turns)
    eval_max_turns: int = _run("max_turns").field(SELFTRAIN_DEFAULTS["eval_max_turns"])
    temperature: float | None = _run("temperature").field()
    seed: int = _run("seed").field()
    # Conversations played at once (their leaves batch together).
    concurrency: int = _run("concurrency").field(SELFTRAIN_DEFAULTS["concurrency"])
    train_overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)  # kind -> settings
    warm_start_overrides: dict[str, Any] = Field(default_factory=dict)
    # The JOSH rollout stages on Ray workers (`--ray`; "local" starts Ray here). Where, not what:
    # a rerun may use another cluster, so it is not part of the settings a rerun must match.
    ray_address: str | None = _run("ray").field()

    @field_validator("experiment")
    @classmethod
    def _one_folder_name(cls, name: str) -> str:
        # The name is a folder below the experiment's working directory (adapters, exports):
        # it must stay one plain path part, never climb out of it.
        if not name.strip() or name != name.strip() or name.startswith(".") or any(c in name for c in "/\\\0"):
            raise ValueError("give one folder name: not blank, no spaces around it, no '/' or '\\', not starting "
                             "with '.'")
        return name

    @field_validator("kinds")
    @classmethod
    def _registered_kinds(cls, value: list[str]) -> list[str]:
        for kind in value:
            if kind not in KINDS:
                raise ValueError(f"unknown training kind {kind!r}: expected one of {', '.join(KINDS)}")
        return value

    @model_validator(mode="after")
    def _control_trains_sft(self) -> "SelftrainConfig":
        if self.control == CONTROL_ARM and "sft" not in self.kinds:
            raise ValueError("the rs-sft control (--control rs-sft) is trained with the SFT settings: "
                             "add --kind sft")
        return self

    @model_validator(mode="after")
    def _environment_defaults(self) -> "SelftrainConfig":
        # Stored experiments record the user and splits they played, never None.
        environment = get_env(self.env)
        self.env = environment.name
        self.user = self.user or environment.default_user
        self.train_split = self.train_split or environment.josh_split
        self.eval_split = self.eval_split or environment.heldout_split or environment.eval_split
        decoding_flags(self.decoding)  # a ValueError naming the modes
        return self


# Settings added after experiments were stored: their value for an experiment stored before them.
SETTINGS_BEFORE_THEM = {"env": "toolwoz", "control": "none", "scoring": None, "style": "auto", "decoding": "auto",
                        "train_offset": 0}


class StageEvent(BaseModel):
    round: int
    stage: str
    status: Literal["started", "resumed", "skipped", "done"]
    seconds: float | None = None
    result: dict[str, Any] = Field(default_factory=dict)


class RoundSummary(BaseModel):
    round: int
    agent: str  # the agent SPEC evaluated
    kind: str | None  # training kind (None: the starting agent)
    josh_conversations: int | None = None
    trees_with_goal: int | None = None
    examples: int | None = None
    # Agent turns sampled by the round's rollouts of this arm (JOSH: its trees' agent nodes; the
    # control: its plain conversations', matched to JOSH's per scenario).
    agent_turns: int | None = None
    plain_conversations: int | None = None  # the control's plain rollouts; an online arm's episodes
    plain_successes: int | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)  # eval metrics (means)


class SelftrainResult(BaseModel):
    experiment: str
    db_path: str
    workdir: str
    rounds: list[RoundSummary]
    comparisons: list[dict[str, Any]]  # per trained agent: Comparison vs the starting agent
    unpaired: list[dict[str, Any]] = []  # trained agents `compare_runs` refused to pair, and why
    stages: list[dict[str, Any]]


# -- scenarios ------------------------------------------------------------------------------


def settings_problems(error: ValidationError) -> str:
    """A refused configuration in words, for the command line and the app alike: each bad
    setting with what is wrong (a check across settings names its flags itself)."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}" if e["loc"]
                     else str(e["msg"]).removeprefix("Value error, ") for e in error.errors())  # fmt: skip


def scenario_slices(config: SelftrainConfig) -> tuple[list[Scenario], list[list[Scenario]], list[Scenario]]:
    """(warm-start scenarios, JOSH scenarios per round, evaluation scenarios): disjoint slices
    of the train split in that order, and the head of the evaluation split."""
    from josh_core.envs import get_env

    environment = get_env(config.env)
    environment.ensure_prepared()

    def pick(split: str) -> list[Scenario]:
        scenarios = environment.load_split(split, None)
        return [s for s in scenarios if len(s.domains) == 1] if config.single_domain else scenarios

    train = pick(config.train_split)
    first = config.warm_start + config.train_offset  # the first JOSH scenario
    need = first + config.rounds * config.train_limit
    if len(train) < need:
        raise ValueError(f"the {config.train_split} split has {len(train)} usable scenarios; "
                         f"the experiment needs {need}")
    warm = train[: config.warm_start]
    rounds = [train[first + r * config.train_limit: first + (r + 1) * config.train_limit]
              for r in range(config.rounds)]
    evaluation = pick(config.eval_split)[: config.eval_limit]
    if config.eval_split == config.train_split:
        used = {s.id for s in train[:need]}
        evaluation = [s for s in pick(config.eval_split) if s.id not in used][: config.eval_limit]
    return warm, rounds, evaluation


# -- the loop ---------------------------------------------------------------------------------


class Selftrain:
    def __init__(self, config: SelftrainConfig, db_path: str | Path, workdir: str | Path | None = None, *,
                 observer: RolloutObserver | None = None, on_event: Callable[[StageEvent], None] | None = None,
                 on_train_log: Callable[[dict], None] | None = None):
        self.config = config
        self.db_path = Path(db_path)
        self.db = Database(self.db_path)
        self.workdir = Path(workdir) if workdir else self.db_path.with_name(
            f"{self.db_path.stem}-selftrain") / config.experiment
        self.observer = observer
        self.on_event = on_event or (lambda event: None)
        self.on_train_log = on_train_log

    # -- stage bookkeeping --------------------------------------------------------------------
    def _stages(self) -> dict[tuple[int, str], dict[str, Any]]:
        return stage_store.get_stages(self.db, self.config.experiment)

    def _check_config(self) -> None:
        """A rerun must have the configuration the experiment started with."""
        stored = self._stages().get((0, "config"))
        mine = self.config.model_dump(mode="json", exclude={"ray_address"})
        if stored is None:
            stage_store.start_stage(self.db, self.config.experiment, 0, "config", mine)
            stage_store.finish_stage(self.db, self.config.experiment, 0, "config", mine, 0.0)
            return
        settings = {**SETTINGS_BEFORE_THEM, **stored["result"]}
        if settings != mine:
            changed = sorted(k for k in set(mine) | set(settings) if mine.get(k) != settings.get(k))
            raise ValueError(f"experiment {self.config.experiment!r} was started with other settings "
                             f"({', '.join(changed)} differ): use its settings or another --experiment name")

    def _stage(self, rnd: int, name: str, work: Callable[[dict[str, Any]], dict[str, Any]],
               prepare: Callable[[], dict[str, Any]] | None = None) -> dict[str, Any]:
        """Run `work(state)` unless the stage is done; `state` is what was stored at its start
        (e.g. the run id to resume), else `prepare()`."""
        known = self._stages().get((rnd, name))
        if known is not None and known["status"] == "done":
            self.on_event(StageEvent(round=rnd, stage=name, status="skipped", result=known["result"]))
            return known["result"]
        resumed = known is not None
        state = known["result"] if resumed and known["result"] else (prepare() if prepare else {})
        stage_store.start_stage(self.db, self.config.experiment, rnd, name, state)
        self.on_event(StageEvent(round=rnd, stage=name, status="resumed" if resumed else "started", result=state))
        start = time.perf_counter()
        result = {**state, **work(dict(state, resumed=resumed))}
        result.pop("resumed", None)
        seconds = time.perf_counter() - start
        stage_store.finish_stage(self.db, self.config.experiment, rnd, name, result, seconds)
        self.on_event(StageEvent(round=rnd, stage=name, status="done", seconds=seconds, result=result))
        return result

    # -- stage bodies -------------------------------------------------------------------------
    def _rollout_config(self, agent: str, *, josh: bool) -> RolloutConfig:
        c = self.config
        constrained, grounded = decoding_flags(c.decoding)
        return RolloutConfig(
            # The oracle (warm start) plays its own actions whatever style the agents have.
            env=c.env, scoring=c.scoring, josh=josh, agent=agent, user=c.user, style="auto" if agent == "oracle" else c.style,
            constrained=constrained, grounded=grounded, temperature=c.temperature, seed=c.seed,
            max_turns=c.max_turns if josh else c.eval_max_turns, beam=c.beam, branching=c.branching,
            concurrency=c.concurrency,
        )

    def _play(self, scenarios: list[Scenario], config: RolloutConfig,
              ray_address: str | None = None) -> Callable[[dict[str, Any]], dict[str, Any]]:
        def work(state: dict[str, Any]) -> dict[str, Any]:
            run_id = state["run_id"]
            from josh_core.storage import reads

            ray = None
            if ray_address:
                from josh_core.distributed.ray_rollout import RayOptions

                ray = RayOptions(address=ray_address)
            exists = any(r.id == run_id for r in reads.list_runs(self.db)) if self.db_path.exists() else False
            if exists:
                result = resume_run(self.db_path, run_id, observer=self.observer, ray=ray)
            else:
                result = start_run(self.db_path, scenarios, config, observer=self.observer, run_id=run_id, ray=ray)
            done = [c for c in result.conversations if c.status == "done"]
            from josh_core.storage import reads as r

            stored = [c for c in r.list_conversations(self.db, run_id=run_id) if c.status == "done"]
            return {
                "conversations": len(stored),
                "failed": sum(1 for c in result.conversations if c.status != "done"),
                "with_goal": sum(1 for c in stored if (c.reward or 0) > 0),
                "successes": sum(1 for c in stored if c.success),
                "average_reward": sum((c.reward or 0) for c in stored) / len(stored) if stored else 0.0,
                "played_now": len(done),
            }

        return work

    def _new_run(self) -> dict[str, Any]:
        from josh_core.storage.writes import new_run_id

        return {"run_id": new_run_id()}

    def _export(self, runs: str | list[str], kind: str, out: Path, min_reward: float | None) -> dict[str, Any]:
        from josh_core.extract import ExportOptions, export_dataset

        out.parent.mkdir(parents=True, exist_ok=True)
        options = ExportOptions(kind=kind, min_reward=min_reward)
        if isinstance(runs, str):
            summary = export_dataset(self.db, options, out, run_id=runs)
        else:
            summary = export_dataset(self.db, options, out, run_ids=runs)
        return {"path": str(out), "rows": summary.rows, "conversations": summary.conversations,
                "considered": summary.considered, "min_reward": min_reward}

    def _export_stage(self, rnd: int, kind: str, run_id: str, data: Path) -> dict[str, Any]:
        """Round `rnd`'s KIND data from its JOSH run. KTO and DPO keep 100% trees only whatever
        the filter: a tree with no goal has no ideal path, only undesirable alternatives."""
        min_reward = None if kind == "sft" and self.config.filter == "partial" else 1.0
        return self._stage(rnd, f"export-{kind}", lambda s: self._export(run_id, kind, data, min_reward))

    def _train(self, kind: str, data: str | None, base: str, out: Path, overrides: dict[str, Any]) -> dict[str, Any]:
        from josh_core.train import train

        result = train(kind, data, base, out, overrides=overrides or None, db=self.db_path, on_log=self.on_train_log)
        done = {"adapter": result.adapter_dir, "training_id": result.training_id, "steps": result.steps,
                "final_loss": result.final_loss, "examples": result.examples}
        return {**done, "budget": result.budget} if result.budget else done

    # -- an online arm (GRPO): the round's scenarios played by the policy itself -------------------
    def _online_settings(self, kind: str, budget_turns: int | None) -> dict[str, Any]:
        """An online kind's settings in this experiment: the experiment's environment, user,
        scoring, agent style, decoding, JOSH depth and temperature (its episodes are played as
        the experiment's rollouts are), and, with the round's JOSH budget, at most that many sampled
        agent turns and as many steps as the budget can pay for (every episode takes a turn at
        least); `--set KIND.KEY=VALUE` (and --lr, --epochs, --max-steps) win over all of these."""
        c = self.config
        mine = c.train_overrides.get(kind, {})
        settings: dict[str, Any] = {"env": c.env, "user": c.user, "scoring": c.scoring, "style": c.style,
                                    "decoding": c.decoding, "max_turns": c.max_turns, "temperature": c.temperature}
        if budget_turns is not None:
            settings["max_agent_turns"] = budget_turns
            if "max_steps" not in mine and "num_train_epochs" not in mine:
                probe = build_config(kind, None, {**settings, **mine})
                per_step = (probe.per_device_train_batch_size * probe.gradient_accumulation_steps
                            * probe.num_generations)
                settings["max_steps"] = max(1, -(-budget_turns // per_step))
        return {**settings, **mine}

    def _online_arm(self, rnd: int, kind: str, scenarios: list[Scenario], agent: str, josh_run: str,
                    evaluation: list[Scenario]) -> str:
        """Round `rnd` of an online arm from `agent`: it plays the round's JOSH scenarios itself
        with the agent-turn budget the JOSH trees sampled, then is evaluated like every arm."""
        data = self.workdir / "exports" / f"round{rnd}-{kind}-scenarios.json"
        adapter = self.workdir / "adapters" / f"round{rnd}-{kind}"

        def work(state: dict[str, Any]) -> dict[str, Any]:
            budget = sum(josh_budget(self.db, josh_run).values())
            data.parent.mkdir(parents=True, exist_ok=True)
            data.write_text(json.dumps([s.model_dump(mode="json") for s in scenarios]), encoding="utf-8")
            result = self._train(kind, str(data), agent, adapter, self._online_settings(kind, budget))
            return {**result, "budget_turns": budget}

        self._stage(rnd, f"train-{kind}", work)
        trained = f"{base_model_spec(agent)}@{adapter}"
        self._evaluate(rnd, f"eval-{kind}", trained, evaluation)
        return trained

    # -- the rejection-sampling SFT control ------------------------------------------------------
    def _control_config(self, agent: str, seed: int, max_turns: int) -> RolloutConfig:
        """A plain rollout of the control's agent: the evaluation's settings, one attempt's seed,
        and at most the JOSH depth (the conversations JOSH's trees are made of)."""
        return self._rollout_config(agent, josh=False).model_copy(update={"seed": seed, "max_turns": max_turns})

    def _control_rollout(self, rnd: int, scenarios: list[Scenario], agent: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
        """Plain rollouts, attempt after attempt with fresh seeds, until every scenario has
        sampled the agent turns its JOSH tree did (`state["budget"]`). Each attempt plays, as one
        run per turn cap, every scenario with budget left; a run is recorded in the stage before
        it is played, so a stopped stage resumes it and goes on with the same plan."""
        c = self.config
        by_id = {s.id: s for s in scenarios}

        def work(state: dict[str, Any]) -> dict[str, Any]:
            from josh_core.search.tree import derive_seed

            budget: dict[str, int] = state["budget"]
            runs: list[dict[str, Any]] = list(state.get("runs", []))
            for planned in runs:  # resume what a stopped stage had planned (finished runs stay as they are)
                if self._finished(planned["run_id"]):
                    continue
                self._play([by_id[i] for i in planned["scenarios"]], self._control_config(
                    agent, planned["seed"], planned["max_turns"]))({"run_id": planned["run_id"]})
            while True:
                spent, stalled = self._control_spent(runs)  # a conversation that sampled nothing: give up
                attempt = max((r["attempt"] for r in runs), default=-1) + 1
                left = {sid: budget[sid] - spent.get(sid, 0) for sid in by_id
                        if budget.get(sid, 0) - spent.get(sid, 0) > 0 and sid not in stalled}
                if not left:
                    break
                seed = derive_seed(c.seed, f"{CONTROL_ARM}/round{rnd}/attempt{attempt}")
                for cap in sorted({min(c.max_turns, turns) for turns in left.values()}, reverse=True):
                    planned = {**self._new_run(), "attempt": attempt, "seed": seed, "max_turns": cap,
                               "scenarios": [sid for sid in by_id if sid in left and min(c.max_turns, left[sid]) == cap]}
                    runs.append(planned)
                    stage_store.start_stage(self.db, c.experiment, rnd, f"rollout-{CONTROL_ARM}", {**state, "runs": runs})
                    self._play([by_id[i] for i in planned["scenarios"]],
                               self._control_config(agent, seed, cap))({"run_id": planned["run_id"]})
            from josh_core.storage import reads

            spent, _ = self._control_spent(runs)
            played = [conv for r in runs for conv in reads.list_conversations(self.db, run_id=r["run_id"])
                      if conv.status == "done"]
            return {"runs": runs, "budget": budget, "agent_turns": sum(spent.values()),
                    "budget_turns": sum(budget.values()), "attempts": len({r["attempt"] for r in runs}),
                    "conversations": len(played), "successes": sum(1 for conv in played if conv.success),
                    "with_goal": sum(1 for conv in played if (conv.reward or 0) > 0)}

        return work

    def _finished(self, run_id: str) -> bool:
        from josh_core.storage import reads

        if not any(r.id == run_id for r in reads.list_runs(self.db)):
            return False
        conversations = reads.list_conversations(self.db, run_id=run_id)
        return bool(conversations) and all(conv.status == "done" for conv in conversations)

    def _control_spent(self, runs: list[dict[str, Any]]) -> tuple[dict[str, int], set[str]]:
        """Agent turns the control's (played) runs sampled per scenario, finished or not (spent
        is spent), and the scenarios of which a conversation sampled none (playing them again
        would never spend their budget)."""
        spent: dict[str, int] = {}
        stalled: set[str] = set()
        for r in runs:
            turns = agent_turns_by_scenario(self.db, r["run_id"])
            for sid in r["scenarios"]:
                spent[sid] = spent.get(sid, 0) + turns.get(sid, 0)
                if not turns.get(sid):
                    stalled.add(sid)
        return spent, stalled

    def _control_round(self, rnd: int, scenarios: list[Scenario], agent: str, josh_run: str,
                       evaluation: list[Scenario]) -> str:
        """One round of the control arm from `agent`; returns the agent its next round starts from."""
        c = self.config
        rollout = self._stage(rnd, f"rollout-{CONTROL_ARM}", self._control_rollout(rnd, scenarios, agent),
                              lambda: {"agent": agent, "runs": [], "budget": josh_budget(self.db, josh_run)})
        data = self.workdir / "exports" / f"round{rnd}-{CONTROL_ARM}.jsonl"
        export = self._stage(rnd, f"export-{CONTROL_ARM}", lambda s: self._export(
            [r["run_id"] for r in rollout["runs"]], "sft", data, 1.0 if c.filter == "full" else ANY_GOAL))
        if not export["rows"]:
            for stage in (f"train-{CONTROL_ARM}", f"eval-{CONTROL_ARM}"):
                self._stage(rnd, stage, lambda s: {"skipped": "the export has no rows"})
            return agent
        adapter = self.workdir / "adapters" / f"round{rnd}-{CONTROL_ARM}"
        self._stage(rnd, f"train-{CONTROL_ARM}", lambda s: self._train(
            "sft", export["path"], agent, adapter, c.train_overrides.get("sft", {})))
        trained = f"{base_model_spec(agent)}@{adapter}"
        self._evaluate(rnd, f"eval-{CONTROL_ARM}", trained, evaluation)
        return trained

    def _evaluate(self, rnd: int, name: str, agent: str, scenarios: list[Scenario]) -> dict[str, Any]:
        config = self._rollout_config(agent, josh=False)
        return self._stage(rnd, name, self._play(scenarios, config), lambda: {**self._new_run(), "agent": agent})

    # -- the whole experiment ------------------------------------------------------------------
    def check_training_settings(self) -> None:
        """Everything the train stages will need, checked before anything is stored (a bad
        setting found at the train stage used to leave the experiment name bound to it): the
        base is a trainable agent SPEC, every kind's settings resolve (finite, known keys), and
        no settings are given for a kind the experiment does not train."""
        from josh_core.train.model import resolve_base

        c = self.config
        stray = sorted(set(c.train_overrides) - set(c.kinds))
        if stray:
            raise TrainingConfigError(
                f"settings for {', '.join(stray)} ({', '.join(f'--set {k}.*' for k in stray)}) but the experiment "
                f"trains only {', '.join(c.kinds)}: add --kind {stray[0]} or drop those settings"
            )
        resolve_base(c.base)
        for kind in c.kinds:
            try:
                build_config(kind, None, self._online_settings(kind, None) if KINDS[kind].online
                             else c.train_overrides.get(kind))
            except TrainingConfigError as error:
                raise TrainingConfigError(f"{kind} settings: {error}") from None
        try:
            build_config("sft", None, c.warm_start_overrides)
        except TrainingConfigError as error:
            raise TrainingConfigError(f"warm-start settings: {error}") from None

    def run(self) -> SelftrainResult:
        c = self.config
        self.check_training_settings()
        warm, slices, evaluation = scenario_slices(c)  # checked before anything is stored
        self._check_config()
        self.workdir.mkdir(parents=True, exist_ok=True)
        agent = c.base

        if c.warm_start:
            # The oracle needs no cap to finish (it acts on every turn); 20 turns is ample.
            oracle = self._rollout_config("oracle", josh=False).model_copy(update={"max_turns": 20})
            rollout = self._stage(0, "warmstart-rollout", self._play(warm, oracle), self._new_run)
            data = self.workdir / "exports" / "warmstart-sft.jsonl"
            export = self._stage(0, "warmstart-export",
                                 lambda s: self._export(rollout["run_id"], "sft", data, 1.0))
            adapter = self.workdir / "adapters" / "warmstart-sft"
            self._stage(0, "warmstart-train",
                        lambda s: self._train("sft", export["path"], agent, adapter, c.warm_start_overrides))
            agent = f"{agent}@{adapter}"

        starting = self._evaluate(0, "eval", agent, evaluation)
        control_agent = agent  # the control arm's lineage starts from the same agent
        for rnd, scenarios in enumerate(slices, start=1):
            rollout = self._stage(rnd, "rollout", self._play(scenarios, self._rollout_config(agent, josh=True),
                                                             c.ray_address), self._new_run)
            next_agent = None
            for kind in c.kinds:
                if KINDS[kind].online:
                    trained = self._online_arm(rnd, kind, scenarios, agent, rollout["run_id"], evaluation)
                    next_agent = next_agent or trained
                    continue
                data = self.workdir / "exports" / f"round{rnd}-{kind}.jsonl"
                export = self._export_stage(rnd, kind, rollout["run_id"], data)
                if not export["rows"]:
                    # Nothing to learn from: say so; the agent stays what it was (no new evaluation).
                    for stage in (f"train-{kind}", f"eval-{kind}"):
                        self._stage(rnd, stage, lambda s: {"skipped": "the export has no rows"})
                    continue
                adapter = self.workdir / "adapters" / f"round{rnd}-{kind}"
                self._stage(rnd, f"train-{kind}", lambda s, kind=kind, export=export, adapter=adapter: self._train(
                    kind, export["path"], agent, adapter, c.train_overrides.get(kind, {})))
                trained = f"{base_model_spec(agent)}@{adapter}"
                self._evaluate(rnd, f"eval-{kind}", trained, evaluation)
                next_agent = next_agent or trained
            if c.control == CONTROL_ARM:
                control_agent = self._control_round(rnd, scenarios, control_agent, rollout["run_id"], evaluation)
            agent = next_agent or agent
        return self.summary(starting_run=starting["run_id"])

    # -- reading an experiment back -------------------------------------------------------------
    def _agent_of(self, result: dict[str, Any]) -> str:
        """The agent an evaluation stage played (stored with it; else its run's agent SPEC)."""
        if result.get("agent"):
            return result["agent"]
        from josh_core.storage import reads

        try:
            return reads.get_run(self.db, result["run_id"]).agent_spec or ""
        except (KeyError, LookupError):
            return ""

    def summary(self, starting_run: str | None = None) -> SelftrainResult:
        stages = self._stages()
        if starting_run is None:
            starting_run = (stages.get((0, "eval")) or {}).get("result", {}).get("run_id")
        rounds: list[RoundSummary] = []
        comparisons: list[dict[str, Any]] = []
        unpaired: list[dict[str, Any]] = []
        josh_turns: dict[int, int] = {}  # round -> agent turns its JOSH trees sampled
        start_eval = stages.get((0, "eval"))
        if start_eval and start_eval["status"] == "done":
            rounds.append(RoundSummary(round=0, agent=self._agent_of(start_eval["result"]), kind=None,
                                       metrics=_eval_metrics(start_eval["result"])))
        # Each round's JOSH arms in stage order, then its control.
        for (rnd, name), stage in sorted(stages.items(), key=lambda item: (item[0][0], item[0][1].endswith(CONTROL_ARM),
                                                                         item[0][1])):
            if rnd == 0 or not name.startswith("eval-") or stage["status"] != "done" or "skipped" in stage["result"]:
                continue
            kind = name.split("-", 1)[1]
            export = (stages.get((rnd, f"export-{kind}")) or {}).get("result", {})
            if kind in KINDS and KINDS[kind].online:
                trained = (stages.get((rnd, f"train-{kind}")) or {}).get("result", {})
                budget = trained.get("budget") or {}
                row = RoundSummary(round=rnd, agent=self._agent_of(stage["result"]), kind=kind,
                                   plain_conversations=budget.get("episodes"), agent_turns=budget.get("agent_turns"),
                                   metrics=_eval_metrics(stage["result"]))
            elif kind == CONTROL_ARM:
                control = (stages.get((rnd, f"rollout-{CONTROL_ARM}")) or {}).get("result", {})
                row = RoundSummary(round=rnd, agent=self._agent_of(stage["result"]), kind=kind,
                                   plain_conversations=control.get("conversations"),
                                   plain_successes=control.get("successes"), agent_turns=control.get("agent_turns"),
                                   examples=export.get("rows"), metrics=_eval_metrics(stage["result"]))
            else:
                rollout = (stages.get((rnd, "rollout")) or {}).get("result", {})
                if rnd not in josh_turns and rollout.get("run_id"):
                    josh_turns[rnd] = sum(josh_budget(self.db, rollout["run_id"]).values())
                row = RoundSummary(round=rnd, agent=self._agent_of(stage["result"]), kind=kind,
                                   josh_conversations=rollout.get("conversations"),
                                   trees_with_goal=rollout.get("with_goal"), agent_turns=josh_turns.get(rnd),
                                   examples=export.get("rows"), metrics=_eval_metrics(stage["result"]))
            rounds.append(row)
            if starting_run and stage["result"].get("run_id"):
                try:
                    comparison = compare_runs(self.db, starting_run, stage["result"]["run_id"])
                except ValueError as refused:  # e.g. no scenario finished by both: no pairing to show
                    unpaired.append({"round": rnd, "kind": kind, "reason": str(refused)})
                else:
                    comparisons.append({"round": rnd, "kind": kind, **comparison.model_dump()})
        table = [{"round": rnd, "stage": name, "status": s["status"], "seconds": s["seconds"],
                  "result": s["result"]} for (rnd, name), s in stages.items() if name != "config"]
        return SelftrainResult(experiment=self.config.experiment, db_path=str(self.db_path),
                               workdir=str(self.workdir), rounds=rounds, comparisons=comparisons, unpaired=unpaired, stages=table)


def load_result(db_path: str | Path, experiment: str) -> SelftrainResult:
    """The stored result of an experiment (for the app and `--summary`), from its recorded settings."""
    db = Database(db_path, read_only=True)
    stored = stage_store.get_stages(db, experiment).get((0, "config"))
    if stored is None:
        raise KeyError(f"no self-training experiment {experiment!r} in {db_path}")
    loop = Selftrain(SelftrainConfig.model_validate(stored["result"]), db_path)
    loop.db = db
    return loop.summary()


def agent_turns_by_scenario(db: Database, run_id: str, only_done: bool = False) -> dict[str, int]:
    """Agent turns a run sampled per scenario: its stored agent nodes (a JOSH tree stores every
    agent turn the search sampled, pruned ones included; a plain conversation one per turn)."""
    from josh_core.storage import reads

    nodes = reads.nodes_frame(db, run_id=run_id)
    if nodes.empty:
        return {}
    agent = nodes[nodes["kind"] == "agent"]
    if only_done:
        done = {conv.id for conv in reads.list_conversations(db, run_id=run_id, status="done")}
        agent = agent[agent["conversation_id"].isin(done)]
    return {str(sid): int(count) for sid, count in agent.groupby("scenario_id").size().items()}


def josh_budget(db: Database, run_id: str) -> dict[str, int]:
    """The control's budget: agent turns of each finished JOSH tree of the round, by scenario."""
    return agent_turns_by_scenario(db, run_id, only_done=True)


def base_model_spec(agent: str) -> str:
    """`embedded@A` -> `embedded`: the model an adapter trained from `agent` applies to (a
    continued adapter holds the earlier rounds' updates too)."""
    if agent.startswith("embedded"):
        return agent.split("@", 1)[0]
    if agent.startswith("hf:") and "@" in agent:
        return agent.rsplit("@", 1)[0]
    return agent


def _eval_metrics(result: dict[str, Any]) -> dict[str, Any]:
    keys = ("conversations", "average_reward", "successes", "with_goal", "failed")
    return {k: result.get(k) for k in keys if k in result}


def comparison_rows(comparison: dict[str, Any]) -> list[dict[str, Any]]:
    """Flat rows (metric, base, trained, difference with intervals) for tables and JSON."""
    rows = []
    for m in Comparison.model_validate({k: comparison[k] for k in ("base_run", "trained_run", "n", "metrics")}).metrics:
        rows.append({"metric": m.metric, **{f"{side}_{part}": getattr(getattr(m, side), part)
                                            for side in ("base", "trained", "difference")
                                            for part in ("mean", "low", "high")}})
    return rows


def dumps(result: SelftrainResult) -> str:
    return json.dumps(result.model_dump(mode="json"), indent=2, default=str)
