"""The live view: the latest result of every camera, drawn and JPEG-encoded only on demand.

``LiveView.tap(camera)`` is a stage (``edgeyolo.stages``) at the end of a camera's stages. Per
frame it keeps a reference to the result and a few numbers (fps, latency, per-model
inference times for the status page): no copy, no drawing, no encoding. Pictures are made
only when someone asks:

* ``CameraFeed.jpeg()`` (``/cameras/<name>/latest.jpg``): the latest result, annotated and
  encoded once; requests that arrive while it is being encoded share that encode.
* ``CameraFeed.frames()`` (``/cameras/<name>/stream.mjpeg``): while at least one viewer is
  subscribed, one pump per camera encodes the newest result at most ``max_fps`` times a
  second and hands the same bytes to every viewer. A viewer that falls behind skips frames;
  it never makes the pump or the pipeline wait.

Drawing and encoding run in one worker thread (OpenCV releases the GIL), off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from edgeyolo.annotate import Header, Shape, annotate

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Sequence

    from edgeyolo.stages import FrameResult

_STATS_WINDOW = 256  # frames kept for the status page's percentiles


@dataclass(frozen=True, slots=True)
class FeedStats:
    """Rolling numbers of one camera over the last frames the tap saw."""

    fps: float | None
    frames: int
    width: int | None
    height: int | None
    latency_ms: dict[str, float] | None  # p50/p99 capture -> results
    infer_ms: dict[str, dict[str, float]]  # model -> p50/p99
    encodes: int
    viewers: int


def _p50_p99(values: deque[float]) -> dict[str, float]:
    p50, p99 = np.percentile(np.fromiter(values, np.float64, len(values)), [50, 99])
    return {"p50": round(float(p50), 2), "p99": round(float(p99), 2)}


class CameraFeed:
    """One camera's latest result and its shared JPEG encodes (see the module docstring)."""

    def __init__(
        self,
        camera: str,
        executor: ThreadPoolExecutor,
        *,
        max_fps: float = 10.0,
        quality: int = 80,
        shapes: Sequence[Shape] = (),
    ) -> None:
        self.camera = camera
        self.max_fps = max_fps
        self.quality = quality
        self.shapes = tuple(shapes)
        self.encodes = 0
        self.viewers = 0
        self.frames_seen = 0
        self._executor = executor
        self._latest: FrameResult | None = None
        self._latest_ns = 0
        self._dt_ewma: float | None = None
        self._latency: deque[float] = deque(maxlen=_STATS_WINDOW)
        self._infer: dict[str, deque[float]] = {}
        self._jpeg: tuple[int, bytes] | None = None  # (frame seq, bytes) of the last encode
        self._encoding: asyncio.Future[tuple[int, bytes]] | None = None
        self._new: asyncio.Event | None = None  # a result arrived (only watched by the pump)
        self._tick: asyncio.Event | None = None  # a new encode is out (viewers wait on it)
        self._pump: asyncio.Task[None] | None = None
        self._closed = False

    # -- the tap: runs on the loop for every frame; must stay O(1) ----------------------------
    def observe(self, result: FrameResult) -> None:
        """Remember ``result`` as the newest (called by the tap stage)."""
        now = time.monotonic_ns()
        if self._latest_ns:
            dt = (now - self._latest_ns) * 1e-9
            self._dt_ewma = dt if self._dt_ewma is None else 0.9 * self._dt_ewma + 0.1 * dt
        self._latest_ns = now
        self._latest = result
        self.frames_seen += 1
        self._latency.append((now - result.frame.captured_ns) * 1e-6)
        for o in result.outputs:
            ms = getattr(o, "infer_ms", None)
            if ms is not None:
                self._infer.setdefault(o.model, deque(maxlen=_STATS_WINDOW)).append(ms)
        if self._new is not None:
            self._new.set()

    @property
    def fps(self) -> float | None:
        """Frames per second the tap saw (smoothed), None before two frames."""
        return None if not self._dt_ewma else 1.0 / self._dt_ewma

    def stats(self) -> FeedStats:
        """The rolling numbers for the status page."""
        frame = None if self._latest is None else self._latest.frame
        return FeedStats(
            fps=None if self.fps is None else round(self.fps, 2),
            frames=self.frames_seen,
            width=None if frame is None else frame.width,
            height=None if frame is None else frame.height,
            latency_ms=_p50_p99(self._latency) if self._latency else None,
            infer_ms={m: _p50_p99(v) for m, v in self._infer.items() if v},
            encodes=self.encodes,
            viewers=self.viewers,
        )

    # -- pictures ------------------------------------------------------------------------------
    def _render(self, result: FrameResult) -> bytes:
        """Annotate and encode ``result`` (runs in the worker thread)."""
        latency = (time.monotonic_ns() - result.frame.captured_ns) * 1e-6
        img = annotate(
            result.frame.image,
            result.outputs,
            header=Header(self.camera, self.fps, latency),
            shapes=self.shapes,
        )
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise RuntimeError(f"camera {self.camera}: OpenCV could not encode a JPEG")
        return bytes(buf)

    async def jpeg(self) -> bytes | None:
        """The newest result as an annotated JPEG (None before the first frame)."""
        result = self._latest
        if result is None:
            return None
        seq = result.frame.seq
        if self._jpeg is not None and self._jpeg[0] >= seq:
            return self._jpeg[1]
        if self._encoding is None or self._encoding.done():
            self._encoding = asyncio.ensure_future(self._encode(result))
        # Shielded: one caller going away does not cancel the encode others wait for.
        return (await asyncio.shield(self._encoding))[1]

    async def _encode(self, result: FrameResult) -> tuple[int, bytes]:
        loop = asyncio.get_running_loop()
        data = await loop.run_in_executor(self._executor, self._render, result)
        self.encodes += 1
        out = (result.frame.seq, data)
        if self._jpeg is None or self._jpeg[0] < out[0]:
            self._jpeg = out
        return out

    async def frames(self) -> AsyncGenerator[bytes, None]:
        """Annotated JPEGs for one viewer, at most ``max_fps`` a second, newest first.

        Each encode is shared by every viewer; a viewer that is slow to take the next one
        simply gets a newer one. Ends when the feed is closed.
        """
        if self._tick is None:
            self._tick = asyncio.Event()
            self._new = asyncio.Event()
        self.viewers += 1
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._run_pump(), name=f"live-{self.camera}")
        last = -1
        try:
            while not self._closed:
                current = self._jpeg
                if current is None or current[0] <= last:
                    await self._tick.wait()
                    continue
                last = current[0]
                yield current[1]
        finally:
            self.viewers -= 1

    async def _run_pump(self) -> None:
        assert self._new is not None
        assert self._tick is not None
        period = 1.0 / self.max_fps
        loop = asyncio.get_running_loop()
        next_t = 0.0
        while self.viewers > 0 and not self._closed:
            result = self._latest
            if result is None or (self._jpeg is not None and self._jpeg[0] >= result.frame.seq):
                self._new.clear()
                await self._new.wait()
                continue
            wait = next_t - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue  # a newer result may have come meanwhile: take that one
            next_t = loop.time() + period
            try:
                await self.jpeg()
            except RuntimeError:
                continue
            tick, self._tick = self._tick, asyncio.Event()
            tick.set()

    async def close(self) -> None:
        """End every viewer's stream and the pump."""
        self._closed = True
        if self._tick is not None:
            self._tick.set()
        if self._new is not None:
            self._new.set()
        pump, self._pump = self._pump, None
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump


class LiveTap:
    """The stage that feeds a ``CameraFeed``; returns the result unchanged."""

    def __init__(self, feed: CameraFeed) -> None:
        self.feed = feed

    def __call__(self, result: FrameResult) -> FrameResult:
        self.feed.observe(result)
        return result

    def close(self) -> None:
        """Nothing to release: the feed outlives the camera's pipeline (for reloads)."""


class LiveView:
    """Every camera's feed, and the worker thread that draws and encodes for all of them."""

    def __init__(self, *, max_fps: float = 10.0, quality: int = 80) -> None:
        self.max_fps = max_fps
        self.quality = quality
        self.feeds: dict[str, CameraFeed] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgeyolo-view")

    def feed(self, camera: str, shapes: Sequence[Shape] = ()) -> CameraFeed:
        """The feed of ``camera``, created on first use."""
        feed = self.feeds.get(camera)
        if feed is None:
            feed = CameraFeed(
                camera, self._executor, max_fps=self.max_fps, quality=self.quality, shapes=shapes
            )
            self.feeds[camera] = feed
        return feed

    def tap(self, camera: str, shapes: Sequence[Shape] = ()) -> LiveTap:
        """A stage for ``camera``'s pipeline (put it after the tracker, to see track ids)."""
        return LiveTap(self.feed(camera, shapes))

    async def close(self) -> None:
        """End every stream, then stop the worker thread."""
        for feed in self.feeds.values():
            await feed.close()
        self._executor.shutdown(wait=True, cancel_futures=True)
