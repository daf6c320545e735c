"""Printing for the `josh` commands: text that comes from outside is never Rich markup.

It lives below every layer (not in `josh_core.cli`) so that an environment's own commands
(`josh toolwoz ...`, envs/toolwoz/cli.py) print the same way without importing the `josh`
command itself.

Scenario ids, API names an agent made up, a server's error message, paths: any of them may
hold `[/x]`-like text, which Rich would read as a closing tag (MarkupError, ending the
command). Everything here builds `rich.text.Text` objects, which are never parsed as markup;
only our own fixed styles are applied.
"""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.text import Text


def plain(value: object) -> Text:
    """`value` as text shown exactly as it is (no markup, no emoji codes)."""
    return Text(str(value))


def styled(*parts: str | tuple[str, str]) -> Text:
    """Pieces of text, each plain or (text, style): `styled(("error:", "red"), " ", message)`."""
    return Text.assemble(*parts)


def error_console() -> Console:
    return Console(stderr=True, soft_wrap=True, highlight=False)


def fail(message: object, code: int = 1) -> NoReturn:
    """Print `error: MESSAGE` on stderr and end the command with `code`."""
    error_console().print(styled(("error:", "red"), " ", str(message)))
    raise typer.Exit(code)


def warn(message: object) -> None:
    error_console().print(styled(("warning:", "yellow"), " ", str(message)))
