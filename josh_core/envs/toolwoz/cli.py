"""`josh toolwoz list | show | score | schema | stats`.

Added to the `josh` command by `ToolWOZEnvironment.register_commands`.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from josh_core.console import fail, plain, styled
from josh_core.envs.toolwoz.data import DataUnavailableError, load_goal_model
from josh_core.envs.toolwoz.env import score_calls
from josh_core.envs.toolwoz.reference_scoring import DEFAULT_SCORING, SCORING_MODES
from josh_core.envs.toolwoz.scenarios import get_scenario, load_scenario_file, load_split
from josh_core.envs.toolwoz.stats import SplitStats, compute_stats, expected_stats
from josh_core.envs.toolwoz.store import SPLITS
from josh_core.envs.toolwoz.types import DOMAINS, Scenario

SplitChoice = Enum("SplitChoice", {s.replace("-", "_"): s for s in SPLITS}, type=str)
SourceChoice = Enum("SourceChoice", {"synth": "synth", "official": "official"}, type=str)
ScoringChoice = Enum("ScoringChoice", {m: m for m in SCORING_MODES}, type=str)


def _source(source: Optional[SourceChoice]) -> Optional[str]:
    return source.value if source is not None else None


def _print_json(value: object) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _read_scenario(spec: str) -> Scenario:
    path = Path(spec)
    if path.exists():
        loaded = load_scenario_file(path)
        if isinstance(loaded, list):
            if len(loaded) != 1:
                fail(f"{spec} holds {len(loaded)} scenarios; give a file with one")
            loaded = loaded[0]
        return loaded
    try:
        return get_scenario(spec)
    except KeyError:
        fail(f"{spec} is neither a scenario file nor a known scenario id")
        raise  # unreachable; keeps type checkers content


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _stats_tables(stats: list[SplitStats], expected) -> list[Table]:
    overview = Table(title="ToolWOZ splits")
    for column in ("split", "scenarios", "single-domain", "multi-domain", "goals/scenario", "fail_info", "fail_book"):
        overview.add_column(column, justify="right" if column != "split" else "left")
    for s in stats:
        overview.add_row(
            s.split, str(s.scenarios), str(s.single_domain), str(s.multi_domain),
            f"{s.mean_goals:.2f}", _pct(s.fail_info_share), _pct(s.fail_book_share),
        )  # fmt: skip

    combos = Table(title="Domain combinations (share of scenarios)")
    combos.add_column("combination")
    for s in stats:
        combos.add_column(s.split, justify="right")
    combos.add_column("goal model", justify="right")
    for key, p in expected.combinations.items():
        combos.add_row(plain(key), *[_pct(s.combinations.get(key, 0) / max(s.scenarios, 1)) for s in stats], _pct(p))

    goals = Table(title="Goal calls per scenario")
    goals.add_column("goal calls")
    for s in stats:
        goals.add_column(s.split, justify="right")
    counts = sorted({int(k) for s in stats for k in s.goals_per_scenario})
    for n in counts:
        goals.add_row(str(n), *[str(s.goals_per_scenario.get(str(n), 0)) for s in stats])

    domains = Table(title="Per domain (all listed splits together; goal model in brackets)")
    for column in ("domain", "goals", "books", "by name", "fail_info", "fail_book (of bookings)"):
        domains.add_column(column, justify="right" if column != "domain" else "left")
    merged = stats[-1]
    for domain in DOMAINS:
        d = merged.domains[domain]
        domains.add_row(
            domain, str(d.goals),
            f"{_pct(d.book_share)} ({_pct(expected.book_share[domain])})",
            f"{_pct(d.name_share)} ({_pct(expected.name_share[domain])})",
            _pct(d.fail_info_share), _pct(d.fail_book_share),
        )  # fmt: skip
    return [overview, combos, goals, domains]


def register(app: typer.Typer) -> None:
    toolwoz = typer.Typer(help="ToolWOZ scenarios: list, show, score, schema, stats.", no_args_is_help=True)

    @toolwoz.command("list")
    def list_command(
        split: SplitChoice = typer.Option(SplitChoice.test, "--split", help="Which split."),
        limit: Optional[int] = typer.Option(None, "--limit", min=0, help="At most N scenarios."),
        source: Optional[SourceChoice] = typer.Option(None, "--source", help="synth (default) or official."),
    ) -> None:
        """Print scenario ids of a split, one per line."""
        try:
            scenarios = load_split(split.value, limit=limit, source=_source(source))
        except (DataUnavailableError, FileNotFoundError) as error:
            fail(str(error))
        typer.echo("\n".join(s.id for s in scenarios))

    @toolwoz.command("show")
    def show_command(
        scenario_id: str = typer.Argument(..., help="Scenario id, e.g. synth-test-0000."),
        as_json: bool = typer.Option(False, "--json", help="Print the scenario JSON."),
    ) -> None:
        """Show one scenario."""
        try:
            scenario = get_scenario(scenario_id)
        except KeyError as error:
            fail(str(error.args[0]))
        except DataUnavailableError as error:
            fail(str(error))
        if as_json:
            _print_json(scenario.model_dump(mode="json"))
            return
        console = Console()
        console.print(styled((scenario.id, "bold"), f"  ({scenario.source}; {', '.join(scenario.domains)})"))
        for sentence in scenario.instructions:
            console.print(plain(f"  {sentence}"), highlight=False)
        table = Table(title="Goal calls")
        table.add_column("id")
        table.add_column("parameters")
        for goal_id, call in zip(scenario.goal_call_ids(), scenario.goal_calls):
            table.add_row(plain(goal_id), plain(json.dumps(call.parameters, ensure_ascii=False)))
        console.print(table)

    @toolwoz.command("score")
    def score_command(
        scenario: str = typer.Option(..., "--scenario", help="Scenario JSON file (or a scenario id)."),
        calls: Path = typer.Option(..., "--calls", exists=True, dir_okay=False, help="JSON list of {name, parameters}."),
        scoring: ScoringChoice = typer.Option(
            DEFAULT_SCORING, "--scoring", help="toolwoz (ours) | reference (the original ToolWOZ code's rules)."
        ),
    ) -> None:
        """Execute a list of API calls against a scenario and print the reward JSON."""
        try:
            target = _read_scenario(scenario)
        except (ValueError, DataUnavailableError) as error:
            fail(f"--scenario {error}")
        try:
            raw = json.loads(calls.read_text())
        except RecursionError:
            fail(f"--calls {calls} is nested too deeply")
        except (ValueError, OSError) as error:
            fail(f"--calls {calls} is not JSON: {error}")
        if not isinstance(raw, list) or not all(isinstance(c, dict) and "name" in c for c in raw):
            fail(f"{calls} must hold a JSON list of {{\"name\": ..., \"parameters\": {{...}}}} objects")
        # A call with a name that is not a string or parameters that are not an object is
        # scored as what it is: a bad-format call.
        report = score_calls(target, raw, scoring=scoring.value)
        _print_json(report.model_dump(mode="json"))

    @toolwoz.command("schema")
    def schema_command() -> None:
        """Print the JSON Schema of a scenario file."""
        _print_json(Scenario.model_json_schema())

    @toolwoz.command("stats")
    def stats_command(
        split: Optional[SplitChoice] = typer.Option(None, "--split", help="One split (default: all)."),
        source: Optional[SourceChoice] = typer.Option(None, "--source", help="synth (default) or official."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    ) -> None:
        """Domain combinations, goals per scenario, fail_info / fail_book shares, per split."""
        names = [split.value] if split is not None else list(SPLITS)
        try:
            per_split = {name: load_split(name, source=_source(source)) for name in names}
            expected = expected_stats(load_goal_model())
        except (DataUnavailableError, FileNotFoundError) as error:
            fail(str(error))
        stats = [compute_stats(items, name) for name, items in per_split.items()]
        if len(names) > 1:  # official-test is inside test: "all" counts train + val + test
            everything = [s for name in ("train", "val", "test") for s in per_split.get(name, [])]
            stats.append(compute_stats(everything, "all"))
        if as_json:
            _print_json({"splits": {s.split: s.model_dump(mode="json") for s in stats}, "expected": expected.model_dump(mode="json")})
            return
        console = Console()
        for table in _stats_tables(stats, expected):
            console.print(table)

    app.add_typer(toolwoz, name="toolwoz")
