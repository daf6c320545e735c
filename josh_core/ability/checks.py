"""Programmatic checks of verifiable instructions ("at most 30 words", "all lowercase", ...).

Each check kind is a function of the response text and the check's parameters, and says only
whether the response follows the instruction, never how good the answer is. An empty response
(no word at all) passes no check: a model that says nothing has not "avoided commas".

Kinds and their parameters (`data/instructions.json` uses these and no other):

    max_words n          at most n words            min_words n      at least n words
    include words        every word present         exclude words    none of them present
    frequency word, min  `word` at least min times  (words: whole words, any case)
    lowercase            letters, none uppercase    uppercase        letters, none lowercase
    bullets n            exactly n lines starting "- ", "* " or "• "
    numbered n           exactly n lines starting "1." / "2)" ...
    json_keys keys       the whole response (a ```json fence allowed) is a JSON object with
                         every key of `keys`
    starts_with phrase   begins with it (any case, leading space ignored)
    ends_with phrase     ends with it (any case; after a phrase ending in a letter or digit, a
                         final . ! or ? is allowed)
    no_commas            no comma at all
    paragraphs n         exactly n blocks separated by blank lines
    quoted               the whole response inside double quotes (straight or curly)
    title                a title in double angular brackets, <<like this>>
    postscript marker    a line starting with `marker` (e.g. "P.S.")
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")  # letters or digits, with inner apostrophes or hyphens


def words(text: str) -> list[str]:
    return WORD.findall(text)


def _count(text: str, word: str) -> int:
    return len(re.findall(rf"(?<![^\W_]){re.escape(word)}(?![^\W_])", text, flags=re.IGNORECASE))


def _lines_matching(text: str, pattern: str) -> int:
    return sum(1 for line in text.splitlines() if re.match(pattern, line))


def _json_object(text: str) -> Any:
    body = text.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", body, flags=re.DOTALL | re.IGNORECASE)
    if fenced:
        body = fenced.group(1)
    try:
        return json.loads(body)
    except ValueError:
        return None


def _ends_with(text: str, phrase: str) -> bool:
    body, phrase = text.strip().lower(), phrase.strip().lower()
    if body.endswith(phrase):
        return True
    return bool(phrase) and phrase[-1].isalnum() and body[-1:] in ".!?" and body[:-1].rstrip().endswith(phrase)


CHECKS: dict[str, Callable[..., bool]] = {
    "max_words": lambda text, n: len(words(text)) <= n,
    "min_words": lambda text, n: len(words(text)) >= n,
    "include": lambda text, words: all(_count(text, w) > 0 for w in words),
    "exclude": lambda text, words: not any(_count(text, w) > 0 for w in words),
    "frequency": lambda text, word, min: _count(text, word) >= min,
    "lowercase": lambda text: any(c.isalpha() for c in text) and text == text.lower(),
    "uppercase": lambda text: any(c.isalpha() for c in text) and text == text.upper(),
    "bullets": lambda text, n: _lines_matching(text, r"\s*[-*•]\s+\S") == n,
    "numbered": lambda text, n: _lines_matching(text, r"\s*\d+[.)]\s+\S") == n,
    "json_keys": lambda text, keys: isinstance(obj := _json_object(text), dict) and all(k in obj for k in keys),
    "starts_with": lambda text, phrase: text.strip().lower().startswith(phrase.strip().lower()),
    "ends_with": _ends_with,
    "no_commas": lambda text: "," not in text and "，" not in text,
    "paragraphs": lambda text, n: len([p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]) == n,
    "quoted": lambda text: len(body := text.strip()) >= 2 and body[0] in "\"“" and body[-1] in "\"”",
    "title": lambda text: re.search(r"<<[^<>\n]*\w[^<>\n]*>>", text) is not None,
    "postscript": lambda text, marker: re.search(rf"^\s*{re.escape(marker)}", text, flags=re.MULTILINE) is not None,
}

# The parameters each kind takes (checked when the prompts are loaded).
PARAMETERS: dict[str, tuple[str, ...]] = {
    "max_words": ("n",), "min_words": ("n",), "include": ("words",), "exclude": ("words",),
    "frequency": ("word", "min"), "lowercase": (), "uppercase": (), "bullets": ("n",), "numbered": ("n",),
    "json_keys": ("keys",), "starts_with": ("phrase",), "ends_with": ("phrase",), "no_commas": (),
    "paragraphs": ("n",), "quoted": (), "title": (), "postscript": ("marker",),
}  # fmt: skip


def check_problem(check: dict[str, Any]) -> str | None:
    """Why a check's description cannot be run (unknown kind, wrong parameters), or None."""
    kind = check.get("kind")
    if kind not in CHECKS:
        return f"unknown check kind {kind!r}"
    given = set(check) - {"kind"}
    if given != set(PARAMETERS[kind]):
        return f"check {kind} takes {', '.join(PARAMETERS[kind]) or 'no parameters'}, got {', '.join(sorted(given)) or 'none'}"
    return None


def passes(response: str, check: dict[str, Any]) -> bool:
    """Whether `response` follows the instruction `check` describes."""
    problem = check_problem(check)
    if problem:
        raise ValueError(problem)
    if not words(response):
        return False
    params = {k: v for k, v in check.items() if k != "kind"}
    return bool(CHECKS[check["kind"]](response, **params))
