"""CameraPipeline's promises, in milliseconds: overlap, latest-wins drops, isolation, stages.

Fakes at the boundaries only: a source that hands over synthetic frames, engines that sleep
like a GPU and read the slot they were given, a sink that records. The pipeline, runners,
slots (the real CPU letterbox), decode, stages and telemetry under test are the real ones.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest
import structlog

from edgeyolo.config import ModelConfig
from edgeyolo.engines.base import ModelInfo, TensorSpec
from edgeyolo.engines.onnxruntime import HostInputSlot
from edgeyolo.frames import Frame
from edgeyolo.pipeline import CameraPipeline
from edgeyolo.runner import ModelRunner
from edgeyolo.sources.capture import SourceStats
from edgeyolo.stages import FrameResult
from edgeyolo.telemetry import CameraTelemetry

SIDE = 64
INPUT = TensorSpec("images", (1, 3, SIDE, SIDE), np.dtype(np.float32))
ANCHORS = 8


def value(seq: int) -> int:
    """The grey level of frame ``seq`` (20..49: the fake engine's box stays inside the frame)."""
    return 20 + seq % 30


def grey(seq: int) -> np.ndarray:
    """A frame whose every pixel encodes its sequence number."""
    return np.full((SIDE, SIDE, 3), value(seq), np.uint8)


class FakeSource:
    """Hands frames to the pipeline like CaptureSource: latest wins, replaced ones counted.

    With ``interval_s`` a producer task delivers a frame every interval whether or not the
    pipeline took the last one; without it every frame waits for the pipeline (pace: fast).
    """

    def __init__(self, n: int, interval_s: float | None = None) -> None:
        self.name = "cam"
        self.stats = SourceStats()
        self.n = n
        self.interval_s = interval_s
        self.taken: list[tuple[int, float]] = []
        self._next = 1
        self._slot: Frame | None = None
        self._ready = asyncio.Event()
        self._ended = False
        self._producer: asyncio.Task[None] | None = None

    def _frame(self, seq: int) -> Frame:
        return Frame("cam", seq, grey(seq), time.time(), time.monotonic_ns())

    async def _produce(self) -> None:
        for seq in range(1, self.n + 1):
            if self._slot is not None:
                self.stats.dropped += 1  # the pipeline was busy: latest wins
            self._slot = self._frame(seq)
            self.stats.captured += 1
            self._ready.set()
            await asyncio.sleep(self.interval_s or 0)
        self._ended = True
        self._ready.set()

    async def next(self) -> Frame | None:
        if self.interval_s is None:
            if self._next > self.n:
                return None
            frame = self._frame(self._next)
            self._next += 1
        else:
            if self._producer is None:
                self._producer = asyncio.create_task(self._produce())
            while self._slot is None:
                if self._ended:
                    return None
                self._ready.clear()
                await self._ready.wait()
            frame, self._slot = self._slot, None
        self.taken.append((frame.seq, time.perf_counter()))
        return frame


class FakeEngine:
    """Sleeps like a GPU; reports one box whose x centre is the grey value it read.

    Its output is one array it rewrites every call, like TensorRT's pinned output buffer.
    """

    output_owned = False

    def __init__(self, name: str, delay_s: float, log: list, fail: bool = False) -> None:
        self.name = name
        self.delay_s = delay_s
        self.log = log
        self.fail = fail
        self.info = ModelInfo(
            Path(f"{name}.onnx"),
            "detect",
            INPUT,
            TensorSpec("output0", (1, 5, ANCHORS), np.dtype(np.float32)),
            names={0: "thing"},
        )
        self.out = np.zeros((1, 5, ANCHORS), np.float32)
        self.cancelled = 0
        self.started = asyncio.Event()

    async def infer(self, slot) -> np.ndarray:
        value = float(slot.host.mean()) * 255
        self.log.append(("start", self.name, round(value), time.perf_counter()))
        self.started.set()
        try:
            await asyncio.sleep(self.delay_s)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.fail:
            raise RuntimeError("device lost")
        # The slot must still hold the frame it held when the engine started.
        assert float(slot.host.mean()) * 255 == pytest.approx(value, abs=1e-3)
        self.out[0, :, 0] = (round(value), 32.0, 10.0, 10.0, 0.9)
        self.log.append(("end", self.name, round(value), time.perf_counter()))
        return self.out

    def close(self) -> None: ...


class FakeBackend:
    """Hands out real host slots (the CPU letterbox) and the fake engines."""

    name = "fake"

    def __init__(self, engines: dict[str, FakeEngine]) -> None:
        self.engines = engines

    def open_engine(self, model: ModelConfig) -> FakeEngine:
        return self.engines[model.name]

    def allocate_input(self, spec: TensorSpec) -> HostInputSlot:
        return HostInputSlot(spec)

    def close(self) -> None: ...


class Record:
    """Sink + frame observer that keeps everything it is given (``delay_s``: a slow sink)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.events: list = []
        self.timings: list = []
        self.delay_s = delay_s
        self.emitted: list[tuple[int, float]] = []

    async def start(self) -> None: ...

    async def emit(self, event) -> None:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        self.events.append(event)
        self.emitted.append((getattr(event, "seq", -1), time.perf_counter()))

    async def close(self) -> None: ...

    def observe(self, camera, timings) -> None:
        self.timings.append((camera, timings))


def make(source, engines, stages=(), sequential=False, sink_delay_s=0.0):
    backend = FakeBackend(engines)
    runners = [
        ModelRunner.open(backend, ModelConfig(name=n, path=Path(f"{n}.onnx"), task="detect"))
        for n in engines
    ]
    rec = Record(sink_delay_s)
    tel = CameraTelemetry("cam", structlog.get_logger(), frame_sample=0, summary_interval_s=3600)
    pipeline = CameraPipeline(
        source, runners, backend, [rec], tel, stages=stages, observers=[rec], sequential=sequential
    )
    return pipeline, runners, rec


def detections(rec: Record, model: str) -> list[tuple[int, float]]:
    """(seq, box x centre) of every detection event of ``model``."""
    out = []
    for e in rec.events:
        if getattr(e, "model", None) == model:
            (d,) = e.detections
            out.append((e.seq, (d.box[0] + d.box[2]) / 2))
    return out


def test_next_frame_is_prepared_while_the_engines_run():
    """Frame N+1 is taken and letterboxed before frame N's inference ends; nothing is lost."""
    log: list = []
    engines = {"a": FakeEngine("a", 0.01, log), "b": FakeEngine("b", 0.01, log)}
    source = FakeSource(8)
    pipeline, _, rec = make(source, engines)
    asyncio.run(pipeline.run())
    assert pipeline.frames_done == 8
    for model in ("a", "b"):
        # Every frame's box comes from its own pixels: no slot was overwritten under it.
        assert detections(rec, model) == [(s, value(s)) for s in range(1, 9)]
    ends = {v: t for kind, name, v, t in log if kind == "end" and name == "a"}
    taken = dict(source.taken)
    overlapped = [s for s in range(2, 9) if taken[s] < ends[value(s - 1)]]
    assert overlapped == list(range(2, 9))
    # Both models of a frame run at the same time (concurrent, not one after the other).
    starts = [(n, v, t) for kind, n, v, t in log if kind == "start"]
    first_b = next(t for n, v, t in starts if n == "b" and v == value(1))
    first_a_end = ends[value(1)]
    assert first_b < first_a_end


def test_engines_take_the_next_frame_while_sinks_emit_the_last():
    """Frame N+1 enters the engines before frame N's (slow) sink is done; order is kept."""
    log: list = []
    pipeline, _, rec = make(FakeSource(6), {"a": FakeEngine("a", 0.005, log)}, sink_delay_s=0.02)
    asyncio.run(pipeline.run())
    assert detections(rec, "a") == [(s, value(s)) for s in range(1, 7)]
    starts = {v: t for kind, _, v, t in log if kind == "start"}
    emitted = dict(rec.emitted)
    assert all(starts[value(s + 1)] < emitted[s] for s in range(1, 6))
    # Never more than one frame in the engine: each start follows the previous end.
    kinds = [k for k, _, _, _ in log]
    assert kinds == ["start", "end"] * 6


def test_sequential_runs_models_one_after_the_other():
    """--sequential: the second model starts only after the first one ended."""
    log: list = []
    engines = {"a": FakeEngine("a", 0.005, log), "b": FakeEngine("b", 0.005, log)}
    pipeline, _, rec = make(FakeSource(3), engines, sequential=True)
    asyncio.run(pipeline.run())
    assert [(k, n) for k, n, _, _ in log[:4]] == [
        ("start", "a"),
        ("end", "a"),
        ("start", "b"),
        ("end", "b"),
    ]
    assert detections(rec, "b") == [(1, value(1)), (2, value(2)), (3, value(3))]


def test_busy_pipeline_takes_the_latest_frame_and_reports_drops():
    """A source faster than the engines: newer frames replace old ones; drops reach observers."""
    log: list = []
    source = FakeSource(40, interval_s=0.002)
    pipeline, _, rec = make(source, {"a": FakeEngine("a", 0.012, log)})
    asyncio.run(pipeline.run())
    seqs = [s for s, _ in detections(rec, "a")]
    assert seqs == sorted(seqs)
    assert len(seqs) < 40
    assert len(seqs) + source.stats.dropped == 40
    # Each frame report carries the drops counted when that frame was taken.
    reported = [t.dropped for _, t in rec.timings]
    assert reported == sorted(reported)
    assert 0 < reported[-1] <= source.stats.dropped
    # Every processed frame still carries its own pixels.
    assert all(x == value(s) for s, x in detections(rec, "a"))


def test_failing_engine_is_isolated_and_counted():
    """One engine raising on every frame: the other's events go on, failures are reported."""
    log: list = []
    engines = {"ok": FakeEngine("ok", 0.001, log), "bad": FakeEngine("bad", 0.001, log, True)}
    pipeline, runners, rec = make(FakeSource(5), engines)
    with structlog.testing.capture_logs() as logs:
        asyncio.run(pipeline.run())
    assert [s for s, _ in detections(rec, "ok")] == [1, 2, 3, 4, 5]
    assert not [e for e in rec.events if getattr(e, "model", None) == "bad"]
    assert {r.name: r.failures for r in runners} == {"ok": 0, "bad": 5}
    assert [t.failed for _, t in rec.timings] == [["bad"]] * 5
    errors = [x for x in logs if x["event"] == "engine failed"]
    assert len(errors) == 1  # the 1st failure is logged, not every frame's
    assert errors[0]["model"] == "bad"
    assert "RuntimeError: device lost" in errors[0]["error"]


def test_cancellation_stops_in_flight_inference():
    """Cancelling the camera cancels the frame in the engines; run() returns promptly."""
    log: list = []
    engine = FakeEngine("slow", 5.0, log)

    async def main() -> float:
        pipeline, _, _ = make(FakeSource(100), {"slow": engine})
        task = asyncio.create_task(pipeline.run())
        await engine.started.wait()
        t = time.perf_counter()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.perf_counter() - t

    elapsed = asyncio.run(main())
    assert engine.cancelled == 1
    assert elapsed < 1.0  # far below the engine's 5 s


def test_stages_run_in_order_and_shape_the_events():
    """Stages see each frame's outputs in order, may change them and add their own events."""
    calls: list[tuple[str, int]] = []

    class Tag:
        def __init__(self, name: str) -> None:
            self.name = name
            self.closed = False

        def __call__(self, result: FrameResult) -> FrameResult:
            calls.append((self.name, result.frame.seq))
            if self.name == "first":
                # Keep only model "a" on even frames.
                if result.frame.seq % 2 == 0:
                    result.outputs = [o for o in result.outputs if o.model == "a"]
            else:
                result.events.append(("extra", result.frame.seq, [o.model for o in result.outputs]))
            return result

        def close(self) -> None:
            self.closed = True

    log: list = []
    engines = {"a": FakeEngine("a", 0.001, log), "b": FakeEngine("b", 0.001, log)}
    stages = [Tag("first"), Tag("second")]
    pipeline, _, rec = make(FakeSource(3), engines, stages=stages)
    asyncio.run(pipeline.run())
    pipeline.close()
    assert calls == [
        ("first", 1),
        ("second", 1),
        ("first", 2),
        ("second", 2),
        ("first", 3),
        ("second", 3),
    ]
    kinds = [(e[0], e[1]) if isinstance(e, tuple) else (e.model, e.seq) for e in rec.events]
    assert kinds == [
        ("a", 1),
        ("b", 1),
        ("extra", 1),
        ("a", 2),
        ("extra", 2),
        ("a", 3),
        ("b", 3),
        ("extra", 3),
    ]
    assert [e[2] for e in rec.events if isinstance(e, tuple)] == [["a", "b"], ["a"], ["a", "b"]]
    assert all(s.closed for s in stages)
    assert all(t.stages_ms is not None for _, t in rec.timings)
