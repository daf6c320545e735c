"""`josh adapters`: the trained LoRA adapters shipped in the repository (`adapters/`).

    josh adapters ship TRAINING_OUT --name NAME   copy a finished training's adapter in (float16),
                                                   with its manifest; refuses past 20 MB in all
    josh adapters list                            what is shipped, with the manifests' numbers
    josh adapters verify [NAME ...]               every file against its manifest

Thin wrappers over josh_core/train/shipping.py. A shipped adapter plays as
`--agent embedded@shipped:NAME` from any working directory.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from josh_core.console import fail, plain, warn

adapters_app = typer.Typer(help="Our trained LoRA adapters shipped in the repository (adapters/): ship, list, verify.",
                           no_args_is_help=True)


def _metric_values(items: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` pairs; a value that reads as a number is kept as one."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"--metric wants KEY=VALUE, got {item!r}")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        out[key.strip()] = number if math.isfinite(number) else value
    return out


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


@adapters_app.command("ship")
def ship(
    training_out: Path = typer.Argument(..., help="A training's output folder (what `josh train --out` or "
                                        "`josh selftrain` wrote: the adapter and josh_training.json)."),
    name: str = typer.Option(..., "--name", help="The shipped adapter's name (a folder name): play it as "
                             "embedded@shipped:NAME."),
    command: Optional[str] = typer.Option(None, "--command", help="The command that trained it, when the "
                                          "training's record lacks it (or to replace it)."),
    code_revision: Optional[str] = typer.Option(None, "--code-revision", help="The code revision that trained it, "
                                                "when the training's record lacks it."),
    metric: Optional[list[str]] = typer.Option(None, "--metric", metavar="KEY=VALUE",
                                               help="A measured result to keep in the manifest; repeatable."),
    note: Optional[str] = typer.Option(None, "--note", help="One line on what the adapter is."),
    replace: bool = typer.Option(False, "--replace", help="Ship over an adapter of the same name."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
) -> None:
    """Copy a trained adapter into the repository's adapters/ folder (weights as float16), with
    its manifest; refuses to take the folder past 20 MB."""
    from josh_core.train.shipping import ShippingError, ship_adapter

    try:
        manifest = ship_adapter(training_out, name, command=command, code_revision=code_revision,
                                metrics=_metric_values(metric or []), note=note, replace=replace)
    except ShippingError as error:
        fail(str(error))
    if as_json:
        typer.echo(manifest.model_dump_json(indent=2))
        return
    for missing, flag in ((manifest.command, "--command"), (manifest.code_revision, "--code-revision")):
        if not missing:
            warn(f"the training's record has no {flag[2:]}; give it with {flag} (ship again with --replace)")
    Console(highlight=False).print(plain(
        f"shipped {manifest.name}: {_mb(manifest.bytes)} ({manifest.trained_dtype} -> float16, largest change "
        f"{manifest.float16_max_abs_error:.2g}); play it as --agent {manifest.spec}"))


@adapters_app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The shipped adapters, with their manifests' numbers."""
    from josh_core.adapter_folder import shipped_adapters_dir
    from josh_core.train.shipping import list_shipped

    entries = list_shipped()
    if as_json:
        typer.echo(json.dumps([e.model_dump(mode="json") for e in entries], indent=2))
        return
    console = Console(highlight=False)
    if not entries:
        console.print(plain(f"no shipped adapters in {shipped_adapters_dir()}"))
        return
    table = Table(title=f"Shipped adapters ({shipped_adapters_dir()})")
    for header in ("name", "kind", "base", "data rows", "steps", "final loss", "size", "metrics", "play as"):
        table.add_column(header, justify="right" if header in ("data rows", "steps", "final loss", "size") else "left")
    for entry in entries:
        m = entry.manifest
        if m is None:
            table.add_row(plain(entry.name), "", "", "", "", "", _mb(entry.bytes), plain(entry.problem or ""), "")
            continue
        loss = m.training.get("final_loss")
        metrics = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in m.metrics.items())
        table.add_row(plain(m.name), plain(m.kind or ""), plain(m.base.get("spec", "")), str(m.data.get("rows") or ""),
                      str(m.training.get("steps") or ""), f"{loss:.3f}" if isinstance(loss, (int, float)) else "",
                      _mb(entry.bytes), plain(metrics), plain(m.spec))
    console.print(table)


@adapters_app.command("verify")
def verify(
    names: Optional[list[str]] = typer.Argument(None, help="Only these adapters (default: all)."),
    base: bool = typer.Option(True, "--base/--no-base", help="Also compare the base model's weight files here "
                              "with the manifest's hashes (never fetched; a difference is a warning)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Check every shipped file against its manifest (sha256, size, nothing unlisted) and the
    20 MB limit; exit 1 on any mismatch."""
    from josh_core.train.shipping import verify_shipped

    report = verify_shipped(names=names or None, check_base=base)
    if as_json:
        typer.echo(json.dumps({**report.model_dump(mode="json"), "ok": report.ok}, indent=2))
    else:
        console = Console(highlight=False)
        for result in report.adapters:
            status = "ok" if result.ok else "FAILED: " + "; ".join(result.problems)
            console.print(plain(f"{result.name}: {status} (base model: {result.base})"))
            if result.base == "differs":
                warn(f"{result.name}: the base model here is not the one it was trained on (its weight files' "
                     "sha256 differ): outputs may differ from the recorded ones")
        for problem in report.problems:
            console.print(plain(f"FAILED: {problem}"))
        console.print(plain(f"{len(report.adapters)} adapters, {_mb(report.total_bytes)} of "
                            f"{report.limit_bytes / 1e6:g} MB"))
    if not report.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(adapters_app, name="adapters")
