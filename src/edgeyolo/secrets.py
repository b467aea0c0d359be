"""Keeping secrets out of what edgeyolo prints: config errors, logs, command output.

A secret is a url's password (``rtsp://user:PASS@cam``, ``mqtt://u:PASS@broker``), a query
parameter that looks like one (``?token=...``, ``&api_key=...``), or the value of a key that
looks like one (``password``, a misspelled ``pasword``, ``token``, ``secret``...).
:func:`redact` masks the first two in any text; :func:`secret_values` collects all three from
a parsed config file so that :func:`scrub` can remove them from any message built from it.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"
# Key names that hold a secret, misspellings included (pasword, passwort, pwd, api_key).
_SECRET_KEY = re.compile(r"pa?s+w|pwd|secret|token|credential|api_?key|auth|private", re.IGNORECASE)
# scheme://user:password@ : the password runs to the last '@' before the path.
_URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*:)[^\s/?#]*@")
_QUERY_SECRET = re.compile(
    # (not a placeholder such as ?token=<token> in a help text)
    r"([?&;][^=&;#\s]*(?:pa?s+w|pwd|secret|token|key|auth|sig)[^=&;#\s]*=)(?!<)[^&;#\s]+",
    re.IGNORECASE,
)


def is_secret_key(key: object) -> bool:
    """Whether a config key's value should never be shown."""
    return isinstance(key, str) and _SECRET_KEY.search(key) is not None


def redact(text: str) -> str:
    """``text`` with url passwords and secret-looking query parameters replaced by ***."""
    text = _URL_CREDENTIALS.sub(rf"\1{MASK}@", text)
    return _QUERY_SECRET.sub(rf"\1{MASK}", text)


def _from_text(text: str) -> list[str]:
    found = []
    for m in _URL_CREDENTIALS.finditer(text):
        start = m.start() + len(m.group(1))
        found.append(text[start : m.end() - 1])
    found += [text[m.start() + len(m.group(1)) : m.end()] for m in _QUERY_SECRET.finditer(text)]
    return found


def secret_values(raw: Any) -> set[str]:
    """Every secret in parsed YAML ``raw``, as the text it would be printed as."""
    found: set[str] = set()

    def walk(node: Any, key: object) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, k)
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        elif node is not None and not isinstance(node, bool):
            text = str(node)
            if is_secret_key(key):
                found.add(text)
            found.update(_from_text(text))

    walk(raw, None)
    # A secret too short to be told apart from ordinary text is not worth hiding badly.
    return {s for s in found if len(s) >= 3}


def scrub(text: str, secrets: set[str]) -> str:
    """``text`` redacted, and every one of ``secrets`` in it replaced by ***."""
    text = redact(text)
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


_KEY_VALUE = re.compile(r"""^[\s-]*["']?([^\s:"']+)["']?\s*:\s*(.+?)\s*$""", re.MULTILINE)


def secrets_in_text(text: str) -> set[str]:
    """Secrets in YAML text that may not parse: values of secret keys, url passwords."""
    found = set(_from_text(text))
    for m in _KEY_VALUE.finditer(text):
        if is_secret_key(m.group(1)):
            value = m.group(2).split(" #", 1)[0].strip()
            found.add(value)
            found.add(value.strip("'\""))
    return {s for s in found if len(s) >= 3}
