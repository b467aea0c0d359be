"""Configuration of the HTTP endpoint (health, metrics, status page, live view); the server
is ``edgeyolo.http``.

The rule for who may connect lives here, so ``check-config`` and the server agree: loopback
always; any other address only with a ``token`` or an explicit ``allow_anonymous``.
"""

from __future__ import annotations

import ipaddress

from pydantic import Field, SecretStr, model_validator

from edgeyolo.config.base import Strict

DEFAULT_PORT = 9108


def is_loopback(host: str) -> bool:
    """True when ``host`` is only reachable from this machine (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def has_token(token: SecretStr | None) -> bool:
    """True when a non-empty token is configured."""
    return token is not None and bool(token.get_secret_value())


def exposure_problem(host: str, token: SecretStr | None, allow_anonymous: bool) -> str | None:
    """Why ``host`` may not be served as configured, or None when it may."""
    if has_token(token) or is_loopback(host) or allow_anonymous:
        return None
    return (
        f"http.host = {host!r} listens beyond this machine and would show camera images to "
        "anyone who can reach it: set http.token (clients send 'Authorization: Bearer <token>' "
        "or ?token=<token>), or http.allow_anonymous: true on a trusted network"
    )


class HttpConfig(Strict):
    """The HTTP endpoint: health checks, Prometheus scrapes, the status page and live view."""

    enabled: bool = Field(default=False, description="Serve HTTP (also turned on by run --http).")
    host: str = Field(
        "127.0.0.1",
        min_length=1,
        description=(
            "Address to listen on. Anything but loopback needs token or allow_anonymous: "
            "the pages show the cameras."
        ),
    )
    port: int = Field(DEFAULT_PORT, ge=0, le=65535, description="TCP port (0: any free port).")
    max_age_s: float = Field(
        10.0,
        gt=0,
        description=(
            "/healthz fails when a camera delivered no frame, or an engine completed no "
            "inference, for longer than this."
        ),
    )
    token: SecretStr | None = Field(
        None,
        description=(
            "When set, every route but /healthz needs it: 'Authorization: Bearer <token>' "
            "or ?token=<token>. Never logged."
        ),
    )
    allow_anonymous: bool = Field(
        False, description="Allow a non-loopback host without a token (trusted networks only)."
    )
    stream_fps: float = Field(
        10.0, gt=0, le=60, description="Most frames per second of a camera's MJPEG stream."
    )
    jpeg_quality: int = Field(
        80, ge=10, le=100, description="JPEG quality of latest.jpg and the streams."
    )
    stall_timeout_s: float = Field(
        5.0, gt=0, description="A stream viewer that takes no data for this long is dropped."
    )

    @model_validator(mode="after")
    def _protected(self) -> HttpConfig:
        problem = exposure_problem(self.host, self.token, self.allow_anonymous)
        if self.enabled and problem is not None:
            raise ValueError(problem)
        return self
