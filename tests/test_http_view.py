"""Camera pictures over HTTP: latest.jpg, MJPEG streams, tokens, 404s; real results, real sockets.

The live view is fed by a loop that plays real results of the four demo models on demo
frames at 15 fps, the way a camera pipeline's stages call the tap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from typing import Any

import cv2
import numpy as np
import pytest
import structlog
from pydantic import SecretStr, ValidationError
from structlog.testing import capture_logs

from edgeyolo.config import HttpConfig
from edgeyolo.errors import ConfigError
from edgeyolo.frames import Frame
from edgeyolo.http import HttpServer
from edgeyolo.live import LiveView
from edgeyolo.metrics import Metrics
from edgeyolo.stages import FrameResult
from realresults import RealModels, demo_frames

FPS = 15.0
TOKEN = "s3cret-t0ken-for-tests"  # noqa: S105 - a test value


@pytest.fixture
def all_levels():
    """Let info lines through to capture_logs even if an earlier test set a higher level."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    yield
    structlog.configure(**saved)


@pytest.fixture(scope="module")
def results() -> list[FrameResult]:
    models = RealModels()
    return [models.run("demo", i, img) for i, img in enumerate(demo_frames(6, step=5))]


class Feeder:
    """Plays ``results`` into the tap at ``FPS`` with fresh sequence numbers; counts frames."""

    def __init__(self, live: LiveView, results: list[FrameResult]) -> None:
        self.tap = live.tap("demo")
        self.results = results
        self.ticks: list[float] = []

    async def run(self) -> None:
        period = 1.0 / FPS
        seq = 0
        next_t = time.monotonic()
        while True:
            r = self.results[seq % len(self.results)]
            seq += 1
            frame = Frame("demo", seq, r.frame.image, time.time(), time.monotonic_ns())
            self.tap(FrameResult("demo", frame, r.outputs))
            self.ticks.append(time.monotonic())
            next_t += period
            await asyncio.sleep(max(0.0, next_t - time.monotonic()))

    def fps_between(self, t0: float, t1: float) -> float:
        return sum(t0 <= t < t1 for t in self.ticks) / (t1 - t0)


@contextlib.asynccontextmanager
async def serving(results: list[FrameResult], **kwargs: Any):
    m = Metrics()
    m.declare(["demo"], [])

    def health() -> tuple[bool, dict[str, Any]]:
        return m.health(time.monotonic(), 5.0, ["demo"], [], None)

    live = LiveView(max_fps=kwargs.pop("max_fps", 10.0))
    feeder = Feeder(live, results)
    task = asyncio.create_task(feeder.run())
    server = HttpServer("127.0.0.1", 0, m, health, live=live, **kwargs)
    await server.start()
    try:
        yield server, live, feeder
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await server.close()
        await live.close()


async def request(port: int, target: str, headers: str = "") -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), timeout=30)  # a loaded CI box
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    hdrs = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), hdrs, body


class MjpegClient:
    """Reads a multipart/x-mixed-replace stream part by part."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, target: str, *, rcvbuf: int | None = None) -> MjpegClient:
        sock = socket.socket()
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await writer.drain()
        client = cls(reader, writer)
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head
        assert b"multipart/x-mixed-replace; boundary=" in head
        return client

    async def frame(self) -> bytes:
        boundary = await self.reader.readuntil(b"\r\n")
        assert boundary.startswith(b"--"), boundary
        headers = (await self.reader.readuntil(b"\r\n\r\n")).decode()
        assert "Content-Type: image/jpeg" in headers
        length = int(headers.split("Content-Length: ")[1].split("\r\n")[0])
        data = await self.reader.readexactly(length)
        assert await self.reader.readexactly(2) == b"\r\n"
        return data

    def close(self) -> None:
        self.writer.close()


def decode(jpeg: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None, "not a decodable JPEG"
    return img


def test_stream_frames_are_jpegs_of_the_camera_size(results):
    """A viewer reads 8 parts; each decodes to 960x540; the picture changes; rate is capped."""

    async def main() -> None:
        async with serving(results, max_fps=5.0) as (srv, live, _):
            client = await MjpegClient.open(srv.port, "/cameras/demo/stream.mjpeg")
            t0 = time.monotonic()
            jpegs = [await asyncio.wait_for(client.frame(), 10) for _ in range(8)]
            elapsed = time.monotonic() - t0
            client.close()
            for j in jpegs:
                assert decode(j).shape == (540, 960, 3)
            assert len(set(jpegs)) >= 2  # the picture moves
            # 5 fps cap: 8 parts take at least ~1.4 s (the first comes at once).
            assert elapsed >= 7 / 5.0 * 0.9
            assert live.feeds["demo"].encodes >= 8

    asyncio.run(main())


def test_two_viewers_share_encodes(results):
    """Two viewers at once get the same encodes: encodes ~ frames of one viewer, not two."""

    async def main() -> None:
        async with serving(results, max_fps=8.0) as (srv, live, _):
            feed = live.feeds["demo"]
            a = await MjpegClient.open(srv.port, "/cameras/demo/stream.mjpeg")
            b = await MjpegClient.open(srv.port, "/cameras/demo/stream.mjpeg")
            start = feed.encodes
            got_a, got_b = await asyncio.gather(
                asyncio.wait_for(asyncio.gather(*[a.frame() for _ in range(1)]), 10),
                asyncio.wait_for(asyncio.gather(*[b.frame() for _ in range(1)]), 10),
            )
            frames_a, frames_b = list(got_a), list(got_b)
            for _ in range(10):
                fa, fb = await asyncio.wait_for(asyncio.gather(a.frame(), b.frame()), 10)
                frames_a.append(fa)
                frames_b.append(fb)
            encodes = feed.encodes - start
            a.close()
            b.close()
            print(f"2 viewers, 11 parts each: {encodes} encodes")
            assert feed.viewers <= 2
            # Shared: far fewer encodes than the 22 parts delivered (one each, plus slack).
            assert encodes <= 11 + 2
            assert set(frames_a) & set(frames_b)  # literally the same bytes

    asyncio.run(main())


def test_stalled_viewer_is_dropped_and_the_pipeline_keeps_its_rate(results):
    """A viewer that stops reading is dropped within the stall timeout (plus socket buffers),
    while another viewer keeps getting frames and the feeding loop keeps 15 fps."""

    async def main() -> None:
        async with serving(results, max_fps=10.0, stall_timeout_s=1.0) as (srv, live, feeder):
            feed = live.feeds["demo"]
            await asyncio.sleep(1.0)
            t_before = time.monotonic()
            good = await MjpegClient.open(srv.port, "/cameras/demo/stream.mjpeg")
            stalled = await MjpegClient.open(
                srv.port, "/cameras/demo/stream.mjpeg", rcvbuf=16 * 1024
            )
            await stalled.frame()  # it reads one part, then nothing more
            t_stall = time.monotonic()
            received = 0
            while srv.viewers_dropped == 0:
                await asyncio.wait_for(good.frame(), 10)
                received += 1
                assert time.monotonic() - t_stall < 15, "stalled viewer never dropped"
            dropped_after = time.monotonic() - t_stall
            for _ in range(5):
                await asyncio.wait_for(good.frame(), 10)
            t_end = time.monotonic()
            before = feeder.fps_between(t_before - 1.0, t_before)
            during = feeder.fps_between(t_stall, t_end)
            print(
                f"stalled viewer dropped after {dropped_after:.1f} s; feeder fps "
                f"{before:.1f} before, {during:.1f} during; good viewer got {received} parts"
            )
            assert feed.viewers == 1
            assert during >= 0.8 * FPS
            good.close()
            stalled.close()

    asyncio.run(main())


def test_latest_jpg_unknown_camera_and_no_file_system(results):
    """latest.jpg is the camera's annotated frame; other names and paths are 404."""

    async def main() -> None:
        async with serving(results) as (srv, _live, _):
            await asyncio.sleep(0.3)
            code, hdrs, body = await request(srv.port, "/cameras/demo/latest.jpg")
            assert code == 200
            assert hdrs["Content-Type"] == "image/jpeg"
            assert decode(body).shape == (540, 960, 3)
            for target in (
                "/cameras/nope/latest.jpg",
                "/cameras/nope/stream.mjpeg",
                "/cameras/../../etc/passwd",
                "/cameras/%2e%2e%2f%2e%2e%2fetc%2fpasswd/latest.jpg",
                "/etc/passwd",
                "/cameras/demo/../../../etc/passwd",
                "/cameras/demo/other.jpg",
            ):
                code, _, body = await request(srv.port, target)
                assert code == 404, target
                assert b"root:" not in body

    asyncio.run(main())


def test_token_required_401_without_200_with_and_never_logged(results, all_levels):
    """With a token: 401 and no picture without it (or with a wrong one); 200 with bearer
    header or ?token=; /healthz stays open; the token appears in no log event."""

    async def main() -> None:
        with capture_logs() as logs:
            async with serving(results, token=SecretStr(TOKEN)) as (srv, _live, _):
                await asyncio.sleep(0.3)
                for target in ("/", "/api/status", "/metrics", "/cameras/demo/latest.jpg"):
                    code, hdrs, body = await request(srv.port, target)
                    assert code == 401, target
                    assert hdrs["WWW-Authenticate"].startswith("Bearer")
                    assert b"\xff\xd8" not in body
                    assert b"/api/status" not in body  # not the page
                # A browser gets a form that reloads the page with ?token=.
                assert b'name="token"' in (await request(srv.port, "/"))[2]
                code, _, _ = await request(srv.port, "/cameras/demo/latest.jpg?token=wrong")
                assert code == 401
                code, _, body = await request(
                    srv.port, "/cameras/demo/latest.jpg", f"Authorization: Bearer {TOKEN}\r\n"
                )
                assert code == 200
                assert decode(body).shape == (540, 960, 3)
                code, _, body = await request(srv.port, f"/cameras/demo/latest.jpg?token={TOKEN}")
                assert code == 200
                client = await MjpegClient.open(
                    srv.port, f"/cameras/demo/stream.mjpeg?token={TOKEN}"
                )
                decode(await asyncio.wait_for(client.frame(), 10))
                client.close()
                code, _, _ = await request(srv.port, "/healthz")
                assert code in {200, 503}
        assert any(e.get("access") == "token" for e in logs)
        assert TOKEN not in repr(logs)

    asyncio.run(main())


def test_binding_beyond_loopback_needs_token_or_explicit_anonymous(all_levels):
    """A public address without token or allow_anonymous is refused (config and server);
    the start log says which protection applies."""
    with pytest.raises(ValidationError, match=r"http.token.*allow_anonymous"):
        HttpConfig(enabled=True, host="0.0.0.0")  # noqa: S104 - the point of the test
    assert HttpConfig(enabled=True, host="0.0.0.0", allow_anonymous=True)  # noqa: S104
    assert HttpConfig(enabled=True, host="0.0.0.0", token=SecretStr("x"))  # noqa: S104
    public = "0.0.0.0"  # noqa: S104
    cfg = HttpConfig.model_validate({"enabled": True, "host": public, "token": TOKEN})
    assert TOKEN not in repr(cfg)
    assert TOKEN not in str(cfg.model_dump())
    m = Metrics()

    async def main() -> list[dict[str, Any]]:
        with capture_logs() as logs:
            with pytest.raises(ConfigError, match=r"http.host = '0.0.0.0'"):
                await HttpServer("0.0.0.0", 0, m, lambda: (True, {})).start()  # noqa: S104
            for kwargs in ({"allow_anonymous": True}, {"token": SecretStr(TOKEN)}, {}):
                host = "127.0.0.1" if not kwargs else "0.0.0.0"  # noqa: S104
                async with HttpServer(host, 0, m, lambda: (True, {}), **kwargs):
                    pass
        return logs

    logs = asyncio.run(main())
    assert [e["access"] for e in logs if e["event"] == "http listening"] == [
        "anonymous",
        "token",
        "loopback",
    ]
