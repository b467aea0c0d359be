"""``run --http`` address parsing, and the ``/healthz`` probe.

The server itself (``/healthz``, ``/metrics``, the status page, camera pictures and streams)
is ``edgeyolo.http.server.HttpServer``; ``HealthServer`` is its old name. Its settings are
``edgeyolo.config.HttpConfig``.

``python -m edgeyolo.health [URL]`` probes ``/healthz`` and exits 0 only on a 200; the
container images use it as their HEALTHCHECK (no curl needed).
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from edgeyolo.config.http import DEFAULT_PORT
from edgeyolo.http.server import HttpServer

HealthServer = HttpServer
"""The old name of ``HttpServer`` (when it served only ``/healthz`` and ``/metrics``)."""


def parse_http_address(value: str) -> tuple[str, int]:
    """Parse ``run --http`` values: ``HOST:PORT``, ``[V6]:PORT``, ``:PORT`` or ``PORT``.

    A missing host means 127.0.0.1. Raises ``ValueError`` naming the value.
    """
    text = value.strip()
    host = "127.0.0.1"
    port_text = text
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or not text[end + 1 :].startswith(":"):
            raise ValueError(f"--http {value!r}: expected [IPV6]:PORT")
        host, port_text = text[1:end], text[end + 2 :]
    elif ":" in text:
        head, _, port_text = text.rpartition(":")
        if ":" in head:
            raise ValueError(f"--http {value!r}: write IPv6 addresses as [ADDR]:PORT")
        host = head or host
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"--http {value!r}: the port must be a number from 0 to 65535")
    return host, int(port_text)


def probe(url: str = f"http://127.0.0.1:{DEFAULT_PORT}/healthz", timeout_s: float = 3.0) -> int:
    """GET ``url``: 0 when it answers 200, 1 otherwise (what a HEALTHCHECK wants)."""
    if not url.startswith(("http://", "https://")):
        return 1
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - scheme checked above
            return 0 if resp.status == 200 else 1
    except (urllib.error.URLError, OSError, ValueError):
        return 1


def main(argv: list[str] | None = None) -> int:
    """``python -m edgeyolo.health [URL]``: exit status of ``probe``."""
    args = sys.argv[1:] if argv is None else argv
    code = probe(args[0]) if args else probe()
    sys.stderr.write("healthy\n" if code == 0 else "unhealthy or unreachable\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
