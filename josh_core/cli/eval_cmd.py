"""`josh eval`, `josh metrics`, `josh errors` and `josh leaderboard`: evaluation and error
analysis (paper sections 4.1 and 5.2). Thin wrappers over josh_core.evaluate and
josh_core.analysis; `--json` prints exactly the records those functions return."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import NoReturn, Optional

import pandas as pd
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from josh_core.analysis.bootstrap import DEFAULT_RESAMPLES, MAX_RESAMPLES
from josh_core.analysis.compare import Comparison
from josh_core.cli.output import error_console, fail, plain, warn
from josh_core.cli.run_flags import run_flag
from josh_core.rollout.options import run_option
from josh_core.analysis.errors import DEFAULT_TOP, ErrorReport, error_report
from josh_core.analysis.leaderboard import leaderboard as leaderboard_frame
from josh_core.analysis.metrics import MetricsReport, metrics_report, records
from josh_core.evaluate import Evaluation, evaluate, resume_evaluation
from josh_core.paths import default_db_path
from josh_core.policies.factory import decoding_flags
from josh_core.storage.locks import RunBusy
from josh_core.rollout import RolloutConfig, RunInterrupted
from josh_core.storage.db import Database, DatabaseError

Nodes = Enum("Nodes", {"ideal": "ideal", "all": "all"}, type=str)


def _fail(message: str) -> NoReturn:
    fail(message)


def _print_json(value: object) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def _sizes(text: Optional[str]) -> Optional[list[int]]:
    if text is None:
        return None
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        _fail(f"--bootstrap-sizes wants comma-separated integers, got {text!r}")
    if not sizes or any(n < 1 for n in sizes):
        _fail("--bootstrap-sizes wants positive integers")
    return sizes


def _existing_db(db: Optional[Path]) -> Database:
    """The database a read command reads: opened read-only (never created or migrated), and
    checked now so that a file that is not a JOSH database fails with a plain message."""
    path = db or default_db_path()
    if not Path(path).exists():
        _fail(f"no database at {path}")
    if Path(path).is_dir():
        _fail(f"{path} is a folder, not a database file")
    database = Database(path, read_only=True)
    try:
        database.read(lambda con: None)
    except DatabaseError as error:
        _fail(str(error))
    return database


def _pct(value: float | None) -> str:
    return "" if value is None or pd.isna(value) else f"{100 * value:.1f}%"


def _num(value: float) -> str:
    return f"{value:.3f}"


def _table(title: str, frame: pd.DataFrame, columns: dict[str, str], formats: dict | None = None) -> Table:
    """A rich table of the given columns of `frame` (column -> header), numbers right-aligned."""
    formats = formats or {}
    table = Table(title=title)
    for i, (column, header) in enumerate(columns.items()):
        numeric = pd.api.types.is_numeric_dtype(frame[column]) and not pd.api.types.is_bool_dtype(frame[column])
        # The first column names the row: keep it whole, let the numbers' headers wrap.
        width = min(48, max([len(str(v)) for v in frame[column]] + [len(header)])) if i == 0 else None
        table.add_column(header, justify="right" if numeric else "left", min_width=width)
    for row in records(frame[list(columns)]):
        # Cells hold names from outside (API names an agent made up, specs): plain text.
        table.add_row(
            *[plain(formats[c](v) if c in formats and v is not None else ("" if v is None else str(v)))
              for c, v in row.items()]
        )  # fmt: skip
    return table


# -- human output ---------------------------------------------------------------------------


def print_metrics(console: Console, report: MetricsReport) -> None:
    if report.pass_k:
        table = Table(title="Pass^k (τ²-bench: the database equals the gold one and the required outputs were said)")
        for column in ("environment", "k", "Pass^k", "tasks", "trials"):
            table.add_column(column, justify="left" if column == "environment" else "right")
        for row in report.pass_k:
            table.add_row(plain(row["env"]), str(row["k"]), _num(row["pass_k"]), str(row["tasks"]), str(row["trials"]))
        console.print(table)
    toolwoz_only = not report.envs or report.envs == ["toolwoz"]
    summary = Table(title="ToolWOZ metrics (section 4.1)" if toolwoz_only else
                    "Average Reward and 100% Success Rate (plain τ² runs: τ²'s reward; JOSH trees: goal calls reached)")
    for column in ("conversations", "Average Reward", "100% Success Rate", "goal calls completed"):
        summary.add_column(column, justify="right")
    summary.add_row(
        str(report.n), _num(report.average_reward), _pct(report.success_rate),
        f"{report.goals_completed}/{report.goal_calls} ({_pct(report.goal_completion_rate)})",
    )  # fmt: skip
    console.print(summary)
    if report.scorings and report.scorings != ["toolwoz"]:
        note = ("runs with different reward semantics are mixed here; pick one with --scoring"
                if len(report.scorings) > 1 else f"scoring: {report.scorings[0]}")
        console.print(plain(note))
    if report.not_done:
        left = ", ".join(f"{count} {status}" for status, count in sorted(report.not_done.items()))
        console.print(plain(f"not counted: {left}"))
    rate = {"average_reward": _num, "success_rate": _pct, "completion_rate": _pct,
            "domain_success_rate": _pct}  # fmt: skip
    if report.per_domain:
        headers = {"domain": "domain", "conversations": "convs", "average_reward": "avg reward",
                   "success_rate": "success", "goal_calls": "goal calls", "completed": "completed",
                   "completion_rate": "completion", "domain_success_rate": "domain success"}  # fmt: skip
        console.print(_table("Per domain", pd.DataFrame(report.per_domain), headers, rate))
    if report.per_api:
        headers = {"api": "goal API", "goal_calls": "goal calls", "completed": "completed",
                   "completion_rate": "completion", "never_attempted": "never tried",
                   "missing_parameter": "missing param", "wrong_value": "wrong value",
                   "wrong_entity": "wrong entity"}  # fmt: skip
        console.print(_table("Per goal API (how missed goals were missed)", pd.DataFrame(report.per_api),
                             headers, rate))  # fmt: skip
    if report.bootstrap:
        frame = pd.DataFrame(report.bootstrap).pivot(index="n", columns="metric", values="std")
        four = lambda v: f"{v:.4f}"  # noqa: E731
        console.print(
            _table(
                f"Bootstrap std vs number of conversations ({report.bootstrap[0]['resamples']} resamples)",
                frame.reset_index(),
                {"n": "conversations", "average_reward": "std Average Reward", "success_rate": "std Success Rate"},
                {"average_reward": four, "success_rate": four},
            )
        )


def print_errors(console: Console, report: ErrorReport) -> None:
    rates = report.rates
    table = Table(title=f"API errors (section 5.2, Table 4a; {report.nodes} nodes)")
    for column in ("conversations", "Bad API Use", "Incorrect API Format", "calls", "rejected calls"):
        table.add_column(column, justify="right")
    table.add_row(
        str(rates.n),
        f"{_pct(rates.bad_api_use)} ({rates.conversations_with_bad_api_use})",
        f"{_pct(rates.incorrect_format)} ({rates.conversations_with_incorrect_format})",
        str(rates.calls),
        str(rates.failed_calls),
    )
    console.print(table)
    kinds = ", ".join(f"{kind} {count}" for kind, count in rates.error_kinds.items())
    console.print(plain(f"rejected calls by kind: {kinds}; unreadable generations: {rates.format_error_generations}"))
    if report.per_api:
        headers = {"api": "API", "calls": "calls", "failed_calls": "rejected",
                   "unknown_parameter": "unknown param", "invalid_value": "invalid value",
                   "bad_format": "bad format", "goal_calls": "goal calls",
                   "missed_attempted": "missed (tried)", "never_attempted": "never tried",
                   "errors": "errors"}  # fmt: skip
        console.print(_table("Errors per API (Figure 4c): errors = rejected + missed (tried)",
                             pd.DataFrame(report.per_api), headers))  # fmt: skip
    if report.parameter_errors:
        console.print(
            _table(
                f"Most frequent parameter errors (Figure 5; {report.parameter_errors_total} in all)",
                pd.DataFrame(report.parameter_errors),
                {"label": "parameter error", "count": "count", "percent": "share",
                 "most_common_got": "most common value given"},
                {"percent": lambda v: f"{v:.1f}%"},
            )
        )
    else:
        console.print("no parameter errors on attempted goal calls")


def print_evaluation(console: Console, evaluation: Evaluation) -> None:
    print_metrics(console, evaluation.metrics)
    print_errors(console, evaluation.errors)
    console.print(plain(
        f"run {evaluation.run_id} in {evaluation.db_path}: {evaluation.played} conversations in "
        f"{evaluation.seconds:.1f} s" + (f", {evaluation.failed} failed" if evaluation.failed else "")
    ))


def report_comparison_warnings(comparison: Comparison) -> None:
    """What a comparison left out or compared anyway, as warnings on stderr."""
    for text in comparison.warnings:
        warn(f"{text} (compared anyway: --force)")
    for side, scenarios in (("base", comparison.only_base), ("trained", comparison.only_trained)):
        if scenarios:
            shown = ", ".join(scenarios[:5]) + (f" and {len(scenarios) - 5} more" if len(scenarios) > 5 else "")
            warn(f"{len(scenarios)} scenarios finished by the {side} run only, left out of the pairs: {shown}")


def _pairs_per_scenario(comparison: Comparison) -> str:
    """`223 scenarios in 3 pairs each`, or the spread when the counts differ."""
    parts = [f"{count} in {k} pair{'s' if k > 1 else ''}" for k, count in sorted(comparison.pairs_per_scenario.items())]
    return "; ".join(parts)


def print_comparison(console: Console, comparison: Comparison) -> None:
    """The table of `josh compare` (and `josh compare-agents`): warnings first, then the means
    with their intervals; pooled pairs add how they were pooled and each pair's own means."""
    report_comparison_warnings(comparison)
    trials = f", each the mean of {comparison.trials} trials" if comparison.trials > 1 else ""
    if comparison.pairs > 1:
        title = (f"{comparison.n} scenarios pooled over {comparison.pairs} pairs of runs (scenarios: "
                 f"{_pairs_per_scenario(comparison)}; a scenario in several pairs is the mean of them)"
                 f"{trials}: means with bootstrap 95% intervals")
    else:
        title = f"{comparison.n} paired scenarios{trials}: means with bootstrap 95% intervals"
    table = Table(title=title)
    for header in ("metric", "base", "trained", "trained - base"):
        table.add_column(header, justify="left" if header == "metric" else "right")
    for m in comparison.metrics:
        table.add_row(m.metric, *(f"{i.mean:.3f} [{i.low:.3f}, {i.high:.3f}]"
                                  for i in (m.base, m.trained, m.difference)))
    console.print(table)
    if comparison.per_pair:
        pairs = Table(title="Each pair on its own (means; the spread across pairs, e.g. pipeline seeds)")
        for header in ("database", "base run", "trained run", "seed", "scenarios", "reward base", "reward trained",
                       "reward diff", "success diff"):
            pairs.add_column(header, justify="left" if header in ("database", "base run", "trained run") else "right")
        for pair in comparison.per_pair:
            reward, success = pair.means["reward"], pair.means["success"]
            pairs.add_row(plain(pair.db), plain(pair.base_run), plain(pair.trained_run), str(pair.seed), str(pair.n),
                          f"{reward['base']:.3f}", f"{reward['trained']:.3f}", f"{reward['difference']:+.3f}",
                          f"{success['difference']:+.3f}")
        console.print(pairs)
        spread = [pair.means["reward"]["difference"] for pair in comparison.per_pair]
        console.print(plain(f"reward difference across pairs: {min(spread):+.3f} to {max(spread):+.3f} "
                            f"(range {max(spread) - min(spread):.3f})"))


# -- commands ---------------------------------------------------------------------------------


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_(
        env: str = run_flag("env"),
        scoring: Optional[str] = run_flag("scoring"),
        split: Optional[str] = run_flag("split", help="Scenario split (default: the environment's evaluation "
                                        "split; `josh envs`)."),
        limit: Optional[int] = run_flag("limit"),
        scenario_file: Optional[Path] = run_flag("scenario_file", exists=True, dir_okay=False),
        agent: str = run_flag("agent"),
        user: Optional[str] = run_flag("user"),
        style: str = run_flag("style"),
        temperature: Optional[float] = run_flag("temperature"),
        max_actions: Optional[int] = run_flag("max_actions_per_turn"),
        base_url: Optional[str] = run_flag("base_url"),
        decoding: str = run_flag("decoding"),
        max_turns: int = run_flag("max_turns"),
        seed: int = run_flag("seed"),
        trials: int = run_flag("trials"),
        concurrency: int = run_flag("concurrency"),
        db: Optional[Path] = typer.Option(None, help="DuckDB file (default JOSH_DB or ./josh.duckdb)."),
        resume: Optional[str] = typer.Option(None, "--resume", help="Finish the evaluation run with this id."),
        resamples: int = typer.Option(DEFAULT_RESAMPLES, min=1, max=MAX_RESAMPLES,
                                      help="Bootstrap resamples per sample size."),
        as_json: bool = typer.Option(False, "--json", help="Print the evaluation as JSON."),
        ray: Optional[str] = run_flag("ray", metavar="[ADDRESS]"),
        ray_workers: Optional[int] = run_flag("ray_workers"),
        ray_endpoints: Optional[str] = run_flag("ray_endpoints"),
    ) -> None:
        """Evaluate an agent: plain rollouts over a split, stored as a run, with its metrics."""
        db_path = db or default_db_path()
        # Progress goes to stderr so that --json leaves stdout to the JSON.
        console = Console(stderr=True, highlight=False)
        from josh_core.cli.rollout_cmd import (
            ProgressObserver,
            config_error_text,
            interrupted,
            load_scenarios_or_fail,
            ray_options_or_fail,
        )
        from josh_core.distributed import RayUnavailable

        ray_options = ray_options_or_fail(ray, ray_workers, ray_endpoints)

        columns = (TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn())
        observer = None
        try:
            with Progress(*columns, console=console, transient=as_json) as progress:
                observer = ProgressObserver(progress, console)
                try:
                    if resume is not None:
                        evaluation = resume_evaluation(db_path, resume, observer=observer, resamples=resamples,
                                                       base_url=base_url, ray=ray_options)
                    else:
                        from josh_core.envs import UnknownEnvironment, get_env

                        try:
                            environment = get_env(env)
                        except UnknownEnvironment as error:
                            _fail(f"--env: {error}")
                        split = split or environment.eval_split
                        problem = run_option("trials").problem(trials)
                        if problem:
                            _fail(problem)
                        try:
                            constrained, grounded = decoding_flags(decoding)
                        except ValueError as error:
                            _fail(f"--decoding: {error}")
                        try:
                            config = RolloutConfig(
                                env=environment.name, scoring=scoring, josh=False, agent=agent, user=user, style=style,
                                temperature=temperature,
                                constrained=constrained, grounded=grounded,
                                max_actions_per_turn=max_actions, base_url=base_url, max_turns=max_turns,
                                seed=seed, concurrency=concurrency,
                                split=None if scenario_file else split, limit=limit,
                                scenario_file=str(scenario_file) if scenario_file else None,
                            )  # fmt: skip
                        except ValidationError as error:
                            _fail(config_error_text(error))
                        scenarios = load_scenarios_or_fail(split, limit, scenario_file, config.env)
                        if trials > 1:
                            if environment.metrics != "pass^k":
                                _fail(f"--trials: {environment.name} is measured by Average Reward, not Pass^k; "
                                      "evaluate with --trials 1")
                            scenarios = [s.model_copy(update={"trial": t}) for t in range(trials) for s in scenarios]
                        evaluation = evaluate(db_path, scenarios, config, observer=observer, resamples=resamples,
                                              ray=ray_options)
                except KeyError as error:
                    _fail(str(error.args[0]) if error.args else str(error))
                except (FileNotFoundError, ValueError, RunBusy, DatabaseError, RayUnavailable) as error:
                    _fail(str(error))
        except (KeyboardInterrupt, RunInterrupted) as interrupt:
            interrupted(interrupt, observer.run_id if observer else None, db_path)
        if as_json:
            _print_json(evaluation.model_dump(mode="json"))
        else:
            print_evaluation(Console(highlight=False), evaluation)
        if evaluation.stopped:
            _fail(f"run {evaluation.run_id} stopped: {evaluation.stopped}: josh eval --resume {evaluation.run_id} "
                  f"--db {db_path}")
        if evaluation.failed:
            raise typer.Exit(1)

    @app.command("metrics")
    def metrics(
        db: Optional[Path] = typer.Option(None, help="DuckDB file (default JOSH_DB or ./josh.duckdb)."),
        run: Optional[str] = typer.Option(None, help="Only this run (default: every conversation)."),
        bootstrap_sizes: Optional[str] = typer.Option(
            None, "--bootstrap-sizes", help="Comma-separated sample sizes (default: a grid up to n)."
        ),
        resamples: int = typer.Option(DEFAULT_RESAMPLES, min=1, max=MAX_RESAMPLES,
                                      help="Bootstrap resamples per sample size."),
        seed: int = typer.Option(0, help="Bootstrap seed."),
        scoring: Optional[str] = typer.Option(
            None, "--scoring", help="Only runs played with this reward semantics (ToolWOZ: toolwoz | reference)."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Average Reward, 100% Success Rate, per-domain / per-API rates and bootstrap std."""
        if scoring is not None:
            from josh_core.envs import get_env, names

            modes = list(dict.fromkeys(mode for name in names() for mode in get_env(name).scoring_modes))
            if scoring not in modes:
                _fail(f"--scoring: no scoring {scoring!r}; use one of {', '.join(modes)}")
        database = _existing_db(db)
        try:
            report = metrics_report(
                database, run, bootstrap_sizes=_sizes(bootstrap_sizes), resamples=resamples, seed=seed,
                scoring=scoring,
            )
        except KeyError as error:
            _fail(str(error.args[0]) if error.args else str(error))
        except (ValueError, DatabaseError) as error:
            _fail(str(error))
        if as_json:
            _print_json(report.model_dump(mode="json"))
        else:
            print_metrics(Console(highlight=False), report)

    @app.command("errors")
    def errors(
        db: Optional[Path] = typer.Option(None, help="DuckDB file (default JOSH_DB or ./josh.duckdb)."),
        run: Optional[str] = typer.Option(None, help="Only this run (default: every conversation)."),
        top: int = typer.Option(DEFAULT_TOP, help="How many parameter errors to list (0: all)."),
        nodes: Nodes = typer.Option(
            Nodes.ideal, help="ideal: the ideal path of JOSH trees; all: every agent turn of the tree."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Error analysis: bad API use, incorrect format, errors per API, parameter errors."""
        database = _existing_db(db)
        try:
            report = error_report(database, run, nodes=nodes.value, top=top or None)
        except KeyError as error:
            _fail(str(error.args[0]) if error.args else str(error))
        except (ValueError, DatabaseError) as error:
            _fail(str(error))
        if as_json:
            _print_json(report.model_dump(mode="json"))
        else:
            print_errors(Console(highlight=False), report)

    @app.command("leaderboard")
    def leaderboard(
        db: Optional[Path] = typer.Option(None, help="DuckDB file (default JOSH_DB or ./josh.duckdb)."),
        include_josh: bool = typer.Option(False, "--josh", help="List JOSH runs too."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Compare the evaluations stored in a database, best Average Reward first."""
        database = _existing_db(db)
        try:
            frame = leaderboard_frame(database, kinds=("plain", "josh") if include_josh else ("plain",))
        except DatabaseError as error:
            _fail(str(error))
        if as_json:
            _print_json(records(frame))
            return
        if frame.empty:
            Console(highlight=False).print("no evaluations stored")
            return
        headers = {"run_id": "run", "kind": "kind", "agent_spec": "agent", "decoding": "decoding", "user_spec": "user",
                   "seed": "seed", "split": "split", "n": "n", "average_reward": "avg reward",
                   "success_rate": "success", "bad_api_use": "bad API use",
                   "incorrect_format": "bad format"}  # fmt: skip
        shown = frame.assign(split=frame["split"].map(lambda s: Path(s).name if s else s))
        Console(highlight=False).print(
            _table("Leaderboard (plain rollouts)" if not include_josh else "Leaderboard", shown, headers,
                   {"average_reward": _num, "success_rate": _pct, "bad_api_use": _pct,
                    "incorrect_format": _pct})  # fmt: skip
        )

    @app.command("compare")
    def compare(
        base_run: str = typer.Argument(..., help="Run of the base agent."),
        trained_run: str = typer.Argument(..., help="Run of the trained agent (same scenarios and seeds)."),
        db: Optional[Path] = typer.Option(None, help="DuckDB file (default JOSH_DB or ./josh.duckdb)."),
        pool: Optional[list[str]] = typer.Option(
            None, "--pool", metavar="DB:BASE_RUN:TRAINED_RUN",
            help="Pool another pair of runs into the comparison (another pipeline seed on the same scenarios, or a "
            "replication on other scenarios); a scenario in several pairs counts once, with the mean over them; "
            "repeatable.",
        ),
        resamples: int = typer.Option(2000, min=100, max=100_000, help="Bootstrap resamples."),
        seed: int = typer.Option(0, help="Bootstrap seed."),
        force: bool = typer.Option(
            False, "--force",
            help="Compare runs played with other settings (seed, user, turn cap, scoring, kind, trials) anyway; "
            "the differences are printed.",
        ),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Base vs trained agent, paired by scenario: means with bootstrap 95% intervals and the
        interval of the difference (the self-training loop's comparison, for any two runs)."""
        from josh_core.analysis.compare import compare_pooled

        pairs = [(_existing_db(db), base_run, trained_run)]
        for text in pool or []:
            path, sep, runs = text.rpartition(":")
            path, sep2, base = path.rpartition(":")
            if not (sep and sep2 and path and base and runs):
                _fail(f"--pool wants DB:BASE_RUN:TRAINED_RUN, got {text!r}")
            pairs.append((_existing_db(Path(path)), base, runs))
        try:
            comparison = compare_pooled(pairs, resamples=resamples, seed=seed, force=force)
        except KeyError as error:
            _fail(str(error.args[0]) if error.args else str(error))
        except (ValueError, DatabaseError) as error:
            _fail(str(error))
        if as_json:
            report_comparison_warnings(comparison)
            _print_json(comparison.model_dump(mode="json"))
            return
        print_comparison(Console(highlight=False), comparison)

    @app.command("compare-agents")
    def compare_agents(
        base_agent: str = typer.Argument(..., help="Agent SPEC of the base agent (e.g. embedded@shipped:warmstart)."),
        trained_agent: str = typer.Argument(..., help="Agent SPEC of the trained agent."),
        env: str = run_flag("env"),
        scoring: Optional[str] = run_flag("scoring"),
        split: Optional[str] = run_flag("split", help="Scenario split (default: the environment's evaluation "
                                        "split; `josh envs`)."),
        limit: Optional[int] = run_flag("limit", help="Only the first N scenarios (after --single-domain)."),
        single_domain: bool = typer.Option(
            False, "--single-domain", help="Only scenarios with one domain, as `josh selftrain` evaluates "
            "(its default); --limit then counts those.",
        ),
        scenario_file: Optional[Path] = run_flag("scenario_file", exists=True, dir_okay=False),
        user: Optional[str] = run_flag("user"),
        style: str = run_flag("style", help="Agent style of both agents: auto (compact for the embedded model, "
                              "react otherwise)."),
        temperature: Optional[float] = run_flag("temperature", help="Agent sampling temperature (both agents)."),
        decoding: str = run_flag("decoding", help="Agent actions of both agents: auto (grounded for local models, "
                                 "free for API models)."),
        max_turns: int = run_flag("max_turns"),
        seed: int = run_flag("seed", help="Run seed (the same for both agents: same scenarios, same seeds)."),
        concurrency: int = run_flag("concurrency"),
        db: Optional[Path] = typer.Option(None, help="DuckDB file (default JOSH_DB or ./josh.duckdb)."),
        resamples: int = typer.Option(2000, min=100, max=100_000, help="Bootstrap resamples."),
        bootstrap_seed: int = typer.Option(0, "--bootstrap-seed", help="Bootstrap seed."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON (the runs and the comparison)."),
    ) -> None:
        """Play two agents as plain rollouts on the same scenarios and seeds, then compare them
        as `josh compare` does. Each agent's run is stored; rerunning the same command reuses the
        finished conversations and plays only what is left."""
        from josh_core.cli.rollout_cmd import ProgressObserver, config_error_text, interrupted, load_scenarios_or_fail
        from josh_core.envs import UnknownEnvironment, get_env
        from josh_core.evaluate import evaluate_agents

        db_path = db or default_db_path()
        console = Console(stderr=True, highlight=False)
        try:
            environment = get_env(env)
        except UnknownEnvironment as error:
            _fail(f"--env: {error}")
        split = split or environment.eval_split
        try:
            constrained, grounded = decoding_flags(decoding)
        except ValueError as error:
            _fail(f"--decoding: {error}")
        configs = []
        for agent in (base_agent, trained_agent):
            try:
                configs.append(RolloutConfig(
                    env=environment.name, scoring=scoring, josh=False, agent=agent, user=user, style=style,
                    temperature=temperature, constrained=constrained, grounded=grounded, max_turns=max_turns,
                    seed=seed, concurrency=concurrency, split=None if scenario_file else split, limit=limit,
                    scenario_file=str(scenario_file) if scenario_file else None,
                ))  # fmt: skip
            except ValidationError as error:
                _fail(config_error_text(error))
        scenarios = load_scenarios_or_fail(split, None if single_domain else limit, scenario_file, environment.name)
        if single_domain:
            scenarios = [s for s in scenarios if len(s.domains) == 1][: limit if limit is not None else None]
        columns = (TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn())
        observer = None
        try:
            with Progress(*columns, console=console, transient=as_json) as progress:
                observer = ProgressObserver(progress, console)
                try:
                    result = evaluate_agents(db_path, scenarios, configs[0], configs[1], observer=observer,
                                             resamples=resamples, bootstrap_seed=bootstrap_seed)
                except KeyError as error:
                    _fail(str(error.args[0]) if error.args else str(error))
                except (FileNotFoundError, ValueError, RunBusy, DatabaseError) as error:
                    _fail(str(error))
        except (KeyboardInterrupt, RunInterrupted) as interrupt:
            run_id = observer.run_id if observer else None
            if run_id:  # the same command resumes it
                error_console().print(plain(f"interrupted: rerun the same command to go on (run {run_id} keeps "
                                            "its finished conversations)"))
            interrupted(interrupt, run_id, db_path)
        if as_json:
            report_comparison_warnings(result.comparison)
            _print_json(result.model_dump(mode="json"))
        else:
            out = Console(highlight=False)
            for run in (result.base, result.trained):
                out.print(plain(f"{run.agent}: run {run.run_id}, {run.played} conversations played in "
                                f"{run.seconds:.1f} s, {run.reused} reused" +
                                (f", {run.failed} not finished" if run.failed else "")))
            print_comparison(out, result.comparison)
            out.print(plain(f"the same comparison from the stored runs: josh compare {result.base.run_id} "
                            f"{result.trained.run_id} --db {db_path}"))
        if result.base.failed or result.trained.failed:
            raise typer.Exit(1)
