"""Frame sources: OpenCV capture in a dedicated thread per camera.

The capture thread owns the ``cv2.VideoCapture`` (blocking reads never touch the event
loop) and hands frames to the loop through ``call_soon_threadsafe``. Two delivery policies:

- ``latest`` (live sources and files paced at their native fps): the newest frame replaces
  one the pipeline has not taken yet; the replaced frame is counted in ``dropped``.
- ``block`` (files read with ``pace: fast``, for benchmarks): the thread waits until the
  pipeline took the previous frame, so every frame of the file is processed.

End of a file ends the source (``next()`` returns None) unless it loops. Live sources that
fail to open or stop delivering are reopened with capped exponential backoff, one log line
per attempt.
"""

from __future__ import annotations

import asyncio
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
from edgeyolo.sources.files import IMAGE_SUFFIXES

if TYPE_CHECKING:
    import numpy.typing as npt

    from edgeyolo.config import CameraConfig

VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".h264"}

URL_OPEN_TIMEOUT_MS = 10_000
URL_READ_TIMEOUT_MS = 5_000

_log = structlog.get_logger("edgeyolo.sources")


def classify(source: int | str) -> str:
    """Kind of a configured source: device, image, file, url or gstreamer."""
    if isinstance(source, int) or (isinstance(source, str) and source.isdigit()):
        return "device"
    if source.startswith("/dev/"):
        return "device"
    if "://" in source:
        return "url"
    if "!" in source and "appsink" in source:
        return "gstreamer"
    if Path(source).suffix.lower() in IMAGE_SUFFIXES:
        return "image"
    return "file"


def _open_capture(source: int | str, kind: str) -> Any:
    if kind == "device":
        return cv2.VideoCapture(int(source) if str(source).isdigit() else source)
    if kind == "gstreamer":
        return cv2.VideoCapture(source, cv2.CAP_GSTREAMER)
    if kind == "url":
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
        self.kind = classify(config.source)
        self.loop_file = config.loop if loop_file is None else loop_file
        live = self.kind in {"device", "url", "gstreamer"}
        self.policy = "block" if (not live and config.pace == "fast") else "latest"
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

    # -- loop side -------------------------------------------------------------------------
    async def start(self) -> None:
        """Check the source opens (files: fail now with a clear error) and start capturing."""
        if self.kind in {"file", "image"}:
            path = Path(str(self.config.source))
            if not path.is_file():  # noqa: ASYNC240 - one stat() at start-up
                raise SourceError(f"cameras[{self.name}].source: no such file: {path}")
        self._aloop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        opened = None
        if self.kind == "file":
            # Opening a file is quick and a failure is final: report it before starting.
            opened = await self._aloop.run_in_executor(None, self._open_file_checked)
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
            if self._ended:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()

    def stop(self) -> None:
        """Ask the capture thread to finish; ``next()`` then returns None."""
        self._stop.set()
        self._taken.set()

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

    def _open_file_checked(self) -> Any:
        cap = _open_capture(str(self.config.source), "file")
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

    def _run(self, cap: Any) -> None:
        log = _log.bind(camera=self.name, source=str(self.config.source))
        try:
            if self.kind == "image":
                self._run_image(log)
            elif self.kind == "file":
                self._run_file(cap, log)
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
            self._taken.clear()
        self._seq += 1
        self.stats.captured += 1
        self._post(Frame(self.name, self._seq, bgr, time.time(), time.monotonic_ns()))

    def _throttle(self) -> _Pacer:
        fps = self.config.fps
        if self.kind == "file" and self.config.pace == "native":
            fps = min(fps or 1e9, self.native_fps or 30.0)
        return _Pacer(fps, live=self.kind in {"device", "url", "gstreamer"})

    def _run_image(self, log: Any) -> None:
        image = cv2.imread(str(self.config.source), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise SourceError(
                f"cameras[{self.name}].source: cannot decode image {self.config.source}"
            )
        pacer = _Pacer(self.config.fps or (None if self.config.pace == "fast" else 1.0), live=False)
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
            ok, image = cap.read()
            if not ok:
                return False
            if pacer.admit(self._stop):
                self._emit(image, log)
            else:
                self.stats.skipped += 1
        return True

    def _run_file(self, cap: Any, log: Any) -> None:
        try:
            while not self._pump(cap, log):
                if not (self.loop_file and self.stats.captured > 0):
                    log.info("end of file", frames=self.stats.captured)
                    return
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                log.debug("looping file")
        finally:
            cap.release()

    def _run_live(self, log: Any) -> None:
        delay = self.config.reconnect.initial_s
        attempt = 0
        while not self._stop.is_set():
            attempt += 1
            cap = _open_capture(self.config.source, self.kind)
            if cap.isOpened():
                log.info("source opened", attempt=attempt)
                captured = self.stats.captured
                try:
                    if self._pump(cap, log):
                        return
                finally:
                    cap.release()
                log.warning("source stopped delivering frames, reopening", retry_in_s=delay)
                if self.stats.captured > captured:
                    # It delivered for a while: start the backoff afresh.
                    delay, attempt = self.config.reconnect.initial_s, 0
            else:
                cap.release()
                log.error("cannot open source, retrying", attempt=attempt, retry_in_s=delay)
            self.stats.reconnects += 1
            self._stop.wait(delay)
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
