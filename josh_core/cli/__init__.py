"""The `josh` command. Each `*_cmd.py` module beside this file adds its commands through
`register(app)`, and each registered environment its own (`Environment.register_commands`);
the commands are thin wrappers over the same functions the app calls."""

from __future__ import annotations

import importlib
import pkgutil

import typer

from josh_core.envs import get_env
from josh_core.envs import names as env_names

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
    for name in env_names():  # an environment's own commands (`josh toolwoz ...`)
        get_env(name).register_commands(app)


_register_commands()


# Options whose value may be left out: `--ray` alone plays on a Ray instance started here. The
# command-line parser wants a value after every option, so a bare one gets its default here.
OPTIONAL_VALUES = {"--ray": "local"}


def with_optional_values(args: list[str]) -> list[str]:
    """`args` with the default value after each bare option of OPTIONAL_VALUES (one that ends
    the line or is followed by another option)."""
    out: list[str] = []
    for i, arg in enumerate(args):
        out.append(arg)
        if arg == "--":
            out.extend(args[i + 1 :])
            break
        if arg in OPTIONAL_VALUES and (i + 1 == len(args) or args[i + 1].startswith("-")):
            out.append(OPTIONAL_VALUES[arg])
    return out


def main() -> None:
    import sys

    app(args=with_optional_values(sys.argv[1:]))
