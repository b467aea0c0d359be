"""Several cameras, one engine call: the per-model batcher behind ``ModelRunner.run``.

A model configured with ``max_batch`` > 1 gets a ``Batcher``. Each camera's ``run`` submits
its filled input slot and letterbox and awaits its own ``ModelOutput``; the cameras do not
know about each other. One dispatcher task per model collects the submissions and runs a
batch when

- ``target`` frames are waiting: ``max_batch``, or fewer when fewer cameras are attached to
  the model (a camera attaches when its pipeline is built and detaches when it ends), or
- ``batch_timeout_ms`` has passed since the oldest waiting frame arrived; or, if that
  timeout ran out while the previous call was still running, since that call finished.

The second clock matters when the engine is the bottleneck: frames that queued behind a long
call would all be overdue when it ends, and the cameras of that call (whose next frames come
a few milliseconds after their results) would always miss the next call: four cameras would
settle into batches of 3 + 1 for good. Counting from the end of the call gives them
``batch_timeout_ms`` to join, and the batches fill again. It applies only to a frame the
running call held up past its own timeout: a frame that arrives during a call shorter than
the timeout keeps its own clock, so paced cameras in different phases wait at most
``batch_timeout_ms``, not that plus the call.

A batch is ONE ``engine.infer_batch`` call (the engine copies each slot into its batch input
before it suspends), then one decode per batch index, under the runner's lock (the raw output
lives in a buffer the engine reuses). Each camera's future gets its own result.

Isolation: a camera that stalls or ends never blocks the others for longer than the timeout
(it simply submits nothing). A failing engine call fails every frame in it: each camera's call
raises and each frame is counted as a failure of the model, like a failing engine today. A
failing decode fails only that camera's frame. A camera whose call is cancelled before its
batch runs is taken out of the queue; cancelled while its batch runs, the batch goes on and
only its result is dropped.

Each engine call is reported once, as a ``BatchReport``, to the runner's ``BatchObserver``s
(``BatchTelemetry`` for the log summary, the service's Prometheus ``Metrics``); batch-1 models
report too (size 1, the wait for the engine's lock), so both paths show calls per second.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import structlog

from edgeyolo.engines.base import BatchEngine

if TYPE_CHECKING:
    from edgeyolo.engines.base import InputSlot
    from edgeyolo.frames import Letterbox
    from edgeyolo.runner import ModelRunner
    from edgeyolo.stages import ModelOutput

_ms = 1e-6  # ns -> ms
# asyncio's timers fire up to a millisecond late (the selector's timeout is rounded up to
# whole milliseconds): a batch is woken this much (at most a tenth of the timeout) before its
# deadline, so that it starts by the deadline rather than after it (H200, paced cameras:
# batcher wait p99 11.2 ms against a 10 ms timeout before).
_TIMER_LATE_S = 1e-3


@dataclass(frozen=True, slots=True)
class BatchReport:
    """One engine call of one model: how many frames, how long each waited, how long it ran."""

    model: str
    size: int
    waited_ms: tuple[float, ...]  # per frame: submitted -> its engine call started
    infer_ms: float
    decode_ms: float  # every frame of the batch together
    failed: bool = False


class BatchObserver(Protocol):
    """Something told once per engine call of a model what the call was."""

    def observe_batch(self, report: BatchReport) -> None: ...


@dataclass(eq=False, slots=True)
class _Request:
    slot: InputSlot
    letterbox: Letterbox
    future: asyncio.Future[ModelOutput]
    submitted_ns: int


class _Queued(Protocol):
    """What a ``BatchQueue`` holds: a request with its caller's future and arrival time."""

    future: asyncio.Future[Any]
    submitted_ns: int


Q = TypeVar("Q", bound=_Queued)


class BatchQueue(Generic[Q]):
    """Requests gathered into batches by one dispatcher task (the rules are the module's):
    a batch of up to ``max_batch`` runs when ``target`` requests wait, or ``timeout_ms`` after
    the oldest arrived (after the previous batch ended, if the oldest's timeout ran out while
    that batch ran). Subclasses say what a full batch is (``target``) and run one (``_run``);
    a caller's future always ends."""

    def __init__(self, max_batch: int, timeout_ms: float, name: str) -> None:
        self.max_batch = max_batch
        self.timeout_s = timeout_ms / 1e3
        self._timeout_ns = int(timeout_ms * 1e6)
        self._name = name
        self._pending: list[Q] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._free_ns = 0  # when the previous batch finished

    @property
    def target(self) -> int:
        raise NotImplementedError

    @property
    def waiting(self) -> int:
        """Requests queued and not yet in a batch."""
        return len(self._pending)

    def _queue(self, req: Q) -> None:
        self._pending.append(req)
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._dispatch(), name=self._name)
        self._poke()

    def _withdraw(self, req: Q) -> None:
        """A request whose caller was cancelled before its batch ran leaves the queue."""
        with contextlib.suppress(ValueError):
            self._pending.remove(req)

    def _poke(self) -> None:
        if self._wake is not None and len(self._pending) >= self.target:
            self._wake.set()

    async def _dispatch(self) -> None:
        batch: list[Q] = []
        try:
            while self._pending:
                if len(self._pending) < self.target:
                    since = self._pending[0].submitted_ns
                    if since + self._timeout_ns < self._free_ns:
                        since = self._free_ns  # held up by the previous call: rejoin time
                    left = self.timeout_s - (time.perf_counter_ns() - since) * 1e-9
                    left -= min(_TIMER_LATE_S, self.timeout_s / 10)
                    if left > 0:
                        assert self._wake is not None
                        self._wake.clear()
                        with contextlib.suppress(asyncio.TimeoutError):
                            await asyncio.wait_for(self._wake.wait(), left)
                        continue  # look again: requests came, were cancelled, or time is up
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                await self._run(batch)
                batch = []
                self._free_ns = time.perf_counter_ns()
        except BaseException as exc:
            # Cancelled (shutdown) or a bug: nobody may wait forever for a result.
            for req in (*batch, *self._pending):
                if not req.future.done():
                    if isinstance(exc, asyncio.CancelledError):
                        req.future.cancel()
                    else:
                        req.future.set_exception(exc)
            self._pending.clear()
            raise

    async def _run(self, batch: list[Q]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop the dispatcher (the loop is ending); waiting callers are cancelled."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task = None


class Batcher(BatchQueue[_Request]):
    """Gathers one model's frames from several cameras into batched engine calls."""

    def __init__(self, runner: ModelRunner, max_batch: int, timeout_ms: float) -> None:
        super().__init__(max_batch, timeout_ms, f"batcher-{runner.name}")
        self.runner = runner
        self.members = 0

    @property
    def target(self) -> int:
        """Frames that make a batch full: ``max_batch``, or the attached cameras if fewer."""
        return max(1, min(self.max_batch, self.members or self.max_batch))

    def attach(self) -> None:
        self.members += 1

    def detach(self) -> None:
        self.members = max(0, self.members - 1)
        self._poke()

    async def submit(self, slot: InputSlot, letterbox: Letterbox) -> ModelOutput:
        """Queue one camera's filled slot; returns that frame's output once its batch ran."""
        loop = asyncio.get_running_loop()
        req = _Request(slot, letterbox, loop.create_future(), time.perf_counter_ns())
        self._queue(req)
        try:
            return await req.future
        except asyncio.CancelledError:
            # Not dispatched yet: leave the queue. Dispatched: the batch goes on without us.
            self._withdraw(req)
            raise

    async def _run(self, batch: list[_Request]) -> None:
        runner = self.runner
        live = [r for r in batch if not r.future.done()]
        if not live:
            return
        async with runner.lock:
            t0 = time.perf_counter_ns()
            waited = tuple((t0 - r.submitted_ns) * _ms for r in live)
            try:
                engine = runner.engine
                assert isinstance(engine, BatchEngine)  # ModelRunner.open checked it
                raw = await engine.infer_batch([r.slot for r in live])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                runner.failures += len(live)
                for r in live:
                    if not r.future.done():
                        r.future.set_exception(exc)
                runner.report(BatchReport(runner.name, len(live), waited, 0.0, 0.0, failed=True))
                return
            t1 = time.perf_counter_ns()
            infer_ms = (t1 - t0) * _ms
            results: list[tuple[_Request, Any]] = []
            for i, r in enumerate(live):
                if r.future.done():  # cancelled while the engine ran
                    continue
                td = time.perf_counter_ns()
                try:
                    dets = runner.decode(raw[i], r.letterbox)
                except Exception as exc:
                    runner.failures += 1
                    results.append((r, exc))
                    continue
                results.append((r, (dets, (time.perf_counter_ns() - td) * _ms)))
            decode_ms = (time.perf_counter_ns() - t1) * _ms
        for r, res in results:
            if r.future.done():
                continue
            if isinstance(res, Exception):
                r.future.set_exception(res)
            else:
                r.future.set_result(runner.output(res[0], infer_ms, res[1]))
        runner.report(BatchReport(runner.name, len(live), waited, infer_ms, decode_ms))


@dataclass
class BatchTelemetry:
    """One model's engine calls: a periodic ``batch summary`` log line (docs/logging.md).

    The summary has ``model``, ``calls_per_s``, ``frames_per_s``, ``batch_sizes`` (size ->
    calls in the window), ``mean_batch``, ``wait_ms`` (p50/p95/p99 of the time frames waited
    in the batcher), ``infer_ms`` (per call) and ``failed`` (failed calls).
    """

    model: str
    log: Any = field(default=None, repr=False)
    summary_interval_s: float = 10.0
    keep_all: bool = False
    all: list[BatchReport] = field(default_factory=list, repr=False)
    _window: list[BatchReport] = field(default_factory=list, repr=False)
    _start: float = field(default_factory=time.monotonic, repr=False)

    def __post_init__(self) -> None:
        if self.log is None:
            self.log = structlog.get_logger("edgeyolo.batching").bind(model=self.model)

    def observe_batch(self, report: BatchReport) -> None:
        """``BatchObserver``: record the call; log the summary when it is due."""
        self._window.append(report)
        if self.keep_all:
            self.all.append(report)
        if time.monotonic() - self._start >= self.summary_interval_s:
            self.summary()

    def summary(self, now: float | None = None) -> dict[str, Any] | None:
        """Log and return the window's summary (None when there were no calls), start anew."""
        from edgeyolo.telemetry import percentiles  # noqa: PLC0415 - numpy only when used

        now = time.monotonic() if now is None else now
        window, self._window = self._window, []
        elapsed = max(now - self._start, 1e-9)
        self._start = now
        if not window:
            return None
        frames = sum(r.size for r in window)
        waits = [w for r in window for w in r.waited_ms]
        ok = [r.infer_ms for r in window if not r.failed]
        fields: dict[str, Any] = {
            "calls_per_s": round(len(window) / elapsed, 2),
            "frames_per_s": round(frames / elapsed, 2),
            "batch_sizes": dict(sorted(Counter(r.size for r in window).items())),
            "mean_batch": round(frames / len(window), 2),
            "wait_ms": percentiles(waits),
            "infer_ms": percentiles(ok) if ok else None,
            "failed": sum(r.failed for r in window),
        }
        self.log.info("batch summary", **fields)
        return fields
