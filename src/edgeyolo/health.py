"""The optional HTTP endpoint: ``/healthz`` (200 or 503 with a JSON body) and ``/metrics``.

A deliberately small HTTP/1.1 server on ``asyncio.start_server``: two read-only routes, one
request per connection, no extra dependency. It runs on the service's event loop, so a
wedged loop shows up as a failing health check, which is what Docker's HEALTHCHECK and a
Prometheus scrape should see.

``python -m edgeyolo.health [URL]`` probes ``/healthz`` and exits 0 only on a 200; the
container images use it as their HEALTHCHECK (no curl needed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from edgeyolo.config.http import DEFAULT_PORT

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from types import TracebackType

    from typing_extensions import Self

    from edgeyolo.metrics import Metrics

_MAX_LINE = 8192  # request line or one header line
_MAX_HEADERS = 100
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


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


class _RequestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class HealthServer:
    """Serves ``/healthz`` from ``health_fn`` and ``/metrics`` from ``metrics``' registry.

    Use as ``async with HealthServer(host, port, metrics, health_fn) as srv:``; ``srv.port``
    is the bound port (useful with port 0). ``health_fn`` is called on the event loop for each
    ``/healthz`` request and must be quick. GET and HEAD are answered; anything else gets a
    clear 4xx. Every connection is closed after one response.
    """

    def __init__(
        self,
        host: str,
        port: int,
        metrics: Metrics,
        health_fn: Callable[[], tuple[bool, Mapping[str, Any]]],
        *,
        read_timeout_s: float = 5.0,
    ) -> None:
        self._host = host
        self._port = port
        self._metrics = metrics
        self._health_fn = health_fn
        self._read_timeout_s = read_timeout_s
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._log = structlog.get_logger("edgeyolo.health")

    @property
    def port(self) -> int:
        """The bound TCP port (after ``start``)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("HealthServer.port before start()")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def host(self) -> str:
        """The address it listens on."""
        return self._host

    async def start(self) -> None:
        """Bind and start serving; raises OSError naming host and port when it cannot bind."""
        try:
            self._server = await asyncio.start_server(
                self._handle, self._host, self._port, limit=_MAX_LINE, reuse_address=True
            )
        except OSError as exc:
            raise OSError(
                exc.errno, f"cannot listen on {self._host}:{self._port} for /healthz: {exc}"
            ) from exc
        self._log.info("http listening", host=self._host, port=self.port)

    async def close(self) -> None:
        """Stop listening and end open connections (a slow client does not hold up shutdown)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.wait_closed(), timeout=1.0)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- one connection ---------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            await self._serve_one(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away; nothing to answer
        finally:
            if task is not None:
                self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError, OSError):
                await writer.wait_closed()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        method = "GET"
        try:
            method, path = await asyncio.wait_for(
                self._read_request(reader), timeout=self._read_timeout_s
            )
            status, ctype, body, extra = self._route(method, path)
        except asyncio.TimeoutError:
            status, ctype, body, extra = _text(408, "request not received in time\n")
        except _RequestError as exc:
            status, ctype, body, extra = _text(exc.status, f"{exc}\n")
        self._log.debug("http request", method=method, status=status)
        head = [f"HTTP/1.1 {status} {_REASONS[status]}"]
        head += [
            f"Content-Type: {ctype}",
            f"Content-Length: {len(body)}",
            "Cache-Control: no-store",
            "Connection: close",
        ]
        head += [f"{k}: {v}" for k, v in extra.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("ascii"))
        if method != "HEAD":
            writer.write(body)
        await writer.drain()

    async def _read_request(self, reader: asyncio.StreamReader) -> tuple[str, str]:
        line = await _read_line(reader)
        parts = line.split(" ")
        if len(parts) != 3 or not parts[0].isalpha() or not parts[1]:
            raise _RequestError(400, "malformed request line")
        method, target, version = parts
        if not version.startswith("HTTP/1."):
            raise _RequestError(505, f"unsupported protocol {version[:20]!r}, use HTTP/1.x")
        for _ in range(_MAX_HEADERS):
            header = await _read_line(reader)
            if not header:
                break
            if ":" not in header:
                raise _RequestError(400, "malformed header line")
        else:
            raise _RequestError(431, f"more than {_MAX_HEADERS} header lines")
        # Bodies are not read: GET and HEAD carry none, and the connection closes after one reply.
        path = target.split("?", 1)[0]
        return method, path

    def _route(self, method: str, path: str) -> tuple[int, str, bytes, dict[str, str]]:
        if path not in {"/healthz", "/metrics", "/"}:
            return _text(404, f"no such path {path[:100]!r}; try /healthz or /metrics\n")
        if method not in {"GET", "HEAD"}:
            status, ctype, body, extra = _text(405, f"method {method} not allowed\n")
            extra["Allow"] = "GET, HEAD"
            return status, ctype, body, extra
        if path == "/":
            return _text(200, "edgeyolo: /healthz, /metrics\n")
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, self._metrics.exposition(), {}
        try:
            healthy, detail = self._health_fn()
            body = json.dumps(detail, separators=(",", ":"), default=str).encode() + b"\n"
        except Exception as exc:
            self._log.exception("health check raised")
            detail = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
            return 500, "application/json", json.dumps(detail).encode() + b"\n", {}
        return (200 if healthy else 503), "application/json", body, {}


async def _read_line(reader: asyncio.StreamReader) -> str:
    try:
        raw = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError as exc:
        raise _RequestError(431, f"a request line is longer than {_MAX_LINE} bytes") from exc
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise
        raise _RequestError(400, "request ended in the middle of a line") from exc
    try:
        return raw.decode("ascii").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise _RequestError(400, "request is not ASCII") from exc


def _text(status: int, text: str) -> tuple[int, str, bytes, dict[str, str]]:
    return status, "text/plain; charset=utf-8", text.encode(), {}


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
