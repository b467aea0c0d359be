"""One model's inference, shared by every camera that runs it: engine, lock, decode, failures.

A runner is where inference is owned. Cameras call ``run`` with their filled input slots;
the runner holds the engine's lock for the engine call (at most one in flight), decodes the
output under that lock when the engine reuses its output buffer (after it otherwise, so the
engine can take the next frame meanwhile), and counts failures. A model with
``max_batch`` > 1 gathers several cameras' calls into one batched engine call without the
cameras noticing (``edgeyolo.batching``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from edgeyolo.batching import Batcher, BatchReport
from edgeyolo.engines.base import BatchEngine
from edgeyolo.engines.model import check_model
from edgeyolo.errors import ModelError
from edgeyolo.events import Detection
from edgeyolo.postprocess import Candidates, Detections, Thresholds, decode
from edgeyolo.stages import ModelOutput

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import numpy as np
    import numpy.typing as npt

    from edgeyolo.batching import BatchObserver
    from edgeyolo.config import ModelConfig
    from edgeyolo.engines.base import Backend, Engine, FrameLaunch, InputSlot, TensorSpec
    from edgeyolo.frames import Letterbox

_log = structlog.get_logger("edgeyolo.runner")
_ms = 1e-6  # ns -> ms


@dataclass
class ModelRunner:
    """One engine with its decode settings; shared by every camera that runs the model."""

    config: ModelConfig
    engine: Engine
    labels: list[str]
    thresholds: Thresholds
    failures: int = 0
    # Told about every engine call (batch size, waits); see ``edgeyolo.batching``.
    observers: list[BatchObserver] = field(default_factory=list)
    batcher: Batcher | None = field(default=None, repr=False)
    _lock: asyncio.Lock | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.config.max_batch > 1 and self.batcher is None:
            self.batcher = Batcher(self, self.config.max_batch, self.config.batch_timeout_ms)

    @classmethod
    def open(cls, backend: Backend, model: ModelConfig) -> ModelRunner:
        """Open ``model`` on ``backend``, check it against its config entry, and wrap it.

        The engine is closed again when the check fails, so a caller owns nothing on error.
        """
        start = time.perf_counter()
        engine = backend.open_engine(model)
        try:
            labels, class_ids = check_model(model, engine.info)
            _check_batching(model, engine, backend)
        except BaseException:
            engine.close()
            raise
        runner = cls(
            model, engine, labels, Thresholds(model.conf, model.iou, model.max_det, class_ids)
        )
        _log.info(
            "model loaded",
            model=model.name,
            path=str(model.path),
            task=engine.info.task,
            classes=engine.info.num_classes,
            input=list(engine.info.input.shape),
            max_batch=model.max_batch,
            load_ms=round((time.perf_counter() - start) * 1e3, 1),
        )
        return runner

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def input_spec(self) -> TensorSpec:
        """The input this runner's engine reads (cameras fill one slot per distinct spec)."""
        return self.engine.info.input

    @property
    def reported_labels(self) -> list[str]:
        """The labels this model can report: all of them, or the configured class filter's."""
        ids = self.thresholds.classes
        if ids is None:
            return list(self.labels)
        return [self.labels[int(i)] for i in ids]

    @property
    def lock(self) -> asyncio.Lock:
        # Created on first use so it belongs to the running loop.
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    def decode(
        self, raw: npt.NDArray[np.float32] | Candidates | Detections, letterbox: Letterbox
    ) -> Detections:
        """Raw engine output (or GPU-decoded candidates) of one frame -> source-pixel arrays."""
        info = self.engine.info
        return decode(raw, letterbox, self.thresholds, info.num_classes, info.kpt_shape)

    def output(self, dets: Detections, infer_ms: float, decode_ms: float) -> ModelOutput:
        return ModelOutput(
            model=self.name,
            task=self.config.task,
            labels=self.labels,
            detections=dets,
            infer_ms=infer_ms,
            decode_ms=decode_ms,
        )

    def report(self, report: BatchReport) -> None:
        """Tell the observers about one engine call."""
        for observer in self.observers:
            observer.observe_batch(report)

    def attach(self) -> None:
        """A camera will submit frames to this model (a batch is full at one per camera)."""
        if self.batcher is not None:
            self.batcher.attach()

    def detach(self) -> None:
        """A camera submits no more frames: batches stop waiting for it."""
        if self.batcher is not None:
            self.batcher.detach()

    async def run(
        self, slots: Mapping[TensorSpec, InputSlot], letterboxes: Mapping[TensorSpec, Letterbox]
    ) -> ModelOutput:
        """Run the engine on the camera's filled slot for its input spec, and decode.

        Decoding happens under the engine's lock when the raw output lives in a buffer the
        engine reuses (pinned memory on TensorRT's CPU decode), which the next frame may
        overwrite as soon as the lock is released; ``decode`` copies what it keeps. An output
        the caller owns (``Engine.output_owned``) is decoded after the lock is released. A
        failure is counted here and re-raised for the caller to isolate. With ``max_batch`` > 1
        the frame goes through the batcher, which does the same for a batch of cameras' frames.
        """
        spec = self.input_spec
        if self.batcher is not None:
            return await self.batcher.submit(slots[spec], letterboxes[spec])
        t_wait = time.perf_counter_ns()
        owned = self.engine.output_owned
        try:
            async with self.lock:
                t0 = time.perf_counter_ns()
                raw = await self.engine.infer(slots[spec])
                t1 = time.perf_counter_ns()
                if not owned:
                    dets = self.decode(raw, letterboxes[spec])
            # An output the caller owns is decoded after the lock is released: the engine
            # takes the next frame (another camera's, or this camera's next) meanwhile.
            if owned:
                dets = self.decode(raw, letterboxes[spec])
        except asyncio.CancelledError:
            raise
        except Exception:
            self.failures += 1
            self.report(
                BatchReport(
                    self.name, 1, ((time.perf_counter_ns() - t_wait) * _ms,), 0.0, 0.0, True
                )
            )
            raise
        t2 = time.perf_counter_ns()
        infer_ms, decode_ms = (t1 - t0) * _ms, (t2 - t1) * _ms
        self.report(BatchReport(self.name, 1, ((t0 - t_wait) * _ms,), infer_ms, decode_ms))
        return self.output(dets, infer_ms, decode_ms)

    def finish(
        self,
        raw: npt.NDArray[np.float32] | Candidates | Detections | BaseException,
        letterboxes: Mapping[TensorSpec, Letterbox],
        waited_ms: float,
        infer_ms: float,
        size: int = 1,
        reporter: bool = True,
    ) -> ModelOutput | BaseException:
        """Decode and report one engine result of a joint launch (``run_frame``); an
        exception is counted as a failure and returned for the caller to isolate.

        ``size``: frames in the engine call (several cameras' in a batched launch), reported
        by one of them only (``reporter``) so that each call is counted once.
        """
        waited = (waited_ms,)
        if isinstance(raw, BaseException):
            self.failures += 1
            if reporter:
                self.report(BatchReport(self.name, size, waited, 0.0, 0.0, True))
            return raw
        t_decode = time.perf_counter_ns()
        try:
            dets = self.decode(raw, letterboxes[self.input_spec])
        except Exception as exc:
            self.failures += 1
            if reporter:
                self.report(BatchReport(self.name, size, waited, 0.0, 0.0, True))
            return exc
        decode_ms = (time.perf_counter_ns() - t_decode) * _ms
        if reporter:
            self.report(BatchReport(self.name, size, waited, infer_ms, decode_ms))
        return self.output(dets, infer_ms, decode_ms)

    def should_log_failure(self) -> bool:
        """Log the 1st, 10th, 100th and every 1000th failure, not every frame's."""
        n = self.failures
        return n in {1, 10, 100} or n % 1000 == 0

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
        self.engine.close()


def _check_batching(model: ModelConfig, engine: Engine, backend: Backend) -> None:
    if model.max_batch > 1 and not isinstance(engine, BatchEngine):
        raise ModelError(
            f"models[{model.name}].max_batch is {model.max_batch}, but the {backend.name} "
            "backend runs one frame per call here; set max_batch: 1"
        )


def to_detections(dets: Detections, labels: Sequence[str]) -> tuple[Detection, ...]:
    """Canonical arrays -> event objects (plain Python floats for JSON)."""
    boxes = dets.boxes.tolist()
    scores = dets.scores.tolist()
    ids = dets.class_ids.tolist()
    kpts = dets.keypoints.tolist() if dets.keypoints is not None else None
    tids = dets.track_ids.tolist() if dets.track_ids is not None else None
    n_labels = len(labels)
    return tuple(
        Detection(
            box=tuple(boxes[i]),
            conf=scores[i],
            class_id=ids[i],
            label=labels[ids[i]] if ids[i] < n_labels else str(ids[i]),
            keypoints=None if kpts is None else tuple(tuple(p) for p in kpts[i]),
            track_id=None if tids is None or tids[i] < 0 else tids[i],
        )
        for i in range(len(scores))
    )


async def run_frame(
    runners: Sequence[ModelRunner],
    launch: FrameLaunch,
    letterboxes: Mapping[TensorSpec, Letterbox],
    released: asyncio.Event | None = None,
) -> list[ModelOutput | BaseException]:
    """Every runner's engine on the frame ``launch`` staged, as one launch (a CUDA graph).

    The launch holds the runners' locks while it uses the engines (a batched launch for
    several cameras takes them once per batch) and returns outputs that are ours, so the
    engines are free for the next frame (``released`` is set) before this one is decoded.
    Per runner: its output, or the exception (counted as its failure).
    """
    # The frame's own letterboxes: the slot set's are replaced by the frame after next, which
    # may be staged before this one's decodes (after ``released``).
    letterboxes = dict(letterboxes)
    try:
        raws = await launch.infer([r.lock for r in runners])
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the launch itself failed: every engine in it did
        raws = [exc] * len(runners)
    # The wait for the locks (and for the other cameras of a batch), then the engines.
    waited_ms, infer_ms = launch.lock_wait_ms, launch.last_infer_ms
    if released is not None:
        released.set()
        # Let the next frame's launch go first (the GPU would idle through these decodes):
        # the first yield lets the pipeline's loop wake and create the next frame's task, the
        # second lets that task launch (asyncio runs ready callbacks in FIFO order).
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    size, reporter = launch.last_batch
    return [
        runner.finish(raw, letterboxes, waited_ms, infer_ms, size, reporter)
        for runner, raw in zip(runners, raws, strict=True)
    ]


def open_runners(backend: Backend, models: list[ModelConfig]) -> list[ModelRunner]:
    """Open every model once (in config order); on failure close what was opened."""
    runners: list[ModelRunner] = []
    try:
        for m in models:
            # One at a time, so the ones opened before a failure are closed below.
            runners.append(ModelRunner.open(backend, m))  # noqa: PERF401
    except BaseException:
        for r in reversed(runners):
            r.close()
        raise
    return runners
