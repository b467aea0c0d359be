"""Several cameras, one launch: a batch of frames through all of their batched engines at once.

When every model of a camera has ``max_batch`` > 1 (the same for all) and the GPU letterbox is
on, the cameras that run those engines share a ``BatchGroup``; each camera's slot set gets a
``GroupMember`` (its ``FrameLaunch``). A member stages its frame on the host (its pinned frame
buffer, or a copy into staging) and submits; the group launches a batch when every attached
camera submitted (at most ``max_batch``) or when the oldest frame waited ``batch_timeout_ms``
(counted from the end of the previous batch when its timeout ran out while that batch ran:
the rules of ``edgeyolo.batching``, whose dispatcher this is). Frames are queued when they are
staged, while the previous batch is still in the engines, so the next batch starts as soon as
that one is out, before any camera decodes.

A batch is, on the backend's upload stream: each frame copied into its row's device frame
buffer (outside any graph, so the graph does not depend on where a frame was captured),
then ONE CUDA graph (per batch size and frame sizes; the first batch of each size runs on
streams, TensorRT's warm-up): every frame's letterbox kernel writing its row of one batch input
per input spec, a fork to every engine's stream, each engine's ``execute_async_v3`` over the
rows and its decode kernel over the batch, and the join. Each camera gets its rows' results.

Compared with the per-model batcher (``edgeyolo.batching``, used by ONNX Runtime and by the CPU
letterbox), a frame is letterboxed into the batch input directly (no device-to-device gather),
and the host launches once per batch instead of once per model and batch.

Isolation as the per-model batcher: a camera that stalls or ends holds the others up for at
most the timeout; a failing launch fails every frame in it; a failing collect fails that
engine's frames only. The runners' locks are held while a batch uses the engines.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from edgeyolo.batching import BatchQueue
from edgeyolo.closing import Closing
from edgeyolo.engines.trt_graph import GraphCache, GraphMode, hold

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import numpy.typing as npt

    from edgeyolo.engines.base import TensorSpec
    from edgeyolo.engines.trt_engine import TensorRTEngine
    from edgeyolo.engines.trt_gpu import GpuFill
    from edgeyolo.engines.trt_slot import TensorRTInputSlot
    from edgeyolo.frames import Letterbox
    from edgeyolo.gpu import DeviceBuffer, PinnedBuffer, Stream, Waiter
    from edgeyolo.gpu.graph import Graph

_ms = 1e-6


@dataclass(eq=False)
class _Request:
    member: GroupMember
    locks: Sequence[asyncio.Lock]
    future: asyncio.Future[tuple[list[Any], int, int, float, float]]
    submitted_ns: int


class BatchGroup(BatchQueue[_Request], Closing):
    """The batched launch of the cameras that run the same batched engines."""

    def __init__(
        self,
        engines: Sequence[TensorRTEngine],
        rows: int,
        timeout_ms: float,
        upload: Stream,
        waiter: Waiter,
        mode: GraphMode,
    ) -> None:
        from edgeyolo.gpu import DeviceBuffer, Event, PinnedBuffer  # noqa: PLC0415

        super().__init__(rows, timeout_ms, "batch-group")
        self._engines = list(engines)
        self._upload = upload
        self._waiter = waiter
        self._owners: set[int] = set()
        self._log = structlog.get_logger().bind(engines=[e.name for e in self._engines])
        self._cache = GraphCache(mode, "batch", self._log)
        self._resources: list[Any] = []
        self._inputs: dict[TensorSpec, DeviceBuffer] = {}
        self._rows: list[DeviceBuffer | None] = [None] * rows  # each row's raw frame
        self._warm: set[int] = set()  # batch sizes run on streams once (TensorRT's warm-up)
        self.launches = self.streamed = 0
        self.sizes: dict[int, int] = {}  # batch size -> batches
        try:
            for spec in dict.fromkeys(e.info.input for e in self._engines):
                nbytes = int(spec.dtype.itemsize) * int(_prod(spec.shape[1:]))
                self._inputs[spec] = DeviceBuffer(rows * nbytes)
                self._resources.append(self._inputs[spec])
            # Each row's letterbox for the NMS kernel, written before each batch's launch.
            self._params: dict[TensorSpec, PinnedBuffer] = {}
            for spec in self._inputs:
                self._params[spec] = PinnedBuffer((rows, 8), np.float32, mapped=True)
                self._resources.append(self._params[spec])
            self._ready = Event()
            self._resources.append(self._ready)
            self._done = Event()
            self._resources.append(self._done)
        except BaseException:
            self.close()
            raise

    # -- cameras -----------------------------------------------------------------------------
    @property
    def rows(self) -> int:
        """Frames a batch holds at most: the models' ``max_batch``."""
        return self.max_batch

    @property
    def target(self) -> int:
        """Frames that make a batch full: ``rows``, or the attached cameras if fewer."""
        return max(1, min(self.rows, len(self._owners) or self.rows))

    def attach(self, owner: object) -> None:
        self._owners.add(id(owner))

    def detach(self, owner: object) -> None:
        self._owners.discard(id(owner))
        self._poke()

    def submit(self, member: GroupMember) -> _Request:
        """Queue a member's staged frame (at staging time, so a batch can start as soon as the
        previous one is out of the engines); its future gets (per engine its result, batch
        size, row, ms waited for the batch, ms the batch ran) once its batch ran."""
        loop = asyncio.get_running_loop()
        req = _Request(member, member.locks, loop.create_future(), time.perf_counter_ns())
        # A frame whose camera stopped before asking for it: nobody retrieves its result.
        req.future.add_done_callback(_retrieved)
        self._queue(req)
        return req

    def withdraw(self, req: _Request) -> None:
        """Take a frame not yet in a batch out of the queue (its camera was cancelled)."""
        self._withdraw(req)

    # -- one batch ---------------------------------------------------------------------------
    async def _run(self, batch: list[_Request]) -> None:
        live = [r for r in batch if not r.future.done()]
        if not live:
            return
        n = len(live)
        async with hold(live[0].locks):
            t0 = time.perf_counter_ns()
            try:
                per_engine = await self._launch(live)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                per_engine = [exc] * len(self._engines)
        ran_ms = (time.perf_counter_ns() - t0) * _ms
        self.sizes[n] = self.sizes.get(n, 0) + 1
        for b, req in enumerate(live):
            if req.future.done():
                continue
            results = [r if isinstance(r, BaseException) else _row(r, b) for r in per_engine]
            req.future.set_result((results, n, b, (t0 - req.submitted_ns) * _ms, ran_ms))

    async def _launch(self, live: list[_Request]) -> list[Any]:
        from edgeyolo.gpu.nms import letterbox_params  # noqa: PLC0415

        n = len(live)
        for b, req in enumerate(live):
            fill = req.member.fill
            w, h = fill.staged_size
            fill.copy_staged(self._row(b, w * h * 3), self._upload)
            for spec, params in self._params.items():
                letterbox_params(req.member.letterboxes[spec], params.array[b])
        graph = self._graph(n, live)
        if graph is None:
            self.streamed += 1
            self._enqueue(live, capturing=False)
        else:
            self.launches += 1
            graph.launch(self._upload)
        self._done.record(self._upload)
        await self._waiter.wait(self._done, self._upload)
        out: list[Any] = []
        for engine in self._engines:
            try:
                out.append(await engine.collect_rows(n))
            except Exception as exc:  # that engine's frames fail, the others' stand
                out.append(exc)
        return out

    def _row(self, b: int, nbytes: int) -> DeviceBuffer:
        from edgeyolo.gpu import DeviceBuffer  # noqa: PLC0415

        buf = self._rows[b]
        if buf is None or buf.nbytes < nbytes:
            self._upload.synchronize()  # a larger frame: only when the size grows
            if buf is not None:
                buf.close()
            buf = self._rows[b] = DeviceBuffer(nbytes)
            self._cache.close()  # the graphs read the old row buffers
        return buf

    def _enqueue(self, live: list[_Request], capturing: bool) -> None:
        """Letterbox every frame into its row, then every engine on the rows, joined back."""
        n = len(live)
        for b, req in enumerate(live):
            w, h = req.member.fill.staged_size
            src = self._rows[b]
            assert src is not None
            for spec, fill in req.member.fills.items():
                fill.kernel.run(src.ptr, w, h, self._inputs[spec].ptr, b, self._upload)
        self._ready.record(self._upload)
        for engine in self._engines:
            engine.stream.wait_event(self._ready)
            spec = engine.info.input
            engine.enqueue_rows(
                self._inputs[spec].ptr,
                n,
                capturing=capturing,
                params_ptr=self._params[spec].device_ptr,
            )
            self._upload.wait_event(engine.done_event)

    def _graph(self, n: int, live: list[_Request]) -> Graph | None:
        if self._cache.disabled_reason:
            return None
        key = (n, *(r.member.fill.staged_size for r in live))
        graph = self._cache.get(key)
        if graph is not None or n not in self._warm:
            self._warm.add(n)
            return graph
        return self._cache.capture(
            key, self._upload, lambda: self._enqueue(live, capturing=True), batch=n
        )

    @property
    def disabled_reason(self) -> str:
        """Why batches run on streams ('' while graphs are used or still to be tried)."""
        return self._cache.disabled_reason

    def close(self) -> None:
        """Stop the dispatcher and release graphs and buffers (the GPU is idle by now)."""
        BatchQueue.close(self)
        self._cache.close()
        for buf in self._rows:
            if buf is not None:
                buf.close()
        self._rows = [None] * self.rows
        for res in reversed(self._resources):
            res.close()
        self._resources.clear()


class GroupMember(Closing):
    """One camera's slot set in a ``BatchGroup``: the camera's ``FrameLaunch``."""

    def __init__(
        self,
        group: BatchGroup,
        slots: Mapping[TensorSpec, TensorRTInputSlot],
        owner: object,
        locks: Sequence[asyncio.Lock] = (),
    ) -> None:
        self.group = group
        self.owner = owner
        self.locks = list(locks)  # the engines' runners': held while a batch uses them
        self._request: _Request | None = None
        self.letterboxes: dict[TensorSpec, Letterbox] = {}  # of the staged frame
        self.fills: dict[TensorSpec, GpuFill] = {}
        for spec, slot in slots.items():
            fill = slot.gpu_fill
            if fill is None:
                raise ValueError("a batched launch needs the GPU letterbox")
            self.fills[spec] = fill
        self._slots = dict(slots)
        self.fill = next(iter(self.fills.values()))  # its staged frame goes up once
        self.lock_wait_ms = 0.0
        self.last_infer_ms = 0.0
        self.last_batch = (1, True)
        group.attach(owner)

    def stage(self, image: npt.NDArray[np.uint8]) -> dict[TensorSpec, Letterbox]:
        """Stage the frame on the host and queue it for the next batch right away."""
        if self._request is not None and not self._request.future.done():
            raise RuntimeError("the previous frame of this slot set is still queued")
        self.letterboxes = {spec: slot.stage(image) for spec, slot in self._slots.items()}
        self._request = self.group.submit(self)
        return self.letterboxes

    async def infer(self, locks: Sequence[asyncio.Lock] = ()) -> list[Any]:
        """The staged frame's results, once its batch ran (``locks``: see ``locks``)."""
        del locks  # the batch takes this member's locks, given at creation
        req, self._request = self._request, None
        if req is None:
            raise RuntimeError("stage() a frame first")
        try:
            results, n, b, waited, ran = await req.future
        except asyncio.CancelledError:
            self.group.withdraw(req)
            raise
        self.lock_wait_ms = waited
        self.last_infer_ms = ran
        self.last_batch = (n, b == 0)
        return results

    def detach(self) -> None:
        self.group.detach(self.owner)

    def close(self) -> None:
        self.detach()


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _row(result: Any, b: int) -> Any:
    """Frame ``b``'s part of an engine's batch result: its candidates, or its raw output row
    (copied: the pinned output is the next batch's)."""
    if isinstance(result, list):
        return result[b]
    return result[b : b + 1].copy()


def _prod(dims: Sequence[int]) -> int:
    out = 1
    for d in dims:
        out *= int(d)
    return out
