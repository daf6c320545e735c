"""`josh envs`: the registered environments (docs/environments.md)."""

from __future__ import annotations

import json

import typer


def register(app: typer.Typer) -> None:
    @app.command("envs")
    def envs(
        as_json: bool = typer.Option(False, "--json", help="Print each environment's description as JSON."),
        verbose: bool = typer.Option(False, "--verbose", "-v", help="Name, splits and description per line."),
    ) -> None:
        """List the registered environments, one per line (`--env NAME` picks one)."""
        from josh_core.envs import get_env, names

        if as_json:
            typer.echo(json.dumps([get_env(name).describe() for name in names()], indent=2, ensure_ascii=False))
            return
        for name in names():
            if not verbose:
                typer.echo(name)
                continue
            env = get_env(name)
            typer.echo(f"{name:<14} splits {'/'.join(env.splits):<32} {env.description}")
