"""`josh selftrain`: rounds of JOSH rollouts -> export -> train -> evaluate (josh_core/train/selftrain.py)."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from josh_core.cli.output import error_console, fail, plain
from josh_core.cli.run_flags import run_flag
from josh_core.paths import default_db_path
from josh_core.rollout.options import SELFTRAIN_DEFAULTS
from josh_core.train.kinds import KINDS, setting_value

METRIC_LABELS = {
    "reward": "Average Reward", "success": "100% Success Rate", "goal_completion": "goal-call completion",
    "api_turn_share": "turns with an API call", "format_error_rate": "format errors (per generation)",
    "bad_api_rate": "conversations with bad API use",
}


def _interval(mean: float, low: float, high: float) -> str:
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def print_result(console: Console, result) -> None:
    from josh_core.train.selftrain import comparison_rows

    rounds = Table(title="self-training rounds", title_justify="left")
    for column in ("round", "kind", "agent", "JOSH trees", "trees with a goal", "plain conversations",
                   "control successes", "agent turns sampled", "examples", "eval conversations",
                   "Average Reward", "successes"):
        rounds.add_column(column)

    def shown(value) -> object:
        return "" if value is None else value

    for r in result.rounds:
        m = r.metrics
        rounds.add_row(*(plain(v) for v in (
            r.round, r.kind or "start", r.agent, shown(r.josh_conversations), shown(r.trees_with_goal),
            shown(r.plain_conversations), shown(r.plain_successes), shown(r.agent_turns), shown(r.examples),
            m.get("conversations", ""), f"{m.get('average_reward', 0):.3f}", m.get("successes", ""))))
    console.print(rounds)
    for comparison in result.comparisons:
        table = Table(title=f"round {comparison['round']} {comparison['kind']} vs the starting agent "
                            f"({comparison['n']} paired scenarios; means with bootstrap 95% intervals)",
                      title_justify="left")
        for column in ("metric", "starting agent", "trained", "difference"):
            table.add_column(column)
        for row in comparison_rows(comparison):
            table.add_row(plain(METRIC_LABELS.get(row["metric"], row["metric"])),
                          *(plain(_interval(row[f"{side}_mean"], row[f"{side}_low"], row[f"{side}_high"]))
                            for side in ("base", "trained", "difference")))
        console.print(table)
    for refused in result.unpaired:
        console.print(plain(f"round {refused['round']} {refused['kind']} vs the starting agent: not compared "
                            f"({refused['reason']})"))
    stages = Table(title="stages", title_justify="left")
    for column in ("round", "stage", "status", "seconds"):
        stages.add_column(column)
    for s in result.stages:
        stages.add_row(*(plain(v) for v in (s["round"], s["stage"], s["status"],
                                             f"{s['seconds']:.0f}" if s["seconds"] is not None else "")))
    console.print(stages)


def register(app: typer.Typer) -> None:
    @app.command("selftrain")
    def selftrain(
        experiment: str = typer.Option("selftrain", help="Name of the experiment (its stages are stored under it; "
                                       "rerun the same command to resume it). One folder name: it names the "
                                       "folder of its exports and adapters."),
        env: str = run_flag("env"),
        base: str = run_flag("agent", flag="--base", help="The starting agent SPEC."),
        user: Optional[str] = run_flag("user"),
        scoring: Optional[str] = run_flag("scoring"),
        style: str = run_flag("style"),
        decoding: str = run_flag("decoding"),
        rounds: int = typer.Option(1, min=1, help="Rounds of JOSH -> train -> eval (round k starts from round k-1)."),
        kind: list[str] = typer.Option(["sft"], "--kind", help=f"Training kind, {' | '.join(KINDS)}; repeat for "
                                       "several (each trained from the same round)."),
        filter_: str = typer.Option("full", "--filter", help="SFT data: full: 100% conversations only; partial: "
                                    "every conversation's ideal path up to its last goal (the control: every "
                                    "conversation that reached a goal). KTO and DPO keep 100% trees only."),
        control: str = typer.Option("none", "--control", help="none | rs-sft: also train the rejection-sampling "
                                    "SFT control (plain rollouts with JOSH's budget of agent turns, successes "
                                    "only; needs --kind sft); see docs/training.md."),
        warm_start: int = typer.Option(0, min=0, help="Oracle conversations for a warm-start SFT before round 0 "
                                       "(0: none); see docs/experiments.md."),
        train_split: Optional[str] = typer.Option(None, help="Split the JOSH scenarios come from (default: the "
                                                  "environment's JOSH split)."),
        train_limit: int = typer.Option(100, min=1, help="JOSH conversations per round."),
        train_offset: int = typer.Option(0, min=0, help="Skip this many usable train scenarios first (after the "
                                         "warm start's): those an adapter given as --base already trained on, "
                                         "e.g. 80 for embedded@shipped:warmstart-oracle80."),
        eval_split: Optional[str] = typer.Option(None, help="Held-out split to evaluate on (default: the "
                                                 "environment's held-out split; ToolWOZ val, τ² test)."),
        eval_limit: int = typer.Option(100, min=1, help="Held-out conversations per evaluation."),
        all_domains: bool = typer.Option(False, "--all-domains", help="Use multi-domain scenarios too "
                                         "(default: single-domain only)."),
        beam: int = run_flag("beam"),
        branching: int = run_flag("branching"),
        max_turns: int = run_flag("max_turns", default=SELFTRAIN_DEFAULTS["max_turns"], help="JOSH depth in agent turns."),
        eval_max_turns: int = run_flag("max_turns", flag="--eval-max-turns", default=SELFTRAIN_DEFAULTS["eval_max_turns"],
                                       help="Agent turns per evaluation conversation."),
        temperature: Optional[float] = run_flag("temperature"),
        seed: int = run_flag("seed"),
        concurrency: int = run_flag("concurrency", default=SELFTRAIN_DEFAULTS["concurrency"]),
        lr: Optional[float] = typer.Option(None, help="Learning rate for every training kind (default: its own)."),
        epochs: Optional[float] = typer.Option(None, help="Epochs for every training kind (default: its own)."),
        max_steps: Optional[int] = typer.Option(None, help="Cap on optimiser steps per training (smoke runs)."),
        warm_start_lr: Optional[float] = typer.Option(None, help="Learning rate of the warm-start SFT."),
        warm_start_epochs: Optional[float] = typer.Option(None, help="Epochs of the warm-start SFT."),
        settings: list[str] = typer.Option([], "--set", help="A training setting of one kind, KIND.KEY=VALUE "
                                           "(e.g. kto.learning_rate=5e-5); repeatable; wins over --lr/--epochs."),
        db: Path = typer.Option(None, help="DuckDB file of the experiment (runs, trainings, stages)."),
        ray: Optional[str] = run_flag("ray", metavar="[ADDRESS]", help="Play the JOSH rollout stages on Ray workers "
                                      "(bare --ray: start Ray here; docs/distributed.md)."),
        workdir: Optional[Path] = typer.Option(None, help="Where exports and adapters go "
                                               "(default: DB_STEM-selftrain/EXPERIMENT beside the database)."),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
        summary_only: bool = typer.Option(False, "--summary", help="Print the stored result of the experiment; run nothing."),
    ):
        """Self-train an agent: JOSH rollouts -> filter -> export -> train -> evaluate, in rounds.

        Every stage is stored in the database; running the same command again resumes a stopped
        experiment where it stopped (finished stages are not redone)."""
        from pydantic import ValidationError

        from josh_core.cli.rollout_cmd import ProgressObserver
        from josh_core.rollout import RunInterrupted
        from josh_core.storage.db import DatabaseError
        from josh_core.storage.locks import RunBusy
        from josh_core.train import TrainingConfigError, TrainingDataError
        from josh_core.train.guards import (
            TrainingBusy,
            TrainingDiverged,
            disk_full_message,
            is_disk_full,
            quiet_libraries,
        )
        from josh_core.train.selftrain import Selftrain, SelftrainConfig, StageEvent, dumps, settings_problems

        quiet_libraries()  # one progress display: ours

        db_path = db or default_db_path()
        overrides: dict = {}
        for key, value in (("learning_rate", lr), ("num_train_epochs", epochs), ("max_steps", max_steps)):
            if value is not None:
                overrides[key] = value
        warm_overrides = dict(overrides)
        for key, value in (("learning_rate", warm_start_lr), ("num_train_epochs", warm_start_epochs)):
            if value is not None:
                warm_overrides[key] = value
        per_kind = {k: dict(overrides) for k in kind}
        for item in settings:
            target, _, raw = item.partition("=")
            which, _, key = target.partition(".")
            if not raw or not key or which not in (*KINDS, "warmstart"):
                fail(f"--set {item!r}: expected KIND.KEY=VALUE with KIND {', '.join(KINDS)} or warmstart")
            if which not in ("warmstart", *kind):
                fail(f"--set {item!r}: {which} is not trained by this experiment (add --kind {which})")
            try:
                value = setting_value("sft" if which == "warmstart" else which, key, raw)
            except TrainingConfigError as error:
                fail(f"--set {item!r}: {error}")
            (warm_overrides if which == "warmstart" else per_kind.setdefault(which, {}))[key] = value
        try:
            from josh_core.envs import UnknownEnvironment, get_env

            try:
                environment = get_env(env)
            except UnknownEnvironment as error:
                fail(f"--env: {error}")
            config = SelftrainConfig(
                experiment=experiment, env=environment.name, base=base, user=user, scoring=scoring, style=style,
                decoding=decoding, rounds=rounds, kinds=kind,
                filter=filter_, control=control,
                warm_start=warm_start, train_split=train_split, train_limit=train_limit,
                train_offset=train_offset, eval_split=eval_split,
                eval_limit=eval_limit, single_domain=not all_domains, beam=beam, branching=branching,
                max_turns=max_turns, eval_max_turns=eval_max_turns, temperature=temperature, seed=seed,
                concurrency=concurrency, train_overrides={k: per_kind[k] for k in kind},
                warm_start_overrides=warm_overrides, ray_address=ray,
            )
        except ValidationError as error:
            fail(f"invalid settings: {settings_problems(error)}")
        console = Console(stderr=as_json, highlight=False)
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            console=console, transient=True)

        def on_event(event: StageEvent) -> None:
            detail = ""
            if event.status == "done":
                shown = {k: v for k, v in event.result.items() if k in (
                    "run_id", "conversations", "with_goal", "successes", "average_reward", "rows", "steps",
                    "final_loss", "skipped", "adapter", "agent_turns", "budget_turns")}
                detail = f" in {event.seconds:.0f} s: {json.dumps(shown, default=str)}"
            console.print(plain(f"round {event.round} {event.stage}: {event.status}{detail}"))

        def on_train_log(logs: dict) -> None:
            if isinstance(logs.get("loss"), (int, float)):
                console.print(plain(f"  training step {logs.get('step')}/{logs.get('max_steps')}: "
                                    f"loss {logs['loss']:.4f}"))

        loop = Selftrain(config, db_path, workdir, observer=ProgressObserver(progress, console), on_event=on_event,
                         on_train_log=on_train_log)
        try:
            if summary_only:
                from josh_core.train.selftrain import load_result

                result = load_result(db_path, experiment)
            else:
                with progress:
                    result = loop.run()
        except (KeyboardInterrupt, RunInterrupted) as interrupt:
            # Ctrl-C, or SIGTERM while a stage plays conversations: the stage's finished work is
            # stored, so the same command resumes; say so in one line instead of a traceback.
            signum = getattr(interrupt, "signum", signal.SIGINT)
            error_console().print(plain(
                f"interrupted by {signal.Signals(signum).name}: experiment {experiment!r} keeps its finished "
                f"stages and conversations; rerun the same command to resume it"))
            raise typer.Exit(128 + signum)
        except (ValueError, KeyError, DatabaseError, TrainingDataError, TrainingConfigError, FileNotFoundError,
                RunBusy, TrainingBusy, TrainingDiverged) as error:
            fail(error.args[0] if isinstance(error, KeyError) and error.args else error)
        except OSError as error:
            if is_disk_full(error):
                fail(disk_full_message(error, loop.workdir))
            fail(f"{error.filename or loop.workdir}: {error.strerror or error}")
        if as_json:
            typer.echo(dumps(result))
        else:
            print_result(console, result)
