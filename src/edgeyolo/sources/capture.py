"""Frame sources: OpenCV capture in a dedicated thread per camera.

The capture thread owns the ``cv2.VideoCapture`` (blocking reads never touch the event
loop) and hands frames to the loop through ``call_soon_threadsafe``. Two delivery policies:

- ``latest`` (live sources and files paced at their native fps): the newest frame replaces
  one the pipeline has not taken yet; the replaced frame is counted in ``dropped``.
- ``block`` (finite sources read with ``pace: fast``, for benchmarks): the thread waits until
  the pipeline took the previous frame, so every frame is processed.

What kind of source a string is, and whether it is live, is decided in
``edgeyolo.sources.kinds``. Finite sources (files, images, GStreamer pipelines such as
``filesrc ... ! decodebin`` or ``videotestsrc num-buffers=N``) end (``next()`` returns None)
unless they loop; a looping file seeks back, a looping pipeline is opened again. Live sources
(devices, network streams, pipelines starting with a camera element) that fail to open or stop
delivering are reopened with capped exponential backoff: ``reconnect.initial_s``, doubling up
to ``reconnect.max_s``, back to ``initial_s`` once a source delivered frames again; one log
line per attempt, naming the wait that follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import structlog

from edgeyolo.errors import SourceError
from edgeyolo.frames import Frame, as_bgr
from edgeyolo.sources.kinds import (
    NETWORK_KINDS,
    SourceKind,
    device_index,
    is_live,
    source_kind,
)
from edgeyolo.sources.opencv import no_gstreamer_message, opencv_info

if TYPE_CHECKING:
    import numpy.typing as npt

    from edgeyolo.config import CameraConfig
    from edgeyolo.sources.pool import FramePool

__all__ = ["CaptureSource", "SourceStats"]

URL_OPEN_TIMEOUT_MS = 10_000
URL_READ_TIMEOUT_MS = 5_000

_log = structlog.get_logger("edgeyolo.sources")


def _open_capture(source: int | str, kind: SourceKind) -> Any:
    if kind == "device":
        return cv2.VideoCapture(device_index(source))
    if kind == "gstreamer":
        return cv2.VideoCapture(source, cv2.CAP_GSTREAMER)
    if kind in NETWORK_KINDS:
        # Without timeouts a stalled network stream blocks read() forever and the reconnect
        # loop never runs.
        return cv2.VideoCapture(
            source,
            cv2.CAP_FFMPEG,
            [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                URL_OPEN_TIMEOUT_MS,
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                URL_READ_TIMEOUT_MS,
            ],
        )
    return cv2.VideoCapture(source)


def _describe(cap: Any) -> dict[str, Any]:
    """What an open capture says about itself, for the "source opened" line."""
    fps = cap.get(cv2.CAP_PROP_FPS)
    return {
        "backend": cap.getBackendName(),
        "width": int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
        "height": int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        "fps": round(fps, 3) if fps and fps > 0 else None,
    }


@dataclass
class SourceStats:
    """Counters of one source (read from the loop thread; written by the capture thread)."""

    captured: int = 0
    dropped: int = 0
    skipped: int = 0
    bad: int = 0
    reconnects: int = 0


class CaptureSource:
    """One camera's frames, captured in a thread, awaited on the loop with ``next()``."""

    def __init__(self, config: CameraConfig, *, loop_file: bool | None = None) -> None:
        self.config = config
        self.name = config.name
        self.kind: SourceKind = source_kind(config.source)
        self.live = is_live(config.source, config.live)
        self.loop_file = config.loop if loop_file is None else loop_file
        self.policy = "block" if (not self.live and config.pace == "fast") else "latest"
        self.stats = SourceStats()
        self._stop = threading.Event()
        self._taken = threading.Event()
        self._taken.set()
        self._thread: threading.Thread | None = None
        self._aloop: asyncio.AbstractEventLoop | None = None
        self._pending: Frame | None = None
        self._ended = False
        self._error: BaseException | None = None
        self._wakeup: asyncio.Event | None = None
        self._seq = 0
        self.native_fps: float | None = None
        # Buffers to decode into (set by the pipeline, e.g. pinned memory the GPU uploads
        # from in place; see sources/pool.py); None: a fresh array per frame.
        self.frame_pool: FramePool | None = None

    # -- loop side -------------------------------------------------------------------------
    async def start(self) -> None:
        """Check the source can open and start capturing.

        Raises ``SourceError`` now for what cannot get better by waiting: a missing or
        undecodable file, a finite pipeline that does not open, a GStreamer pipeline on an
        OpenCV built without GStreamer.
        """
        if self.kind in {"file", "image"}:
            path = Path(str(self.config.source))
            if not path.is_file():  # noqa: ASYNC240 - one stat() at start-up
                folder = path.is_dir()  # noqa: ASYNC240
                what = "a folder, not a video or image file" if folder else "no such file"
                raise SourceError(f"cameras[{self.name}].source: {what}: {path}")
        if self.kind == "gstreamer" and opencv_info().gstreamer is None:
            raise SourceError(f"cameras[{self.name}].source: {no_gstreamer_message()}")
        self._aloop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        opened = None
        if self.kind != "image" and not self.live:
            # Opening a file or a finite pipeline is quick and a failure is final: report it
            # before starting.
            opened = await self._aloop.run_in_executor(None, self._open_finite_checked)
        self._thread = threading.Thread(
            target=self._run, args=(opened,), name=f"capture-{self.name}", daemon=True
        )
        self._thread.start()

    async def next(self) -> Frame | None:
        """The next frame, or None when the source has ended (or was stopped)."""
        assert self._wakeup is not None, "start() first"
        while True:
            if self._error is not None:
                raise self._error
            frame = self._pending
            if frame is not None:
                self._pending = None
                self._taken.set()
                return frame
            if self._ended or self._stop.is_set():
                return None
            self._wakeup.clear()
            await self._wakeup.wait()

    def stop(self) -> None:
        """Ask the capture thread to finish; ``next()`` returns None at once (a thread stuck
        in OpenCV's open of a network camera is not waited for)."""
        self._stop.set()
        self._taken.set()
        if self._aloop is not None and self._wakeup is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                self._aloop.call_soon_threadsafe(self._wakeup.set)

    async def close(self, timeout: float = 5.0) -> None:
        """Stop and join the capture thread."""
        self.stop()
        thread = self._thread
        if thread is not None and thread.is_alive():
            await asyncio.get_running_loop().run_in_executor(None, thread.join, timeout)
            if thread.is_alive():
                _log.warning("capture thread did not stop in time", camera=self.name)

    def _deliver(self, frame: Frame | None, error: BaseException | None = None) -> None:
        # Runs on the loop thread (call_soon_threadsafe): the only writer of _pending.
        if error is not None:
            self._error = error
        elif frame is None:
            self._ended = True
        else:
            if self._pending is not None:
                self.stats.dropped += 1
            self._pending = frame
        assert self._wakeup is not None
        self._wakeup.set()

    # -- capture thread --------------------------------------------------------------------
    def _post(self, frame: Frame | None, error: BaseException | None = None) -> None:
        assert self._aloop is not None
        try:
            self._aloop.call_soon_threadsafe(self._deliver, frame, error)
        except RuntimeError:  # loop closed during shutdown
            self._stop.set()

    def _open_finite_checked(self) -> Any:
        cap = _open_capture(self.config.source, self.kind)
        if self.kind != "file":
            if not cap.isOpened():
                cap.release()
                raise SourceError(
                    f"cameras[{self.name}].source: OpenCV cannot open this {self.kind} "
                    f"source: {self.config.source} ({self._open_hint()})"
                )
            return cap
        ok, image = (False, None)
        if cap.isOpened():
            ok, image = cap.read()
        if not ok or image is None:
            cap.release()
            raise SourceError(
                f"cameras[{self.name}].source: OpenCV cannot decode video {self.config.source} "
                "(unsupported codec or not a video file)"
            )
        cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        return cap

    def _open_hint(self) -> str:
        if self.kind == "gstreamer":
            return (
                "try the pipeline with gst-launch-1.0, replacing appsink by fakesink; "
                "logging.level: debug shows OpenCV's own GStreamer messages"
            )
        if self.kind == "device":
            return "is the camera connected, and is the user in the video group?"
        return "is it reachable from here? logging.level: debug shows OpenCV's own messages"

    def _run(self, cap: Any) -> None:
        log = _log.bind(camera=self.name, source=str(self.config.source), kind=self.kind)
        try:
            if self.kind == "image":
                self._run_image(log)
            elif not self.live:
                self._run_finite(cap, log)
            else:
                self._run_live(log)
        except BaseException as exc:  # report on the loop, never die silently
            log.exception("capture failed")
            self._post(None, exc if isinstance(exc, SourceError) else SourceError(str(exc)))
        finally:
            self._post(None)

    def _emit(self, image: npt.NDArray[Any], log: Any) -> None:
        try:
            bgr = as_bgr(image)
        except SourceError as exc:
            self.stats.bad += 1
            if self.stats.bad in {1, 10, 100} or self.stats.bad % 1000 == 0:
                log.warning("unusable frame skipped", reason=str(exc), bad=self.stats.bad)
            return
        if self.policy == "block":
            while not self._taken.wait(0.1):
                if self._stop.is_set():
                    return
            if self._stop.is_set():
                # stop() sets _taken to wake us: the frame still pending is delivered, this
                # one is not (posting it would replace the pending one, a gap in the stream).
                return
            self._taken.clear()
        self._seq += 1
        self.stats.captured += 1
        self._post(Frame(self.name, self._seq, bgr, time.time(), time.monotonic_ns()))

    def _throttle(self) -> _Pacer:
        fps = self.config.fps
        if self.kind == "file" and self.config.pace == "native":
            fps = min(fps or 1e9, self.native_fps or 30.0)
        return _Pacer(fps, live=self.live)

    def _run_image(self, log: Any) -> None:
        image = cv2.imread(str(self.config.source), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise SourceError(
                f"cameras[{self.name}].source: cannot decode image {self.config.source}"
            )
        pacer = _Pacer(self.config.fps or (None if self.config.pace == "fast" else 1.0), live=False)
        log.info("source opened", live=False, width=image.shape[1], height=image.shape[0])
        while not self._stop.is_set():
            if pacer.admit(self._stop):
                self._emit(np.array(image), log)
            if not self.loop_file:
                return

    def _pump(self, cap: Any, log: Any) -> bool:
        """Read and deliver frames until the capture ends (False) or stop is asked (True)."""
        self.native_fps = cap.get(cv2.CAP_PROP_FPS) or None
        pacer = self._throttle()
        while not self._stop.is_set():
            ok, image = self._read(cap, log)
            if not ok:
                return False
            if pacer.admit(self._stop):
                self._emit(image, log)
            else:
                self.stats.skipped += 1
        return True

    def _read(self, cap: Any, log: Any) -> tuple[bool, Any]:
        """One frame, into a buffer of the frame pool when there is one of its size."""
        pool = self.frame_pool
        buf = pool.take() if pool is not None else None
        if buf is None:
            return cap.read()  # type: ignore[no-any-return]
        ok, image = cap.read(buf)
        if ok and image is not None and image is not buf:
            # OpenCV allocated instead: the frames are not of the pool's size (or type).
            assert pool is not None
            log.info(
                "frame pool not used: frames differ from its buffers",
                frame=list(getattr(image, "shape", ())),
                pool=list(pool.shape),
            )
            self.frame_pool = None
        return ok, image

    def _run_finite(self, cap: Any, log: Any) -> None:
        """A file or finite pipeline: to its end, then again from the start when looping."""
        what = "end of file" if self.kind == "file" else "end of stream"
        rounds = 0
        try:
            while True:
                rounds += 1
                if rounds == 1 or self.kind != "file":
                    log.info("source opened", live=False, loop=self.loop_file, **_describe(cap))
                before = self.stats.captured
                if self._pump(cap, log):
                    return
                delivered = self.stats.captured - before
                if not (self.loop_file and delivered > 0):
                    log.info(what, frames=self.stats.captured, rounds=rounds)
                    return
                log.debug("looping", frames=delivered)
                if self.kind == "file":
                    cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                else:  # a pipeline at end of stream cannot rewind: open it again
                    cap.release()
                    cap = _open_capture(self.config.source, self.kind)
                    if not cap.isOpened():
                        raise SourceError(
                            f"cameras[{self.name}].source: cannot open the pipeline again "
                            f"to loop it ({self._open_hint()})"
                        )
        finally:
            cap.release()

    def _run_live(self, log: Any) -> None:
        initial = self.config.reconnect.initial_s
        delay = initial
        attempt = 0
        while not self._stop.is_set():
            attempt += 1
            cap = _open_capture(self.config.source, self.kind)
            if cap.isOpened():
                log.info("source opened", live=True, attempt=attempt, **_describe(cap))
                before = self.stats.captured
                try:
                    if self._pump(cap, log):
                        return
                finally:
                    cap.release()
                delivered = self.stats.captured - before
                if delivered > 0:
                    # It delivered for a while: start the backoff afresh.
                    delay, attempt = initial, 0
                log.warning(
                    "source stopped delivering frames, reopening",
                    frames=delivered,
                    retry_in_s=delay,
                )
            else:
                cap.release()
                log.error(
                    "cannot open source, retrying",
                    attempt=attempt,
                    retry_in_s=delay,
                    hint=self._open_hint(),
                )
            self.stats.reconnects += 1
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, self.config.reconnect.max_s)


class _Pacer:
    """Limits frames to ``fps``: files sleep until their time, live sources skip early frames."""

    def __init__(self, fps: float | None, *, live: bool) -> None:
        self.period = 0.0 if not fps else 1.0 / fps
        self.live = live
        self.next_t = time.monotonic()

    def admit(self, stop: threading.Event) -> bool:
        if self.period == 0.0:
            return True
        now = time.monotonic()
        if self.live:
            if now < self.next_t:
                return False
            self.next_t = max(self.next_t + self.period, now)
            return True
        if now < self.next_t:
            stop.wait(self.next_t - now)
        # Falling behind (slow decode) does not make later frames burst.
        self.next_t = max(self.next_t + self.period, time.monotonic() - self.period)
        return True
