"""Command-line flags of the run options (josh_core/rollout/options.py): each flag's default,
help and range come from its option, so `josh rollout`, `josh eval` and `josh selftrain` cannot
drift from each other, from the app's Launch page or from the configuration that checks them.

The flags do not check the range themselves: the configuration does (RolloutConfig,
SelftrainConfig), and names every flag out of range in one message."""

from __future__ import annotations

from typing import Any

import typer
from rich.markup import escape

from josh_core.rollout.options import RUN_OPTIONS

_SAME: Any = object()


def run_flag(name: str, *, default: Any = _SAME, help: str | None = None, flag: str | None = None,
             **kwargs: Any) -> Any:
    """The typer option of run option `name`; `default` and `flag` only for a command that
    declares its own (selftrain's settings, `--base` for the starting agent), `help` only where
    the command gives the option another meaning."""
    option = RUN_OPTIONS[name]
    # Help is rendered as Rich markup: the SPECs' `[@ADAPTER_DIR]` and the ranges stay text.
    return typer.Option(option.default if default is _SAME else default, flag or option.cli_flag,
                        help=escape(option.help_text(help)), **kwargs)  # fmt: skip
