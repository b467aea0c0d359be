"""The broker url of the MQTT sink: parsed in one place, credentials kept out of logs."""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, SecretStr

_SCHEMES = {"mqtt": 1883, "mqtts": 8883, "tcp": 1883, "ssl": 8883, "tls": 8883}
_TLS_SCHEMES = {"mqtts", "ssl", "tls"}


class BrokerUrl(BaseModel):
    """A parsed broker url (credentials kept out of repr)."""

    model_config = ConfigDict(frozen=True)
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: SecretStr | None = None

    def display_host(self) -> str:
        """scheme://host:port, without any credentials."""
        scheme = "mqtts" if self.tls else "mqtt"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    def display(self) -> str:
        """The url without the password, for logs and for subscribers."""
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{user}{host}:{self.port}"


# Memoized: validation, the sink and the CLI all read the same (frozen) result, so a url is
# parsed once however many copies of its config exist (model_copy keeps no derived state).
@lru_cache(maxsize=32)
def parse_url(url: str) -> BrokerUrl:
    """Parse ``mqtt[s]://[user:pass@]host[:port]``; raise ValueError saying what is wrong."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a broker url ({exc}): expected mqtt[s]://host[:port]") from exc
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise ValueError(
            "expected mqtt://host[:port], mqtts://host[:port] or 'embedded', "
            f"got scheme {parts.scheme or '(none)'!r}"
        )
    if not parts.hostname:
        raise ValueError("the url has no host: expected mqtt[s]://host[:port]")
    if parts.path not in {"", "/"} or parts.query or parts.fragment:
        raise ValueError("a broker url has no path, query or fragment: mqtt[s]://host[:port]")
    password = None if parts.password is None else SecretStr(unquote(parts.password))
    return BrokerUrl(
        host=parts.hostname,
        port=port or _SCHEMES[scheme],
        tls=scheme in _TLS_SCHEMES,
        username=None if parts.username is None else unquote(parts.username),
        password=password,
    )


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ***, for error messages."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return parts._replace(netloc=netloc).geturl()
    except ValueError:
        return "(unparsable url)"
