"""`josh ability`: the offline general-ability check of base vs trained agents (verifiable
instructions and held-out text likelihood; josh_core/ability, docs/evaluation.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from josh_core.console import fail, plain


def _interval(i, digits: int = 3, sign: bool = False) -> str:
    f = f"{{:{'+' if sign else ''}.{digits}f}}"
    return f"{f.format(i.mean)} [{f.format(i.low)}, {f.format(i.high)}]"


def register(app: typer.Typer) -> None:
    from josh_core.ability.run import DEFAULT_BATCH_SIZE, DEFAULT_MAX_NEW_TOKENS, DEFAULT_RESAMPLES

    @app.command("ability")
    def ability(
        agent: list[str] = typer.Option(..., "--agent", help="Agent SPEC (embedded[@ADAPTER] or hf:PATH[@ADAPTER]); "
                                        "repeat it: the first is the reference the others are compared with."),
        limit: Optional[int] = typer.Option(None, min=0, help="Only the first N instruction prompts (of about 100)."),
        passages: Optional[int] = typer.Option(None, "--passages", min=0,
                                               help="Only the first N text passages (of 30)."),
        max_new_tokens: int = typer.Option(DEFAULT_MAX_NEW_TOKENS, "--max-new-tokens", min=1, max=4096,
                                           help="Token cap of each greedy response."),
        batch_size: int = typer.Option(DEFAULT_BATCH_SIZE, "--batch-size", min=1, max=256,
                                       help="Prompts (or passages) per forward batch."),
        resamples: int = typer.Option(DEFAULT_RESAMPLES, min=100, max=100_000, help="Bootstrap resamples."),
        seed: int = typer.Option(0, help="Bootstrap seed."),
        out: Optional[Path] = typer.Option(None, "--out", dir_okay=False,
                                           help="Write the whole report (every response and passage score) as JSON."),
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON instead of the tables."),
    ) -> None:
        """General ability, offline and without a judge: verifiable-instruction pass rate (greedy,
        chat template) and held-out text NLL per agent, each against the first with paired
        bootstrap intervals."""
        from josh_core.ability import run_ability

        console = Console(stderr=True, highlight=False)
        columns = (TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn())
        tasks: dict[tuple[str, str], int] = {}
        with Progress(*columns, console=console, transient=True) as progress:
            def on_progress(spec: str, stage: str, done: int, total: int) -> None:
                key = (spec, stage)
                if key not in tasks:
                    tasks[key] = progress.add_task(f"{spec}: {stage}", total=total)
                progress.update(tasks[key], completed=done)

            try:
                report = run_ability(agent, limit=limit, passages_limit=passages, max_new_tokens=max_new_tokens,
                                     batch_size=batch_size, resamples=resamples, seed=seed, progress=on_progress)
            except (ValueError, OSError) as error:
                fail(" ".join(str(error).split()))
        text = report.model_dump_json(indent=2)
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text + "\n", encoding="utf-8")
        if as_json:
            typer.echo(text)
            return
        show = Console(highlight=False)
        settings = report.settings
        prompts = Table(title=f"Verifiable instructions: {settings['prompts']} prompts, greedy, at most "
                              f"{settings['max_new_tokens']} tokens; pass rate with bootstrap 95% intervals")
        for header in ("agent", "pass rate", "passed", "vs the first agent", "responses changed", "s / prompt"):
            prompts.add_column(header, justify="left" if header == "agent" else "right")
        likelihood = Table(title=f"Held-out text: {settings['passages']} passages, mean NLL per token (nats; lower: "
                                 "the text is more likely)")
        for header in ("agent", "NLL", "tokens", "vs the first agent"):
            likelihood.add_column(header, justify="left" if header == "agent" else "right")
        differences = {d.agent: d for d in report.differences}
        for result in report.agents:
            d = differences.get(result.agent)
            prompts.add_row(plain(result.agent), _interval(result.pass_rate), f"{result.passed}/{result.prompts}",
                            _interval(d.pass_rate, sign=True) if d else "", str(d.changed_responses) if d else "",
                            f"{result.seconds_per_prompt:.2f}")
            likelihood.add_row(plain(result.agent), _interval(result.nll), str(result.tokens_scored),
                               _interval(d.nll, sign=True) if d else "")
        show.print(prompts)
        kinds = sorted({k for r in report.agents for k in r.per_kind})
        if kinds:
            per_kind = Table(title="Checks passed per kind")
            per_kind.add_column("check")
            for result in report.agents:
                per_kind.add_column(plain(result.agent), justify="right")
            for kind in kinds:
                per_kind.add_row(kind, *(f"{r.per_kind.get(kind, [0, 0])[0]}/{r.per_kind.get(kind, [0, 0])[1]}"
                                         for r in report.agents))
            show.print(per_kind)
        show.print(likelihood)
        if out is not None:
            show.print(plain(f"report (every response): {out}"))
