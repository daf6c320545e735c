"""Value normalisation and the `⊆` test that ToolWOZ serving and scoring are built on.

Both sides of every comparison go through `normalize`: lower case, apostrophes removed,
whitespace collapsed, `H:MM` times padded to `HH:MM`. Values that carry no constraint
("", "dontcare", "don't care", "not mentioned", ...) normalise to None and are ignored.
(The original compared stripped call values with raw database values, so names such as
"king's college" never matched; normalising both sides fixes that.)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

_APOSTROPHES = re.compile(r"['’‘`´]")
_SPACES = re.compile(r"\s+")
_SHORT_TIME = re.compile(r"^(\d):(\d\d)$")
_TIME = re.compile(r"^\s*(\d{1,2})[:.](\d{2})\s*$")

# Compared after apostrophes are removed: "don't care" -> "dont care", "do n't care" -> "do nt care".
IGNORED_VALUES = frozenset({"", "dontcare", "dont care", "do nt care", "not mentioned"})


def normalize(value: Any) -> str | None:
    """The comparable form of a parameter value, or None when it constrains nothing."""
    if value is None:
        return None
    if not isinstance(value, str):
        try:
            value = str(value)
        except ValueError:  # e.g. an int past Python's digit limit: no value matches it
            value = f"<{type(value).__name__}>"
    return _normalize_text(value)


@lru_cache(maxsize=1 << 16)
def _normalize_text(value: str) -> str | None:
    text = _APOSTROPHES.sub("", value.lower())
    text = _SPACES.sub(" ", text).strip()
    if text in IGNORED_VALUES:
        return None
    short = _SHORT_TIME.match(text)
    if short:
        text = f"0{short.group(1)}:{short.group(2)}"
    return text


def normalize_params(params: Mapping[str, Any]) -> dict[str, str]:
    """Only the parameters that constrain something, normalised."""
    out: dict[str, str] = {}
    for key, value in params.items():
        norm = normalize(value)
        if norm is not None:
            out[key] = norm
    return out


def is_subset(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """`a ⊆ b`: every non-ignored (key, value) of `a` is in `b`, after normalisation."""
    for key, value in a.items():
        norm = normalize(value)
        if norm is not None and normalize(b.get(key)) != norm:
            return False
    return True


def is_normalized_subset(a: Mapping[str, str], b: Mapping[str, str]) -> bool:
    """`a ⊆ b` for dicts already passed through `normalize_params` (the hot path)."""
    return all(b.get(key) == value for key, value in a.items())


def parse_time(value: Any) -> int | None:
    """Minutes after midnight for `H:MM` / `HH:MM` (also `HH.MM`), else None."""
    match = _TIME.match(str(value))
    if not match:
        return None
    hours, minutes = int(match.group(1)), int(match.group(2))
    if hours > 24 or minutes > 59:
        return None
    return hours * 60 + minutes
