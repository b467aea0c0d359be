"""Configuration of the HTTP endpoint (``/healthz``, ``/metrics``); the server is health.py."""

from __future__ import annotations

from pydantic import Field

from edgeyolo.config.base import Strict

DEFAULT_PORT = 9108


class HttpConfig(Strict):
    """The HTTP endpoint for health checks and Prometheus scrapes."""

    enabled: bool = Field(
        default=False, description="Serve /healthz and /metrics (also turned on by run --http)."
    )
    host: str = Field(
        "127.0.0.1",
        min_length=1,
        description="Address to listen on; 0.0.0.0 (or ::) only behind a firewall.",
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
