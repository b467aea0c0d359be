"""The HTTP endpoint: real requests to the real server on a free loopback port."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from edgeyolo.config import HttpConfig
from edgeyolo.errors import ConfigError
from edgeyolo.health import HealthServer, parse_http_address, probe
from edgeyolo.health import main as probe_main
from edgeyolo.metrics import Metrics


def get(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """A plain urllib request (run in a thread: the server shares the test's loop)."""
    req = urllib.request.Request(url, method=method)  # noqa: S310 - http to loopback only
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


async def raw(port: int, data: bytes, *, half_close: bool = False) -> bytes:
    """Send raw bytes (then end the sending side if asked), read the reply until closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        if half_close:
            writer.write_eof()
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()
        await writer.wait_closed()


def service() -> tuple[Metrics, Any]:
    """A Metrics with one camera and one engine, and the health function the app would bind."""
    m = Metrics()
    m.declare(["cam0"], ["det"])
    state = {"mqtt_ok": True}

    def health() -> tuple[bool, dict[str, Any]]:
        return m.health(time.monotonic(), 0.5, ["cam0"], ["det"], state["mqtt_ok"])

    return m, (health, state)


def test_healthz_follows_frames_and_mqtt() -> None:
    """503 before frames, 200 while fresh, 503 when stale or MQTT fails, 200 after recovery."""
    m, (health, state) = service()

    async def main() -> None:
        async with HealthServer("127.0.0.1", 0, m, health) as srv:
            url = f"http://127.0.0.1:{srv.port}/healthz"
            code, headers, body = await asyncio.to_thread(get, url)
            assert code == 503
            assert headers["Content-Type"] == "application/json"
            assert json.loads(body)["unhealthy"] == ["camera:cam0", "engine:det"]
            m.frame_captured("cam0")
            m.inference_seconds("det", 0.01)
            code, _, body = await asyncio.to_thread(get, url)
            assert code == 200, body
            assert json.loads(body)["status"] == "ok"
            assert await asyncio.to_thread(probe, url) == 0
            state["mqtt_ok"] = False
            code, _, body = await asyncio.to_thread(get, url)
            assert code == 503
            assert json.loads(body)["unhealthy"] == ["mqtt"]
            assert await asyncio.to_thread(probe, url) == 1
            state["mqtt_ok"] = True
            await asyncio.sleep(0.6)  # the source is "cut": no frames for longer than max_age
            code, _, body = await asyncio.to_thread(get, url)
            assert code == 503
            assert json.loads(body)["unhealthy"] == ["camera:cam0", "engine:det"]
            m.frame_captured("cam0")
            m.inference_seconds("det", 0.01)
            code, _, _ = await asyncio.to_thread(get, url + "?verbose=1")
            assert code == 200

    asyncio.run(main())


def test_metrics_parse_and_counters_move() -> None:
    """/metrics parses with prometheus-client's parser and its counters move between scrapes."""
    m, (health, _) = service()

    def frames(text: str) -> float:
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name == "edgeyolo_frames_captured_total" and s.labels == {"camera": "cam0"}:
                    return s.value
        raise AssertionError("edgeyolo_frames_captured_total{camera=cam0} missing")

    async def main() -> None:
        async with HealthServer("127.0.0.1", 0, m, health) as srv:
            url = f"http://127.0.0.1:{srv.port}/metrics"
            code, headers, body = await asyncio.to_thread(get, url)
            assert code == 200
            assert headers["Content-Type"].startswith("text/plain; version=")
            assert frames(body.decode()) == 0
            for _ in range(5):
                m.frame_captured("cam0")
            _, _, body = await asyncio.to_thread(get, url)
            assert frames(body.decode()) == 5

    asyncio.run(main())


def test_head_and_bad_requests() -> None:
    """HEAD has headers only; unknown paths, methods, protocols and garbage get clear 4xx."""
    m, (health, _) = service()

    async def main() -> None:
        async with HealthServer("127.0.0.1", 0, m, health) as srv:
            base = f"http://127.0.0.1:{srv.port}"
            code, headers, body = await asyncio.to_thread(get, base + "/metrics", "HEAD")
            assert code == 200
            assert int(headers["Content-Length"]) > 100
            assert body == b""
            code, _, body = await asyncio.to_thread(get, base + "/nope")
            assert code == 404
            assert b"/healthz" in body
            code, headers, _ = await asyncio.to_thread(get, base + "/healthz", "POST")
            assert code == 405
            assert headers["Allow"] == "GET, HEAD"
            reply = await raw(srv.port, b"garbage\r\n\r\n")
            assert reply.startswith(b"HTTP/1.1 400 ")
            reply = await raw(srv.port, b"GET /healthz SPDY/3\r\n\r\n")
            assert reply.startswith(b"HTTP/1.1 505 ")
            reply = await raw(srv.port, b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n")
            assert reply.startswith(b"HTTP/1.1 400 ")
            reply = await raw(srv.port, b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n")
            assert reply.startswith(b"HTTP/1.1 431 ")
            reply = await raw(srv.port, b"GET /\xff HTTP/1.1\r\n\r\n")
            assert reply.startswith(b"HTTP/1.1 400 ")
            reply = await raw(srv.port, b"GET /healthz HTTP/1.0\r\nHost: x", half_close=True)
            assert reply.startswith(b"HTTP/1.1 400 ")
            assert await raw(srv.port, b"", half_close=True) == b""
            # The server still answers after all that.
            code, _, _ = await asyncio.to_thread(get, base + "/")
            assert code == 200

    asyncio.run(main())


def test_slow_client_times_out_and_does_not_block_close() -> None:
    """A client that sends nothing gets 408 after the read timeout; close() ends open ones."""
    m, (health, _) = service()

    async def main() -> None:
        srv = HealthServer("127.0.0.1", 0, m, health, read_timeout_s=0.2)
        await srv.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        reply = await asyncio.wait_for(reader.read(), timeout=5)
        assert reply.startswith(b"HTTP/1.1 408 ")
        writer.close()
        await writer.wait_closed()
        srv2 = HealthServer("127.0.0.1", 0, m, health, read_timeout_s=60)
        await srv2.start()
        _, idle = await asyncio.open_connection("127.0.0.1", srv2.port)
        await asyncio.sleep(0.05)
        t0 = time.monotonic()
        await srv2.close()
        assert time.monotonic() - t0 < 2
        idle.close()
        await srv.close()

    asyncio.run(main())


def test_health_fn_that_raises_gives_500() -> None:
    """A broken health function answers 500 with the error, not a dropped connection."""
    m = Metrics()

    def broken() -> tuple[bool, dict[str, Any]]:
        raise RuntimeError("boom")

    async def main() -> None:
        async with HealthServer("127.0.0.1", 0, m, broken) as srv:
            code, _, body = await asyncio.to_thread(get, f"http://127.0.0.1:{srv.port}/healthz")
            assert code == 500
            assert json.loads(body)["error"] == "RuntimeError: boom"

    asyncio.run(main())


def test_port_in_use_is_a_clear_error() -> None:
    """Binding a taken port raises ConfigError naming host and port (one line for the CLI)."""
    m, (health, _) = service()

    async def main() -> None:
        async with HealthServer("127.0.0.1", 0, m, health) as srv:
            other = HealthServer("127.0.0.1", srv.port, m, health)
            with pytest.raises(ConfigError, match=f"127.0.0.1:{srv.port}"):
                await other.start()

    asyncio.run(main())


def test_probe_unreachable_and_main() -> None:
    """The HEALTHCHECK probe exits 1 when nothing listens or the URL is not http."""
    assert probe("http://127.0.0.1:9/healthz", timeout_s=1) == 1
    assert probe("file:///etc/passwd") == 1
    assert probe_main(["http://127.0.0.1:9/healthz"]) == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.0.0.0:9108", ("0.0.0.0", 9108)),  # noqa: S104 - parsing only
        (":9000", ("127.0.0.1", 9000)),
        ("9000", ("127.0.0.1", 9000)),
        ("[::1]:9108", ("::1", 9108)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_parse_http_address(text: str, expected: tuple[str, int]) -> None:
    """--http accepts HOST:PORT, [V6]:PORT, :PORT and PORT."""
    assert parse_http_address(text) == expected


@pytest.mark.parametrize("text", ["host:", "host:99999", "::1:80", "[::1]80", "a:b"])
def test_parse_http_address_rejects(text: str) -> None:
    """Bad --http values raise ValueError naming the value."""
    with pytest.raises(ValueError, match="--http"):
        parse_http_address(text)


def test_http_config_defaults_and_validation() -> None:
    """HttpConfig is off by default on loopback:9108 and rejects unknown keys."""
    cfg = HttpConfig()
    assert (cfg.enabled, cfg.host, cfg.port, cfg.max_age_s) == (False, "127.0.0.1", 9108, 10.0)
    with pytest.raises(ValidationError):
        HttpConfig.model_validate({"prot": 1})
    with pytest.raises(ValidationError):
        HttpConfig(port=70000)
