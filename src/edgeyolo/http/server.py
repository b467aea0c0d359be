"""The HTTP server: health, metrics, the status page, camera pictures and MJPEG streams.

A deliberately small HTTP/1.1 server on ``asyncio.start_server``, no extra dependency. It runs
on the service's event loop, so a wedged loop shows up as a failing health check. One request
per connection. Routes (all GET or HEAD; nothing here reads the file system):

* ``/healthz``: 200 or 503 with a JSON body; open even when a token is set (probes).
* ``/metrics``: Prometheus text format.
* ``/``: the status page (``edgeyolo.http.page``); ``/api/status``: its JSON.
* ``/cameras/<name>/latest.jpg`` and ``/cameras/<name>/stream.mjpeg`` (unknown name: 404).

With ``token`` set every route but ``/healthz`` needs it (``edgeyolo.http.auth``); requests
without it get 401 and no picture. A stream viewer whose socket takes nothing for
``stall_timeout_s`` is dropped; the stream never makes the pipeline wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote

import structlog
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from edgeyolo.errors import ConfigError
from edgeyolo.http.auth import authorized, exposure
from edgeyolo.http.page import LOGIN, PAGE

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from pydantic import SecretStr
    from typing_extensions import Self

    from edgeyolo.live import CameraFeed, LiveView
    from edgeyolo.metrics import Metrics

_MAX_LINE = 8192  # request line or one header line
_MAX_HEADERS = 100
_BOUNDARY = "edgeyoloframe"
_STREAM_SNDBUF = 256 * 1024  # bounds what a stalled viewer can leave queued in the kernel
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}

Reply = tuple[int, str, bytes, dict[str, str]]


class _RequestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Request:
    __slots__ = ("headers", "method", "path", "query")

    def __init__(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str]
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers


class HttpServer:
    """Serves the routes of the module docstring.

    Use as ``async with HttpServer(host, port, metrics, health_fn, ...) as srv:``; ``srv.port``
    is the bound port (useful with port 0). ``health_fn`` and ``status_fn`` are called on the
    event loop for each request and must be quick. ``live`` provides the camera pictures
    (None: no camera routes). ``start`` refuses a non-loopback ``host`` without ``token`` or
    ``allow_anonymous`` (``ConfigError``) and logs which protection applies.
    """

    def __init__(
        self,
        host: str,
        port: int,
        metrics: Metrics,
        health_fn: Callable[[], tuple[bool, Mapping[str, Any]]],
        *,
        status_fn: Callable[[], Mapping[str, Any]] | None = None,
        live: LiveView | None = None,
        token: SecretStr | None = None,
        allow_anonymous: bool = False,
        read_timeout_s: float = 5.0,
        stall_timeout_s: float = 5.0,
    ) -> None:
        self._host = host
        self._port = port
        self._metrics = metrics
        self._health_fn = health_fn
        self._status_fn = status_fn
        self._live = live
        self._token = token
        self._allow_anonymous = allow_anonymous
        self._read_timeout_s = read_timeout_s
        self._stall_timeout_s = stall_timeout_s
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self.viewers_dropped = 0
        self._log = structlog.get_logger("edgeyolo.http")

    @property
    def port(self) -> int:
        """The bound TCP port (after ``start``)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("HttpServer.port before start()")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def host(self) -> str:
        """The address it listens on."""
        return self._host

    async def start(self) -> None:
        """Bind and start serving; raises ConfigError naming host and port when it cannot."""
        access = exposure(self._host, self._token, self._allow_anonymous)
        try:
            self._server = await asyncio.start_server(
                self._handle, self._host, self._port, limit=_MAX_LINE, reuse_address=True
            )
        except OSError as exc:
            # One line for the user (the CLI prints EdgeYoloErrors), not a traceback.
            raise ConfigError(
                f"http: cannot listen on {self._host}:{self._port}: {exc.strerror or exc} "
                "(another program on that port? choose another with --http HOST:PORT or "
                "http.port)"
            ) from None
        self._log.info("http listening", host=self._host, port=self.port, access=access)

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

    async def __aexit__(self, *exc: object) -> None:
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
        except asyncio.CancelledError:
            # close() ends this connection. Not re-raised: asyncio's start_server callback
            # calls task.exception(), which raises on a cancelled task (Python < 3.12).
            pass
        finally:
            if task is not None:
                self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError, OSError):
                await writer.wait_closed()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        req = _Request("GET", "?", {}, {})
        try:
            req = await asyncio.wait_for(self._read_request(reader), timeout=self._read_timeout_s)
            reply = await self._route(req, writer)
        except asyncio.TimeoutError:
            reply = _text(408, "request not received in time\n")
        except _RequestError as exc:
            reply = _text(exc.status, f"{exc}\n")
        if reply is None:  # a stream: already answered
            return
        status, ctype, body, extra = reply
        # The query is never logged: it may hold the token.
        self._log.debug("http request", method=req.method, path=req.path[:200], status=status)
        head = [f"HTTP/1.1 {status} {_REASONS[status]}"]
        head += [
            f"Content-Type: {ctype}",
            f"Content-Length: {len(body)}",
            "Cache-Control: no-store",
            "Connection: close",
        ]
        head += [f"{k}: {v}" for k, v in extra.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("ascii"))
        if req.method != "HEAD":
            writer.write(body)
        await writer.drain()

    async def _read_request(self, reader: asyncio.StreamReader) -> _Request:
        line = await _read_line(reader)
        parts = line.split(" ")
        if len(parts) != 3 or not parts[0].isalpha() or not parts[1]:
            raise _RequestError(400, "malformed request line")
        method, target, version = parts
        if not version.startswith("HTTP/1."):
            raise _RequestError(505, f"unsupported protocol {version[:20]!r}, use HTTP/1.x")
        headers: dict[str, str] = {}
        for _ in range(_MAX_HEADERS):
            header = await _read_line(reader)
            if not header:
                break
            name, sep, value = header.partition(":")
            if not sep:
                raise _RequestError(400, "malformed header line")
            headers[name.strip().lower()] = value.strip()
        else:
            raise _RequestError(431, f"more than {_MAX_HEADERS} header lines")
        # Bodies are not read: GET and HEAD carry none, and the connection closes after one reply.
        path, _, query = target.partition("?")
        return _Request(method, path, dict(parse_qsl(query)), headers)

    async def _route(  # noqa: PLR0911 - one return per route reads best
        self, req: _Request, writer: asyncio.StreamWriter
    ) -> Reply | None:
        path = req.path
        camera, view = _camera_route(path)
        known = {"/healthz", "/metrics", "/", "/api/status"}
        if path not in known and camera is None:
            return _text(404, f"no such path {path[:100]!r}; try / or /healthz\n")
        if req.method not in {"GET", "HEAD"}:
            status, ctype, body, extra = _text(405, f"method {req.method} not allowed\n")
            extra["Allow"] = "GET, HEAD"
            return status, ctype, body, extra
        if path != "/healthz" and not authorized(self._token, req.headers, req.query):
            self._log.info("http unauthorized", path=path[:200])
            status, ctype, body, extra = _text(401, "a valid token is required\n")
            if path == "/":
                ctype, body = "text/html; charset=utf-8", LOGIN.encode()
            extra["WWW-Authenticate"] = 'Bearer realm="edgeyolo"'
            return status, ctype, body, extra
        if path == "/":
            return 200, "text/html; charset=utf-8", PAGE.encode(), {}
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, self._metrics.exposition(), {}
        if path == "/api/status":
            return self._status()
        if path == "/healthz":
            return self._health()
        feed = None if self._live is None or camera is None else self._live.feeds.get(camera)
        if feed is None:
            return _text(404, f"no camera named {str(camera)[:100]!r}\n")
        if view == "latest.jpg":
            data = await feed.jpeg()
            if data is None:
                return _text(503, "no frame yet\n")
            return 200, "image/jpeg", data, {}
        if req.method == "HEAD":
            return 200, f"multipart/x-mixed-replace; boundary={_BOUNDARY}", b"", {}
        await self._stream(feed, writer)
        return None

    def _health(self) -> Reply:
        try:
            healthy, detail = self._health_fn()
            body = json.dumps(detail, separators=(",", ":"), default=str).encode() + b"\n"
        except Exception as exc:
            self._log.exception("health check raised")
            detail = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
            return 500, "application/json", json.dumps(detail).encode() + b"\n", {}
        return (200 if healthy else 503), "application/json", body, {}

    def _status(self) -> Reply:
        if self._status_fn is None:
            return _text(404, "no status here\n")
        try:
            doc = self._status_fn()
        except Exception as exc:
            self._log.exception("status raised")
            return _text(500, f"status failed: {type(exc).__name__}\n")
        body = json.dumps(doc, separators=(",", ":"), default=str).encode() + b"\n"
        return 200, "application/json", body, {}

    async def _stream(self, feed: CameraFeed, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _STREAM_SNDBUF)
        writer.write(
            (
                "HTTP/1.1 200 OK\r\n"
                f"Content-Type: multipart/x-mixed-replace; boundary={_BOUNDARY}\r\n"
                "Cache-Control: no-store\r\nConnection: close\r\n\r\n"
            ).encode("ascii")
        )
        log = self._log.bind(camera=feed.camera)
        log.info("viewer connected", viewers=feed.viewers + 1)
        frames = feed.frames()
        try:
            async for jpeg in frames:
                part = (
                    f"--{_BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                    f"Content-Length: {len(jpeg)}\r\n\r\n"
                ).encode("ascii")
                writer.write(part + jpeg + b"\r\n")
                try:
                    await asyncio.wait_for(writer.drain(), timeout=self._stall_timeout_s)
                except asyncio.TimeoutError:
                    self.viewers_dropped += 1
                    log.warning("viewer stalled, dropped", stalled_s=self._stall_timeout_s)
                    writer.transport.abort()  # drop what is queued for it, now
                    return
        except (ConnectionError, OSError):
            pass
        finally:
            await frames.aclose()
            log.info("viewer gone", viewers=feed.viewers)


def _camera_route(path: str) -> tuple[str | None, str | None]:
    """``/cameras/<name>/<view>`` -> (name, view); (None, None) for any other path."""
    parts = path.split("/")
    if (
        len(parts) == 4
        and parts[0] == ""
        and parts[1] == "cameras"
        and parts[2]
        and parts[3] in {"latest.jpg", "stream.mjpeg"}
    ):
        return unquote(parts[2]), parts[3]
    return None, None


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


def _text(status: int, text: str) -> Reply:
    return status, "text/plain; charset=utf-8", text.encode(), {}
