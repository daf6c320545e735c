"""Text from models, servers and files made storable: no lone UTF-16 surrogates.

JSON can spell a character that UTF-8 cannot hold: a lone surrogate escape such as `\\ud800`.
`json.loads` turns it into a Python string that DuckDB, a JSONL file or a tokenizer then
refuses to encode, so one such escape in a model's action (or a server's reply) would end the
conversation, and under JOSH the whole tree with its good siblings. Every place where
untrusted text is JSON-decoded (the action parsers, the OpenAI backend) and the storage codec
pass it through `valid_text` / `valid_json`: a lone surrogate becomes U+FFFD, a valid pair
stays the character it spells, and everything else is left exactly as it was.
"""

from __future__ import annotations

from typing import Any

REPLACEMENT = "\ufffd"


def valid_text(text: str) -> str:
    """`text` with every lone surrogate replaced by U+FFFD (a surrogate pair joined into its
    character); the same object when there was nothing to replace."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        # UTF-16 with surrogatepass writes pairs as the character they spell and lone halves
        # as themselves; decoding with "replace" then turns each lone half into U+FFFD.
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def valid_json(value: Any) -> Any:
    """A JSON-like value (dicts, lists, strings, numbers) with `valid_text` applied to every
    string, keys included; the same object when nothing needed replacing."""
    if isinstance(value, str):
        return valid_text(value)
    if isinstance(value, dict):
        cleaned = {valid_json(k) if isinstance(k, str) else k: valid_json(v) for k, v in value.items()}
        same = all(a is b for a, b in zip(cleaned.keys(), value.keys())) and all(
            cleaned[k] is v for k, v in zip(cleaned.keys(), value.values())
        )
        return value if same and len(cleaned) == len(value) else cleaned
    if isinstance(value, (list, tuple)):
        items = [valid_json(v) for v in value]
        if all(a is b for a, b in zip(items, value)):
            return value
        return type(value)(items) if isinstance(value, tuple) else items
    return value
