"""Grounded values: free-text API parameters may only take values the conversation contains.

The ReACT prompt tells the agent to "put into a call only values the customer said or an
earlier APIRETURN showed". A small model does not follow that rule: constrained to the API
schemas alone, SmolLM2-135M fills `name` or `food` with invented strings and copies the values
of the prompt's examples. Grounded decoding turns the rule into the grammar: every parameter
without an enum in its schema gets, for this one generation, an enum of the values this
conversation offers:

- word n-grams (1 to `MAX_NGRAM` words) of the customer's messages, lower-cased, with the
  punctuation around words removed ("arriving by 10:45." gives "10:45", "by 10:45", ...);
- every scalar value in the API results the agent has seen (names, train IDs, times, ...).

The prompt's demonstration is not part of the conversation, so its values are never offered.
Enum parameters keep their own enums. The function-calling and ReACT agents both use this
through `ModelAgent`; `--decoding grammar` turns it off and keeps the plain schema grammar.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Iterable, Sequence

from josh_core.llm.actions import is_writable_value
from josh_core.policies.prompts import APIRETURN, FORMAT_FEEDBACK_PREFIX
from josh_core.types import Message

MAX_NGRAM = 4
# A conversation offers a few hundred values; the newest are kept if a long one offers more
# (each is a branch of the grammar, and the grammar is compiled for every generation).
MAX_VALUES = 2000

# Punctuation trimmed from both ends of a word (":" stays inside times such as 10:45).
_WORD_EDGES = ".,!?;:\"'()[]{}*"


def word_ngrams(text: str, max_n: int = MAX_NGRAM) -> list[str]:
    """Lower-cased word n-grams of `text`, shortest first at each position."""
    words = [w.strip(_WORD_EDGES) for w in text.lower().split()]
    words = [w for w in words if w]
    out = []
    for i in range(len(words)):
        for n in range(1, max_n + 1):
            if i + n > len(words):
                break
            out.append(" ".join(words[i : i + n]))
    return out


def result_values(content: Any) -> list[str]:
    """Every scalar value (as text) inside an API result: rows, booking replies, errors."""
    if isinstance(content, dict):
        return [v for item in content.values() for v in result_values(item)]
    if isinstance(content, list):
        return [v for item in content for v in result_values(item)]
    if content is None or isinstance(content, bool):
        return []
    return [str(content)]


def _apireturn_content(text: str) -> Any:
    body = text[len(APIRETURN) :].strip()
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        return body  # an error text: its words are still values the agent has seen


def conversation_values(messages: Iterable[Message]) -> list[str]:
    """The values a call may use, oldest first, without duplicates (see module docstring)."""
    found: list[str] = []
    for message in messages:
        content = message.content or ""
        if message.role == "tool" or (message.role == "user" and content.startswith(APIRETURN)):
            # An API result (ReACT: a user message "APIRETURN <json>"; function calling: a tool
            # message). Error texts are not JSON: their words count as seen.
            parsed = _apireturn_content(content if message.role == "user" else f"{APIRETURN} {content}")
            found += word_ngrams(parsed) if isinstance(parsed, str) else result_values(parsed)
        elif message.role == "user" and not content.startswith(FORMAT_FEEDBACK_PREFIX):
            found += word_ngrams(content)
    values = list(dict.fromkeys(v.strip() for v in found))
    values = [v for v in values if v and is_writable_value(v)]
    return values[-MAX_VALUES:]


def grounded_tools(tools: Sequence[dict[str, Any]], values: Sequence[str]) -> list[dict[str, Any]]:
    """A copy of `tools` where every string parameter without an enum takes one of `values`.

    With no values at all the tools are returned unchanged (an empty enum would forbid every
    call); the schema grammar then still applies.
    """
    if not values:
        return list(tools)
    out = copy.deepcopy(list(tools))
    choices = list(values)
    for tool in out:
        fn = tool.get("function", tool)
        for prop in ((fn.get("parameters") or {}).get("properties") or {}).values():
            if "enum" not in prop and "const" not in prop and prop.get("type", "string") == "string":
                prop["enum"] = choices
    return out
