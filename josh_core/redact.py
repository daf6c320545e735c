"""Secrets out of what is stored and printed: API keys, bearer tokens, URL credentials.

A server may echo the key it was sent in its error body, and a base URL may carry a user and
password or a key in its query string; none of that belongs in `conversations.error`,
`runs.config` or a log line. `redact(text)` replaces

- the values of secret-looking environment variables (`*_API_KEY`, `*_TOKEN`, `*SECRET*`,
  `*PASSWORD*`, at least 8 characters) and any extra secrets given,
- OpenAI-style keys (`sk-...`), bearer tokens and `Authorization` header values,
- the password (and user) in `scheme://user:password@host`, and `key=`/`token=`-like query
  parameters,

with `***`. `redact_url(url)` does the URL part alone and says whether it changed anything.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

MASK = "***"

_SECRET_ENV = re.compile(r"(API_?KEY|TOKEN|SECRET|PASSWORD|PASSWD)", re.IGNORECASE)
_PATTERNS = (
    # scheme://user:password@host -> scheme://***@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s@]+@"), r"\1" + MASK + "@"),
    # ?api_key=... &token=...
    (re.compile(r"(?i)([?&](?:api[-_]?key|key|token|access[-_]?token|auth|secret|password|sig(?:nature)?)=)[^&\s#\"']+"),
     r"\1" + MASK),
    # Authorization: Bearer xxx / Bearer xxx
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=\-]{4,}"), r"\1" + MASK),
    (re.compile(r"(?i)(\"?(?:authorization|api[-_]?key|x-api-key)\"?\s*[:=]\s*\"?)(?!bearer\b)[^\s\",}]{4,}"),
     r"\1" + MASK),
    # OpenAI-style keys: sk-..., sk-proj-..., rk-...
    (re.compile(r"\b(?:sk|rk)-[A-Za-z0-9_\-]{8,}"), MASK),
)


def secret_values(extra: Iterable[str | None] = ()) -> list[str]:
    """Secrets to mask: secret-looking environment variables and `extra`, longest first."""
    found = {value for name, value in os.environ.items() if _SECRET_ENV.search(name) and len(value) >= 8}
    found |= {value for value in extra if value and len(value) >= 4}
    return sorted(found, key=len, reverse=True)


def url_secrets(url: str | None) -> list[str]:
    """The password (and user) in a URL's userinfo, to be masked wherever they appear."""
    if not url:
        return []
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    return [value for value in (parts.password, parts.username) if value]


def redact(text: str | None, extra: Iterable[str | None] = ()) -> str | None:
    """`text` with every secret it holds replaced by `***`."""
    if not text:
        return text
    for secret in secret_values(extra):
        text = text.replace(secret, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_url(url: str | None) -> tuple[str | None, bool]:
    """A URL without credentials (userinfo, key-like query parameters), and whether any were
    removed."""
    if not url:
        return url, False
    cleaned = url
    for pattern, replacement in _PATTERNS[:2]:
        cleaned = pattern.sub(replacement, cleaned)
    return cleaned, cleaned != url


def is_redacted_url(url: str | None) -> bool:
    return bool(url) and MASK in url
