"""Stage latencies: one canonical log line per frame (sampled) and periodic summaries.

Field names are stable (docs/logging.md): the per-frame line is event ``frame`` with
``camera``, ``seq``, ``capture_wait_ms``, ``preprocess_ms``, ``infer_ms`` and ``post_ms``
(objects keyed by model), ``emit_ms``, ``e2e_ms``; the summary is event ``summary`` with
``camera``, ``fps``, ``frames``, ``dropped`` and ``stages`` (p50/p95/p99 per stage).
A camera with stages (a tracker, ...) also logs ``stages_ms``.

The pipeline reports each frame's ``FrameTimings`` once to its ``FrameObserver``s: the
camera's ``CameraTelemetry`` (log lines, summaries) and the service's ``Metrics``
(Prometheus) both observe the same report.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from edgeyolo.events import StatsEvent


@dataclass
class FrameTimings:
    """Milliseconds one frame spent in each stage."""

    seq: int
    capture_wait_ms: float = 0.0
    preprocess_ms: float = 0.0
    infer_ms: dict[str, float] = field(default_factory=dict)
    post_ms: dict[str, float] = field(default_factory=dict)
    emit_ms: float = 0.0
    e2e_ms: float = 0.0
    # Wall time of all engines together (they overlap), and of the camera's stages if any.
    infer_wall_ms: float = 0.0
    stages_ms: float | None = None
    # The source's dropped-frames total when this frame was taken.
    dropped: int = 0
    # Models whose inference raised on this frame.
    failed: list[str] = field(default_factory=list)

    def flat(self) -> dict[str, float]:
        """Stage name -> ms, models as ``infer.<model>`` and ``post.<model>``."""
        out = {
            "capture_wait": self.capture_wait_ms,
            "preprocess": self.preprocess_ms,
            "emit": self.emit_ms,
            "e2e": self.e2e_ms,
        }
        out.update({f"infer.{k}": v for k, v in self.infer_ms.items()})
        out.update({f"post.{k}": v for k, v in self.post_ms.items()})
        if self.stages_ms is not None:
            out["stages"] = self.stages_ms
        return out

    def log_fields(self) -> dict[str, Any]:
        r = 3
        fields = {
            "seq": self.seq,
            "capture_wait_ms": round(self.capture_wait_ms, r),
            "preprocess_ms": round(self.preprocess_ms, r),
            "infer_ms": {k: round(v, r) for k, v in self.infer_ms.items()},
            "post_ms": {k: round(v, r) for k, v in self.post_ms.items()},
            "emit_ms": round(self.emit_ms, r),
            "e2e_ms": round(self.e2e_ms, r),
        }
        if self.stages_ms is not None:
            fields["stages_ms"] = round(self.stages_ms, r)
        return fields


class FrameObserver(Protocol):
    """Something told once per processed frame how long each stage took."""

    def observe(self, camera: str, timings: FrameTimings) -> None: ...


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50/p95/p99 (and mean) of ``samples`` in ms, rounded."""
    a = np.asarray(samples, np.float64)
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {
        "p50": round(float(p50), 3),
        "p95": round(float(p95), 3),
        "p99": round(float(p99), 3),
        "mean": round(float(a.mean()), 3),
    }


class CameraTelemetry:
    """Collects one camera's frame timings; logs sampled frame lines and summaries."""

    def __init__(
        self, camera: str, log: Any, *, frame_sample: int = 1, summary_interval_s: float = 10.0
    ) -> None:
        self.camera = camera
        self._log = log
        self._sample = frame_sample
        self._interval = summary_interval_s
        self._window: dict[str, list[float]] = defaultdict(list)
        self._frames_in_window = 0
        self._window_start = time.monotonic()
        self.frames = 0
        self.all: list[FrameTimings] = []
        self.done_at: list[float] = []
        self.keep_all = False

    def observe(self, camera: str, timings: FrameTimings) -> None:
        """``FrameObserver``: record the frame (``camera`` is this telemetry's own)."""
        del camera
        self.record(timings)

    def record(self, t: FrameTimings) -> None:
        """Add one frame; log its line when it is sampled."""
        self.frames += 1
        self._frames_in_window += 1
        for k, v in t.flat().items():
            self._window[k].append(v)
        if self.keep_all:
            self.all.append(t)
            self.done_at.append(time.monotonic())
        if self._sample and self.frames % self._sample == 0:
            self._log.info("frame", **t.log_fields())

    def steady_s(self, skip: int) -> float:
        """Seconds from the end of frame ``skip`` to the end of the last kept frame."""
        if len(self.done_at) <= max(skip, 1):
            return 0.0
        return self.done_at[-1] - self.done_at[max(skip, 1) - 1]

    def due(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return now - self._window_start >= self._interval

    def summary(self, dropped: int, now: float | None = None) -> StatsEvent:
        """Log and return the summary of the window since the last one, and start a new one."""
        now = time.monotonic() if now is None else now
        elapsed = max(now - self._window_start, 1e-9)
        stages = {k: percentiles(v) for k, v in sorted(self._window.items()) if v}
        fps = self._frames_in_window / elapsed
        self._log.info(
            "summary", fps=round(fps, 2), frames=self.frames, dropped=dropped, stages=stages
        )
        ev = StatsEvent(self.camera, time.time(), fps, self.frames, dropped, stages)
        self._window.clear()
        self._frames_in_window = 0
        self._window_start = now
        return ev
