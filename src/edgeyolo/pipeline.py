"""Per-camera wiring: capture -> fill the input slots -> every model's runner -> stages -> sinks.

Frames overlap: while frame N is in the engines, frame N+1 is awaited from the capture
thread and letterboxed into the other of two slot sets; as soon as frame N's engines are
done (and decoded), frame N+1 goes into the engines while frame N runs its stages and sinks.
A slot set is refilled only after the frame that used it came out of the engines, and each
engine has at most one frame in flight (its runner's lock), so output buffers the engines
reuse are never overwritten early. Stages and sinks see frames in order.

When the backend offers a joint launch of all engines (TensorRT's CUDA graph per slot set,
``tensorrt.gpu.cuda_graph``), ``fill`` only stages the frame on the host and the engines run
as one launch (``runner.run_frame``), which releases them before the frame is decoded.

Bounded queues: the capture hand-off holds one frame (latest wins, drops counted, see
``sources``); per camera at most one frame is in the engines, one is being prepared and one
is in its stages and sinks.

Each frame's timings are reported once, as one ``FrameTimings``, to the camera's observers
(its ``CameraTelemetry`` first, then e.g. the service's Prometheus ``Metrics``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from edgeyolo.events import DetectionEvent
from edgeyolo.runner import run_frame, to_detections
from edgeyolo.stages import FrameResult, ModelOutput, finish_stages, run_stages
from edgeyolo.telemetry import FrameTimings

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from edgeyolo.engines.base import Backend, FrameLaunch, InputSlot, TensorSpec
    from edgeyolo.events import StatsEvent
    from edgeyolo.frames import Frame, Letterbox
    from edgeyolo.runner import ModelRunner
    from edgeyolo.sinks.base import Sink
    from edgeyolo.sources import CaptureSource
    from edgeyolo.stages import Stage
    from edgeyolo.telemetry import CameraTelemetry, FrameObserver

_ms = 1e-6  # ns -> ms


@dataclass
class _SlotSet:
    """One input slot per distinct input spec, with the letterbox of the frame it holds, and
    the backend's joint launch of all engines on these slots when it has one (a CUDA graph)."""

    slots: dict[TensorSpec, InputSlot]
    letterboxes: dict[TensorSpec, Letterbox] = field(default_factory=dict)
    launch: FrameLaunch | None = None

    def fill(self, image: Any) -> None:
        if self.launch is not None:
            self.letterboxes.update(self.launch.stage(image))
            return
        for spec, slot in self.slots.items():
            self.letterboxes[spec] = slot.fill(image)


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
        stages: Sequence[Stage] = (),
        observers: Sequence[FrameObserver] = (),
        max_frames: int | None = None,
        sequential: bool = False,
    ) -> None:
        self.source = source
        self.camera = source.name
        self.runners = runners
        self.sinks = sinks
        self.telemetry = telemetry
        self.stages = list(stages)
        self.observers: list[FrameObserver] = [telemetry, *observers]
        self.max_frames = max_frames
        self.sequential = sequential
        # Called with each periodic StatsEvent (the service feeds systemd's STATUS from it).
        self.on_summary: Callable[[StatsEvent], None] | None = None
        self.log = structlog.get_logger("edgeyolo.pipeline").bind(camera=self.camera)
        specs = list(dict.fromkeys(r.input_spec for r in runners))
        # Two slot sets: frame N+1 is written while frame N is read.
        self._slotsets: list[_SlotSet] = []
        try:
            for _ in range(2):
                self._slotsets.append(_SlotSet({}))
                for s in specs:
                    self._slotsets[-1].slots[s] = backend.allocate_input(s)
            # One launch per frame for all engines where the backend offers it (TensorRT's
            # CUDA graphs); each engine on its own otherwise.
            make = getattr(backend, "frame_launch", None)
            if make is not None and not sequential:
                engines = [r.engine for r in runners]
                locks = [r.lock for r in runners]
                for ss in self._slotsets:
                    ss.launch = make(ss.slots, engines, owner=self, locks=locks)
        except BaseException:
            self.close()
            raise
        self.frames_done = 0
        # Pinned buffers for the capture to decode into, offered by a backend that uploads
        # from them in place (TensorRT's GPU letterbox); set up at the first frame's size.
        self._frame_pool = getattr(backend, "frame_pool", None)
        if not hasattr(source, "frame_pool"):
            self._frame_pool = None
        # Batched models fill a batch with one frame per attached camera (edgeyolo.batching;
        # a batched launch counts its cameras itself).
        self._attached = True
        if not self._launched:
            for r in runners:
                r.attach()

    @property
    def _launched(self) -> bool:
        return any(ss.launch is not None for ss in getattr(self, "_slotsets", ()))

    def _detach(self) -> None:
        """This camera submits no more frames: batches stop waiting for it."""
        if getattr(self, "_attached", False):
            self._attached = False
            for ss in self._slotsets:
                if ss.launch is not None:
                    ss.launch.detach()
            if not self._launched:
                for r in self.runners:
                    r.detach()

    def close(self) -> None:
        """Release the stages, then the input slots (reverse order of allocation)."""
        self._detach()
        for stage in reversed(self.stages):
            stage.close()
        self.stages.clear()
        for ss in reversed(self._slotsets):
            if ss.launch is not None:
                ss.launch.close()
                ss.launch = None
            for slot in reversed(list(ss.slots.values())):
                slot.close()
        self._slotsets.clear()

    async def run(self) -> None:
        """Process frames until the source ends, ``max_frames`` is reached, or cancellation."""
        # Frames whose processing has started, oldest first (at most two: one in the engines,
        # one in its stages and sinks), and the event set when the newest left the engines.
        inflight: list[asyncio.Task[None]] = []
        inferred: asyncio.Event | None = None
        n = 0
        try:
            while self.max_frames is None or n < self.max_frames:
                t0 = time.perf_counter_ns()
                frame = await self.source.next()
                if frame is None:
                    break
                if self._frame_pool is not None:
                    self.source.frame_pool = self._frame_pool(tuple(frame.image.shape))
                    self._frame_pool = None
                timings = FrameTimings(
                    seq=frame.seq,
                    capture_wait_ms=(time.perf_counter_ns() - t0) * _ms,
                    dropped=self.source.stats.dropped,
                )
                ss = self._slotsets[n % 2]
                n += 1
                t1 = time.perf_counter_ns()
                ss.fill(frame.image)
                timings.preprocess_ms = (time.perf_counter_ns() - t1) * _ms
                if inferred is not None:
                    await inferred.wait()  # the previous frame is out of the engines
                while inflight and inflight[0].done():
                    inflight.pop(0).result()  # a frame that failed ends the camera
                inferred = asyncio.Event()
                prev = inflight[-1] if inflight else None
                inflight.append(
                    asyncio.create_task(self._process(frame, ss, timings, inferred, prev))
                )
                # Let that frame enter the engines before the next one is fetched and filled.
                await asyncio.sleep(0)
            while inflight:
                await inflight[0]
                inflight.pop(0)
            # A clean end: the stages' last events (a tracker ends its tracks) to the sinks.
            for ev in finish_stages(self.stages):
                for sink in self.sinks:
                    await sink.emit(ev)
        finally:
            self._detach()
            pending = [t for t in inflight if not t.done()]
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _infer_all(
        self, ss: _SlotSet, released: asyncio.Event
    ) -> list[ModelOutput | BaseException]:
        """Every model on the frame in ``ss``; ``released`` is set once the engines are free
        for the next frame (with a joint launch: before the outputs are decoded)."""
        if ss.launch is not None:
            return await run_frame(self.runners, ss.launch, ss.letterboxes, released)
        if not self.sequential:
            return await asyncio.gather(
                *(r.run(ss.slots, ss.letterboxes) for r in self.runners), return_exceptions=True
            )
        results: list[ModelOutput | BaseException] = []
        for r in self.runners:
            try:
                results.append(await r.run(ss.slots, ss.letterboxes))
            except Exception as exc:  # isolated below like the concurrent path
                results.append(exc)
        return results

    def _outputs(
        self, results: list[ModelOutput | BaseException], timings: FrameTimings
    ) -> list[ModelOutput]:
        """The outputs of the models that succeeded; failures are logged and reported."""
        outputs = []
        for runner, result in zip(self.runners, results, strict=True):
            if isinstance(result, BaseException):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                timings.failed.append(runner.name)
                if runner.should_log_failure():
                    self.log.error(
                        "engine failed",
                        model=runner.name,
                        failures=runner.failures,
                        error=f"{type(result).__name__}: {result}",
                    )
                continue
            timings.infer_ms[runner.name] = result.infer_ms
            outputs.append(result)
        return outputs

    async def _process(
        self,
        frame: Frame,
        ss: _SlotSet,
        timings: FrameTimings,
        inferred: asyncio.Event,
        prev: asyncio.Task[None] | None,
    ) -> None:
        """Engines and decode for ``frame`` (then ``inferred`` is set), then, after ``prev``
        (the camera's previous frame) has ended, its stages and sinks."""
        t_infer = time.perf_counter_ns()
        try:
            results = await self._infer_all(ss, inferred)
        finally:
            inferred.set()
        # The infer stage includes each engine's decode, which overlaps the other engines.
        timings.infer_wall_ms = (time.perf_counter_ns() - t_infer) * _ms
        outputs = self._outputs(results, timings)
        if prev is not None:
            # Stages (a tracker) and sinks see frames in order; a failure of prev is the run
            # loop's to raise.
            await asyncio.wait([prev])
        if self.stages:
            t = time.perf_counter_ns()
            result = run_stages(self.stages, FrameResult(self.camera, frame, outputs))
            timings.stages_ms = (time.perf_counter_ns() - t) * _ms
            outputs, extra = result.outputs, result.events
        else:
            extra = []
        events: list[Any] = []
        for out in outputs:
            t = time.perf_counter_ns()
            detections = to_detections(out.detections, out.labels)
            timings.post_ms[out.model] = out.decode_ms + (time.perf_counter_ns() - t) * _ms
            events.append(
                DetectionEvent(
                    camera=self.camera,
                    model=out.model,
                    task=out.task,
                    seq=frame.seq,
                    timestamp=frame.timestamp,
                    width=frame.width,
                    height=frame.height,
                    detections=detections,
                    latency_ms=(time.monotonic_ns() - frame.captured_ns) * _ms,
                    tracked=out.detections.track_ids is not None,
                )
            )
        events.extend(extra)
        t = time.perf_counter_ns()
        for ev in events:
            for sink in self.sinks:
                await sink.emit(ev)
        timings.emit_ms = (time.perf_counter_ns() - t) * _ms
        timings.e2e_ms = (time.monotonic_ns() - frame.captured_ns) * _ms
        self.frames_done += 1
        for observer in self.observers:
            observer.observe(self.camera, timings)
        if self.telemetry.due():
            stats = self.telemetry.summary(self.source.stats.dropped)
            for sink in self.sinks:
                await sink.emit(stats)
            if self.on_summary is not None:
                self.on_summary(stats)
