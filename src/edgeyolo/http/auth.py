"""Who may see the pictures: loopback by default, a token (or an explicit opt-out) beyond it.

The server binds 127.0.0.1 unless told otherwise. Listening on any other address shows
camera images to the network, so it needs either ``http.token`` (sent as
``Authorization: Bearer <token>``, or ``?token=<token>`` where a header cannot be set: an
``<img>`` tag, a media player) or ``http.allow_anonymous: true``. The token is compared in
constant time and never logged.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from edgeyolo.config.http import exposure_problem, has_token, is_loopback
from edgeyolo.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pydantic import SecretStr


def exposure(host: str, token: SecretStr | None, allow_anonymous: bool) -> str:
    """How the server is protected: 'token', 'loopback' or 'anonymous'.

    Raises ``ConfigError`` naming the keys when ``host`` is not loopback and neither a token
    nor ``allow_anonymous`` is set.
    """
    problem = exposure_problem(host, token, allow_anonymous)
    if problem is not None:
        raise ConfigError(problem)
    if has_token(token):
        return "token"
    return "loopback" if is_loopback(host) else "anonymous"


def authorized(
    token: SecretStr | None, headers: Mapping[str, str], query: Mapping[str, str]
) -> bool:
    """True when no token is configured, or the request carries it (header or query)."""
    if token is None or not has_token(token):
        return True
    expected = token.get_secret_value().encode()
    offered = ""
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer":
        offered = value.strip()
    elif "token" in query:
        offered = query["token"]
    return hmac.compare_digest(offered.encode(), expected)
