"""The `josh` command. Each `*_cmd.py` module beside this file adds its commands through
`register(app)`; the commands are thin wrappers over the same functions the app calls."""

from __future__ import annotations

import importlib
import pkgutil

import typer

app = typer.Typer(
    help="JOSH Workbench: ToolWOZ, JOSH rollouts, training data, training and evaluation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _register_commands() -> None:
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module.name.endswith("_cmd"):
            importlib.import_module(f"{__name__}.{module.name}").register(app)


_register_commands()


def main() -> None:
    app()
