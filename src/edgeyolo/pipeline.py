"""Per-camera wiring: capture -> letterbox once per input shape -> all engines -> decode -> sinks.

Frames overlap: while frame N is in the engines, frame N+1 is awaited from the capture
thread and preprocessed into the other of two input slots. A slot is rewritten only after
the frame that used it has been fully processed, and each engine has at most one frame in
flight (its lock), so output buffers the engines reuse are never overwritten early.

Bounded queues: the capture hand-off holds one frame (latest wins, drops counted, see
``sources``), and at most one frame is in the engines while the next is prepared.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from edgeyolo.events import Detection, DetectionEvent, StatsEvent
from edgeyolo.postprocess import Detections, Thresholds, decode
from edgeyolo.preprocess import Preprocessor
from edgeyolo.telemetry import CameraTelemetry, FrameTimings

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy.typing as npt

    from edgeyolo.config import ModelConfig
    from edgeyolo.engines.base import Backend, Engine, InputSlot, TensorSpec
    from edgeyolo.frames import Frame, Letterbox
    from edgeyolo.metrics import Metrics
    from edgeyolo.sinks.base import Sink
    from edgeyolo.sources import CaptureSource

_ms = 1e-6  # ns -> ms


@dataclass
class ModelRunner:
    """One engine with its decode settings; shared by every camera that runs the model."""

    config: ModelConfig
    engine: Engine
    labels: list[str]
    thresholds: Thresholds
    failures: int = 0
    _lock: asyncio.Lock | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def lock(self) -> asyncio.Lock:
        # Created on first use so it belongs to the running loop.
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    def decode(self, raw: npt.NDArray[np.float32], letterbox: Letterbox) -> Detections:
        info = self.engine.info
        return decode(raw, letterbox, self.thresholds, info.num_classes, info.kpt_shape)

    def to_detections(self, dets: Detections) -> tuple[Detection, ...]:
        """Canonical arrays -> event objects (plain Python floats for JSON)."""
        boxes = dets.boxes.tolist()
        scores = dets.scores.tolist()
        ids = dets.class_ids.tolist()
        kpts = dets.keypoints.tolist() if dets.keypoints is not None else None
        labels = self.labels
        return tuple(
            Detection(
                box=tuple(boxes[i]),
                conf=scores[i],
                class_id=ids[i],
                label=labels[ids[i]] if ids[i] < len(labels) else str(ids[i]),
                keypoints=None if kpts is None else tuple(tuple(p) for p in kpts[i]),
            )
            for i in range(len(scores))
        )


@dataclass
class _SlotSet:
    """One input slot per distinct input spec, with the letterbox of the frame it holds."""

    slots: dict[TensorSpec, InputSlot]
    letterboxes: dict[TensorSpec, Letterbox] = field(default_factory=dict)


class CameraPipeline:
    """Runs one camera's frames through its models until the source ends or is stopped."""

    def __init__(
        self,
        source: CaptureSource,
        runners: list[ModelRunner],
        backend: Backend,
        sinks: list[Sink],
        telemetry: CameraTelemetry,
        *,
        max_frames: int | None = None,
        sequential: bool = False,
        metrics: Metrics | None = None,
    ) -> None:
        self.source = source
        self.camera = source.name
        self.runners = runners
        self.sinks = sinks
        self.telemetry = telemetry
        self.max_frames = max_frames
        self.sequential = sequential
        self.metrics = metrics
        # Called with each periodic StatsEvent (the service feeds systemd's STATUS from it).
        self.on_summary: Callable[[StatsEvent], None] | None = None
        self.log = structlog.get_logger("edgeyolo.pipeline").bind(camera=self.camera)
        specs = list(dict.fromkeys(r.engine.info.input for r in runners))
        self.preprocessors = {s: Preprocessor(*s.hw) for s in specs}
        # Two slot sets: frame N+1 is written while frame N is read.
        self._slotsets = [_SlotSet({s: backend.allocate_input(s) for s in specs}) for _ in range(2)]
        self.frames_done = 0
        self._dropped_reported = 0

    def close(self) -> None:
        """Release the input slots (reverse order of allocation)."""
        for ss in reversed(self._slotsets):
            for slot in reversed(list(ss.slots.values())):
                slot.close()

    async def run(self) -> None:
        """Process frames until the source ends, ``max_frames`` is reached, or cancellation."""
        inflight: asyncio.Task[None] | None = None
        n = 0
        try:
            while self.max_frames is None or n < self.max_frames:
                t0 = time.perf_counter_ns()
                frame = await self.source.next()
                if frame is None:
                    break
                timings = FrameTimings(
                    seq=frame.seq, capture_wait_ms=(time.perf_counter_ns() - t0) * _ms
                )
                if self.metrics is not None:
                    self._report_capture(timings.capture_wait_ms)
                ss = self._slotsets[n % 2]
                n += 1
                t1 = time.perf_counter_ns()
                for spec, slot in ss.slots.items():
                    ss.letterboxes[spec] = self.preprocessors[spec](frame.image, slot.host)
                    slot.commit()
                timings.preprocess_ms = (time.perf_counter_ns() - t1) * _ms
                if self.metrics is not None:
                    self.metrics.stage_seconds("preprocess", timings.preprocess_ms / 1e3)
                if inflight is not None:
                    await inflight
                inflight = asyncio.create_task(self._process(frame, ss, timings))
            if inflight is not None:
                await inflight
                inflight = None
        finally:
            if inflight is not None and not inflight.done():
                inflight.cancel()
                await asyncio.gather(inflight, return_exceptions=True)

    def _report_capture(self, wait_ms: float) -> None:
        assert self.metrics is not None
        self.metrics.frame_captured(self.camera)
        self.metrics.stage_seconds("capture_wait", wait_ms / 1e3)
        dropped = self.source.stats.dropped
        if dropped > self._dropped_reported:
            self.metrics.frames_dropped(self.camera, dropped - self._dropped_reported)
            self._dropped_reported = dropped

    async def _infer(self, runner: ModelRunner, ss: _SlotSet) -> tuple[Detections, float, float]:
        """Run one engine and decode its output: (detections, infer ms, decode ms).

        Decoding happens under the engine's lock: the raw output lives in a buffer the engine
        reuses (pinned memory on TensorRT), which another camera's frame may overwrite as soon
        as the lock is released. ``decode`` copies what it keeps.
        """
        spec = runner.engine.info.input
        async with runner.lock:
            t0 = time.perf_counter_ns()
            raw = await runner.engine.infer(ss.slots[spec])
            t1 = time.perf_counter_ns()
            dets = runner.decode(raw, ss.letterboxes[spec])
            return dets, (t1 - t0) * _ms, (time.perf_counter_ns() - t1) * _ms

    async def _process(self, frame: Frame, ss: _SlotSet, timings: FrameTimings) -> None:
        runners = self.runners
        t_infer = time.perf_counter_ns()
        if self.sequential:
            results: list[Any] = []
            for r in runners:
                try:
                    results.append(await self._infer(r, ss))
                except Exception as exc:  # isolated below like the concurrent path
                    results.append(exc)
        else:
            results = await asyncio.gather(
                *(self._infer(r, ss) for r in runners),
                return_exceptions=True,
            )
        # The infer stage includes each engine's decode, which overlaps the other engines.
        infer_s = (time.perf_counter_ns() - t_infer) * 1e-9
        events = []
        t_post = 0.0
        for runner, result in zip(runners, results, strict=True):
            if isinstance(result, BaseException):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                runner.failures += 1
                if self.metrics is not None:
                    self.metrics.engine_failed(runner.name)
                if runner.failures in {1, 10, 100} or runner.failures % 1000 == 0:
                    self.log.error(
                        "engine failed",
                        model=runner.name,
                        failures=runner.failures,
                        error=f"{type(result).__name__}: {result}",
                    )
                continue
            dets, infer_ms, decode_ms = result
            timings.infer_ms[runner.name] = infer_ms
            if self.metrics is not None:
                self.metrics.inference_seconds(runner.name, infer_ms / 1e3)
            t = time.perf_counter_ns()
            detections = runner.to_detections(dets)
            post_ms = decode_ms + (time.perf_counter_ns() - t) * _ms
            t_post += post_ms
            timings.post_ms[runner.name] = post_ms
            events.append(
                DetectionEvent(
                    camera=self.camera,
                    model=runner.name,
                    task=runner.config.task,
                    seq=frame.seq,
                    timestamp=frame.timestamp,
                    width=frame.width,
                    height=frame.height,
                    detections=detections,
                    latency_ms=(time.monotonic_ns() - frame.captured_ns) * _ms,
                )
            )
        t = time.perf_counter_ns()
        for ev in events:
            for sink in self.sinks:
                await sink.emit(ev)
        timings.emit_ms = (time.perf_counter_ns() - t) * _ms
        timings.e2e_ms = (time.monotonic_ns() - frame.captured_ns) * _ms
        self.frames_done += 1
        if self.metrics is not None:
            self.metrics.stage_seconds("infer", infer_s)
            self.metrics.stage_seconds("post", t_post / 1e3)
            self.metrics.stage_seconds("emit", timings.emit_ms / 1e3)
            self.metrics.e2e_seconds(self.camera, timings.e2e_ms / 1e3)
        self.telemetry.record(timings)
        if self.telemetry.due():
            stats = self.telemetry.summary(self.source.stats.dropped)
            for sink in self.sinks:
                await sink.emit(stats)
            if self.on_summary is not None:
                self.on_summary(stats)
