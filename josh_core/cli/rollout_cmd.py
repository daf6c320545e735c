"""`josh rollout` (plain and JOSH rollouts into DuckDB, with resume) and `josh export`."""

from __future__ import annotations

import signal
from enum import Enum
from pathlib import Path
from typing import NoReturn, Optional

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from josh_core.cli.output import error_console, fail, plain, styled, warn
from josh_core.cli.run_flags import run_flag
from josh_core.distributed import RayUnavailable
from josh_core.extract import EXPORT_KINDS, ExportOptions, export_dataset
from josh_core.paths import default_db_path
from josh_core.policies.factory import decoding_flags
from josh_core.rollout import (
    ConversationResult,
    PolicyError,
    RolloutConfig,
    RolloutObserver,
    RunInterrupted,
    RunResult,
    build_policies,
    resume_run,
    start_run,
)
from josh_core.rollout.options import flag_of
from josh_core.search.engine import StepEvent
from josh_core.storage.db import Database, DatabaseError
from josh_core.storage.locks import RunBusy

Kind = Enum("Kind", {kind: kind for kind in EXPORT_KINDS}, type=str)
Format = Enum("Format", {"trl": "trl", "openai": "openai"}, type=str)


def config_error_text(error: ValidationError) -> str:
    """A RolloutConfig's validation errors, each named by its flag."""
    parts = []
    for e in error.errors():
        message = e["msg"].removeprefix("Value error, ")
        if e["loc"]:
            parts.append(f"{flag_of(str(e['loc'][0]))}: {message}")
        else:  # a check across fields (the agent style)
            parts.append(f"{'--style' if 'style' in message else 'configuration'}: {message}")
    return "; ".join(parts)


def load_scenarios_or_fail(split: Optional[str], limit: Optional[int], scenario_file: Optional[Path],
                           env: Optional[str] = None) -> list:
    """The scenarios of a split or a scenario file of an environment (default ToolWOZ), or a
    plain error naming what was wrong."""
    from josh_core.envs.base import DataUnavailable

    try:
        scenarios = _load_scenarios(split, limit, scenario_file, env)
    except (ValueError, OSError, RecursionError) as error:
        _fail(f"--scenario-file {error}" if scenario_file is not None else f"--split: {error}")
    except DataUnavailable as error:
        _fail(str(error))
    if not scenarios:
        _fail("no scenarios selected")
    return scenarios


def interrupted(interrupt: BaseException, run_id: Optional[str], db_path: Path) -> NoReturn:
    """End a command stopped by SIGINT or SIGTERM: say how to continue, exit 128 + signal."""
    signum = getattr(interrupt, "signum", signal.SIGINT)
    name = signal.Signals(signum).name
    if run_id:
        message = (f"interrupted by {name}: run {run_id} is marked interrupted; continue it with "
                   f"josh rollout --resume {run_id} --db {db_path}")
    else:
        message = f"interrupted by {name} before a run started"
    error_console().print(plain(message))
    raise typer.Exit(128 + signum)


def _fail(message: str) -> NoReturn:
    fail(message)


# `--ray [ADDRESS]`, `--ray-workers`, `--ray-endpoints` (run options, rollout/options.py) are
# shared by rollout and eval; the ADDRESS may be left out: josh_core/cli/__init__.py gives a
# bare --ray the value "local".
def ray_options_or_fail(address: Optional[str], workers: Optional[int], endpoints: Optional[str]):
    """The RayOptions of the --ray flags (None without --ray); Ray is imported only here."""
    if address is None:
        if workers is not None or endpoints:
            _fail("--ray-workers and --ray-endpoints need --ray")
        return None
    from josh_core.distributed.ray_rollout import RayOptions

    try:
        return RayOptions(address=address, workers=workers, endpoints=(endpoints or "").split(","))
    except ValueError as error:
        _fail(str(error))


class ProgressObserver(RolloutObserver):
    """Rich progress: a bar for the run, one per conversation in flight (agent turns), and a
    one-line summary per finished conversation."""

    def __init__(self, progress: Progress, console: Console):
        self.progress = progress
        self.console = console
        self.run_id: str | None = None
        self.run_task = None
        self.tasks: dict[str, int] = {}
        self.nodes: dict[str, int] = {}
        self.scenarios: dict[str, str] = {}
        self.worker_of: dict[str, str] = {}  # conversation -> worker (distributed runs)
        self.worker_tasks: dict[str, int] = {}
        self.worker_labels: dict[str, str] = {}
        self.worker_done: dict[str, int] = {}
        self.worker_notes: dict[str, str] = {}

    def run_started(self, run_id: str, total: int, already_done: int) -> None:
        self.run_id = run_id
        self.console.print(plain(f"run {run_id}: {total} conversations, {already_done} already done"))
        self.run_task = self.progress.add_task(f"run {run_id}", total=total, completed=already_done)

    def conversation_started(self, conversation_id: str, scenario_id: str, max_steps: int) -> None:
        previous = self.tasks.pop(conversation_id, None)  # a distributed run restarts it after a worker died
        if previous is not None:
            self.progress.remove_task(previous)
        self.tasks[conversation_id] = self.progress.add_task(f"  {scenario_id}", total=max_steps)
        self.scenarios[conversation_id] = scenario_id
        self.nodes[conversation_id] = 0

    # Distributed runs (--ray): one line per worker, conversations it finished and what it plays.
    def conversation_worker(self, conversation_id: str, worker: str) -> None:
        short = worker.split(" ", 1)[0]
        self.worker_of[conversation_id] = short
        task = self.tasks.get(conversation_id)
        if task is not None:
            self.progress.update(task, description=f"  {self.scenarios.get(conversation_id, '')} [{short}]")
        self._worker_line(short, worker)

    def worker_status(self, worker: str, status: str) -> None:
        short = worker.split(" ", 1)[0]
        if status == "ready":
            self._worker_line(short, worker)
        elif status == "lost":
            self._worker_line(short, worker, note="lost")
        else:
            self.console.print(plain(f"worker {worker}: {status}"), highlight=False)

    def _worker_line(self, short: str, label: str | None = None, note: str = "") -> None:
        if label:
            self.worker_labels[short] = label
        if short not in self.worker_tasks:
            self.worker_tasks[short] = self.progress.add_task("", total=None)
        if note:
            self.worker_notes[short] = note
        playing = [self.scenarios.get(c, c) for c, w in self.worker_of.items() if w == short and c in self.tasks]
        text = self.worker_notes.get(short) or ("playing " + ", ".join(playing) if playing else "idle")
        self.progress.update(self.worker_tasks[short], completed=self.worker_done.get(short, 0),
                             description=f"worker {self.worker_labels.get(short, short)}: {text}")

    def step(self, conversation_id: str, event: StepEvent) -> None:
        self.nodes[conversation_id] = self.nodes.get(conversation_id, 0) + len(event.created)
        task = self.tasks.get(conversation_id)
        if task is not None:
            self.progress.update(task, completed=event.step)

    def conversation_finished(self, result: ConversationResult) -> None:
        task = self.tasks.pop(result.conversation_id, None)
        if task is not None:
            self.progress.remove_task(task)
        worker = self.worker_of.get(result.conversation_id)
        if worker is not None:
            self.worker_done[worker] = self.worker_done.get(worker, 0) + 1
            self._worker_line(worker)
        # Scenario ids and error messages come from outside: plain text, never markup.
        if result.status == "stopped":  # not its fault (a full disk): left for a resume
            line = styled(
                f"{result.scenario_id:<24} ", ("NOT FINISHED", "yellow"), f" after {result.seconds:.1f} s: {result.error}"
            )
        elif result.status == "done":
            line = plain(
                f"{result.scenario_id:<24} reward {result.reward:.2f}  nodes {result.nodes:4d}  "
                f"{result.seconds:7.1f} s  ({result.stop_reason})"
            )
        else:
            line = styled(
                f"{result.scenario_id:<24} ", ("FAILED", "red"), f" after {result.seconds:.1f} s: {result.error}"
            )
        self.console.print(line, highlight=False)
        if self.run_task is not None:
            self.progress.advance(self.run_task)


def _load_scenarios(split: Optional[str], limit: Optional[int], scenario_file: Optional[Path],
                    env: Optional[str] = None):
    from josh_core.envs import get_env

    environment = get_env(env)
    if scenario_file is not None:
        scenarios = environment.load_scenario_file(scenario_file)
        return scenarios[:limit] if limit is not None else scenarios
    return environment.load_split(split or environment.eval_split, limit)


def register(app: typer.Typer) -> None:
    @app.command("rollout")
    def rollout(
        josh: bool = run_flag("josh"),
        env: str = run_flag("env"),
        scoring: Optional[str] = run_flag("scoring"),
        split: Optional[str] = run_flag("split"),
        limit: Optional[int] = run_flag("limit"),
        scenario_file: Optional[Path] = run_flag("scenario_file", exists=True, dir_okay=False),
        agent: str = run_flag("agent"),
        user: Optional[str] = run_flag("user"),
        style: str = run_flag("style"),
        temperature: Optional[float] = run_flag("temperature"),
        max_actions: Optional[int] = run_flag("max_actions_per_turn"),
        base_url: Optional[str] = run_flag("base_url", help=(
            "OpenAI-compatible endpoint (with --resume: replaces the run's; credentials in it are not stored).")),
        decoding: str = run_flag("decoding"),
        beam: int = run_flag("beam"),
        branching: int = run_flag("branching"),
        max_turns: int = run_flag("max_turns"),
        seed: int = run_flag("seed"),
        concurrency: int = run_flag("concurrency"),
        db: Optional[Path] = typer.Option(None, help="DuckDB file (default JOSH_DB or ./josh.duckdb)."),
        resume: Optional[str] = typer.Option(None, "--resume", help="Continue the run with this id."),
        ray: Optional[str] = run_flag("ray", metavar="[ADDRESS]"),
        ray_workers: Optional[int] = run_flag("ray_workers"),
        ray_endpoints: Optional[str] = run_flag("ray_endpoints"),
    ) -> None:
        """Run plain or JOSH rollouts and store every tree in DuckDB."""
        db_path = db or default_db_path()
        ray_options = ray_options_or_fail(ray, ray_workers, ray_endpoints)
        console = Console(highlight=False, soft_wrap=True)
        columns = (
            TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
        )
        observer: ProgressObserver | None = None
        try:
            with Progress(*columns, console=console, transient=False) as progress:
                observer = ProgressObserver(progress, console)
                if resume is not None:
                    try:
                        result = resume_run(db_path, resume, observer=observer, base_url=base_url, ray=ray_options)
                    except KeyError as error:
                        _fail(str(error.args[0]) if error.args else str(error))
                    except (FileNotFoundError, RunBusy, PolicyError, DatabaseError, ValidationError) as error:
                        _fail(str(error))
                    except RayUnavailable as error:
                        _fail(str(error))
                else:
                    from josh_core.envs import UnknownEnvironment, get_env

                    try:
                        environment = get_env(env)
                    except UnknownEnvironment as error:
                        _fail(f"--env: {error}")
                    if scenario_file is None:
                        split = split or environment.default_split(josh)
                    try:
                        constrained, grounded = decoding_flags(decoding)
                    except ValueError as error:
                        _fail(f"--decoding: {error}")
                    try:
                        config = RolloutConfig(
                            env=environment.name, scoring=scoring, josh=josh, agent=agent, user=user, style=style,
                            temperature=temperature,
                            constrained=constrained, grounded=grounded,
                            max_actions_per_turn=max_actions, base_url=base_url, max_turns=max_turns,
                            beam=beam, branching=branching, seed=seed, concurrency=concurrency,
                            split=split if scenario_file is None else None, limit=limit,
                            scenario_file=str(scenario_file) if scenario_file else None,
                        )
                    except ValidationError as error:
                        _fail(config_error_text(error))
                    scenarios = load_scenarios_or_fail(split, limit, scenario_file, config.env)
                    built_agent = built_user = None
                    if ray_options is None:  # on Ray, every worker builds its own
                        try:
                            built_agent, built_user = build_policies(config)
                        except PolicyError as error:
                            _fail(str(error))
                    try:
                        result = start_run(db_path, scenarios, config, agent=built_agent, user=built_user,
                                           observer=observer, ray=ray_options)
                    except (DatabaseError, PolicyError, RunBusy) as error:
                        _fail(str(error))
                    except RayUnavailable as error:  # no Ray, no cluster, no room for a worker
                        _fail(str(error))
        except (KeyboardInterrupt, RunInterrupted) as interrupt:
            interrupted(interrupt, observer.run_id if observer else None, db_path)
        _summary(console, result)
        if result.stopped:
            fail(f"run {result.run_id} stopped: {result.stopped}: josh rollout --resume {result.run_id} "
                 f"--db {db_path}")
        if any(c.status != "done" for c in result.conversations):
            raise typer.Exit(1)

    @app.command("export")
    def export(
        db: Path = typer.Option(..., exists=True, dir_okay=False, help="DuckDB file with rollouts."),
        kind: Kind = typer.Option(..., help=" | ".join(EXPORT_KINDS) + "."),
        out: Path = typer.Option(..., help="Output JSONL file."),
        run: Optional[str] = typer.Option(None, help="Only this run (default: every run)."),
        format: Format = typer.Option(Format.trl, help="trl (conversational) | openai (fine-tuning)."),
        all_rewards: bool = typer.Option(
            False, "--all-rewards", help="Keep conversations below 100% reward too."
        ),
        keep_errors: bool = typer.Option(
            False, "--keep-errors", help="Keep ideal-path turns with format or API errors."
        ),
        no_annotations: bool = typer.Option(
            False, "--no-annotations", help="Ignore label overrides from annotations."
        ),
        system_only: bool = typer.Option(
            False, "--system-only",
            help="Start prompts with the system prompt alone (default: everything the agent sent, "
            "demonstration included).",
        ),
    ) -> None:
        """Turn stored trees into SFT / KTO / DPO training data (JSONL)."""
        options = ExportOptions(
            kind=kind.value,
            format=format.value,
            min_reward=None if all_rewards else 1.0,
            drop_errors=not keep_errors,
            use_annotations=not no_annotations,
            prompt="system" if system_only else "agent",
        )
        try:
            # Export only reads: a read-only handle never creates or migrates a schema.
            summary = export_dataset(Database(db, read_only=True), options, out, run_id=run)
        except KeyError as error:
            _fail(str(error.args[0]) if error.args else str(error))
        except (ValueError, DatabaseError, OSError) as error:
            _fail(str(error))
        if summary.note:
            warn(summary.note)
        typer.echo(
            f"wrote {summary.rows} {summary.kind} rows ({summary.format}) from "
            f"{summary.conversations} of {summary.considered} finished conversations to {out}"
        )


def _summary(console: Console, result: RunResult) -> None:
    played = result.conversations
    done = [c for c in played if c.status == "done"]
    unfinished = sum(c.status == "stopped" for c in played)  # left for a resume (a full disk)
    failed = len(played) - len(done) - unfinished
    success = sum(c.success for c in done)
    if done:
        console.print(
            f"{len(done)} conversations played ({result.skipped} done before): average reward "
            f"{result.average_reward:.3f}, success {success}/{len(done)}"
            + (f", {failed} failed" if failed else "")
        )
    elif failed:
        console.print(f"{failed} conversations failed")
    if unfinished:
        console.print(f"{unfinished} conversations not finished (a resume plays them)")
    console.print(plain(f"run {result.run_id} in {result.db_path}"))
