"""One launch per frame: a camera's whole frame of GPU work as one CUDA graph per slot set.

Per slot set (the pipeline alternates two) the first frame runs on streams as usual: that is
the warm-up TensorRT asks for before ``enqueueV3`` is captured (it flushes deferred updates;
shapes are set once and stay). Later frames are captured from the backend's upload stream,
once per frame size and buffer the frame is uploaded from (a camera's pinned frame pool has a
few): the frame's upload and letterbox (or the upload of the CPU letterbox), a fork to every
engine's stream, each engine's ``execute_async_v3`` and its decode kernel with the small copy
back (or the full output copy), and the join back. From then on a frame costs the host one
``cuGraphLaunch``, one event to poll and each engine's candidates to read (plus a copy into
staging when the frame is not in a pinned frame buffer).

A graph bakes in every address and size: the slot set's buffers, the engines' bound buffers,
the frame's buffer and size, so each combination gets its own graph (up to ``MAX_GRAPHS``,
oldest dropped first), and a staging buffer that grows drops them all. Engines with
data-dependent shapes, loops or other work TensorRT cannot capture fail the capture: with
``cuda_graph: auto`` that is logged once and the frames run on streams (same results); with
``on`` it is an error.

The engines' locks (their runners', handed in by ``runner.run_frame``) are held for the whole
launch, so no other camera's frame uses the engines or their output buffers meanwhile, and
every earlier reader of the slot set finished before (the host saw its completion): the
captured upload does not wait on events from outside the capture.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import numpy as np
import structlog

from edgeyolo.closing import Closing
from edgeyolo.errors import ModelError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping, Sequence

    import numpy.typing as npt

    from edgeyolo.engines.base import TensorSpec
    from edgeyolo.engines.trt_engine import TensorRTEngine
    from edgeyolo.engines.trt_slot import TensorRTInputSlot
    from edgeyolo.frames import Letterbox
    from edgeyolo.gpu import Stream, Waiter
    from edgeyolo.gpu.graph import Graph
    from edgeyolo.postprocess import Candidates, Detections

    # What a launch returns per engine: its output (raw, candidates, detections) or its error.
    Result: TypeAlias = npt.NDArray[np.float32] | Candidates | Detections | BaseException

GraphMode = Literal["auto", "on", "off"]
MAX_GRAPHS = 16  # per slot set: frame sizes x pinned frame buffers (frame pool) kept
_ms = 1e-6


class GraphCache(Closing):
    """Captured graphs by key, at most ``MAX_GRAPHS`` (oldest dropped first), and what a failed
    capture means under ``tensorrt.gpu.cuda_graph`` (``auto``: log once and stop trying,
    ``on``: an error). Shared by the per-camera and the batched launch."""

    def __init__(self, mode: GraphMode, what: str, log: Any) -> None:
        self.mode = mode
        self.what = what  # "frame" or "batch", for the messages
        self._log = log
        self._graphs: dict[Any, Graph] = {}
        self.disabled_reason = "" if mode != "off" else "tensorrt.gpu.cuda_graph is off"

    def __len__(self) -> int:
        return len(self._graphs)

    def get(self, key: Any) -> Graph | None:
        return self._graphs.get(key)

    def capture(
        self, key: Any, stream: Stream, record: Callable[[], None], **log: Any
    ) -> Graph | None:
        """Capture what ``record`` enqueues from ``stream`` and keep it under ``key``; None
        (stream launches from now on) when the capture is refused and the mode is ``auto``."""
        from edgeyolo.gpu.graph import GraphCaptureError, capture  # noqa: PLC0415

        try:
            graph = capture(stream, record)
        except GraphCaptureError as exc:
            if self.mode == "on":
                raise ModelError(
                    f"tensorrt.gpu.cuda_graph is 'on' but the {self.what} could not be captured "
                    f"({exc.reason}); set it to 'auto' to fall back to stream launches"
                ) from exc
            self.disabled_reason = exc.reason
            self._log.warning(
                f"cuda graph unavailable for each {self.what}: stream launches",
                reason=exc.reason,
                hint="results are the same; set tensorrt.gpu.cuda_graph: off to skip the try",
            )
            return None
        if len(self._graphs) >= MAX_GRAPHS:
            self._graphs.pop(next(iter(self._graphs))).close()
        self._graphs[key] = graph
        self._log.info(
            f"cuda graph captured: one launch per {self.what}",
            nodes=graph.nodes,
            capture_ms=round(graph.capture_ms, 2),
            graphs=len(self._graphs),
            **log,
        )
        return graph

    def close(self) -> None:
        for graph in self._graphs.values():
            graph.close()
        self._graphs.clear()


class FrameGraph(Closing):
    """A camera's engines on one slot set: stream launches first, then one graph per frame."""

    def __init__(
        self,
        slots: Mapping[TensorSpec, TensorRTInputSlot],
        engines: Sequence[TensorRTEngine],
        upload: Stream,
        waiter: Waiter,
        mode: GraphMode,
    ) -> None:
        from edgeyolo.gpu import Event  # noqa: PLC0415

        self._slots = dict(slots)
        self._engines = list(engines)
        self._upload = upload
        self._waiter = waiter
        self._log = structlog.get_logger().bind(engines=[e.name for e in self._engines])
        self._cache = GraphCache(mode, "frame", self._log)
        self._warm = False  # a frame ran on streams: TensorRT's warm-up before a capture
        # What the staged frame's upload depends on, the graphs' key: per slot (width, height,
        # buffer generation, address the frame is uploaded from), () for a CPU-letterbox slot.
        self._key: tuple[tuple[int, ...], ...] = ()
        self._generations: tuple[int, ...] = ()
        self._done = Event()
        self.launches = 0  # frames run as one graph launch
        self.streamed = 0  # frames run as stream launches (warm-up, fallback)
        self.last_launch_ms = 0.0
        self.lock_wait_ms = 0.0
        self.last_infer_ms = 0.0

    @property
    def graphs(self) -> int:
        return len(self._cache)

    @property
    def disabled_reason(self) -> str:
        """Why frames run on streams ('' while graphs are used or still to be tried)."""
        return self._cache.disabled_reason

    def stage(self, image: npt.NDArray[np.uint8]) -> dict[TensorSpec, Letterbox]:
        """The host half of the frame: copy ``image`` into the slots' staging (or letterbox it
        on the CPU into their pinned input); the GPU half is in ``infer``."""
        letterboxes = {spec: slot.stage(image) for spec, slot in self._slots.items()}
        key = tuple(slot.staging_key for slot in self._slots.values())
        generations = tuple(k[2] if k else 0 for k in key)
        if generations != self._generations:
            # Staging or device frame buffers were replaced (a larger frame): graphs that
            # read the old ones are stale.
            self._cache.close()
            self._generations = generations
        self._key = key
        return letterboxes

    def _enqueue_all(self, capturing: bool) -> None:
        for slot in self._slots.values():
            slot.enqueue_upload(wait_readers=not capturing)
        for engine in self._engines:
            engine.enqueue(self._slots[engine.info.input], capturing=capturing)
            if capturing:
                self._upload.wait_event(engine.done_event)  # join back into the upload stream

    def _graph(self) -> Graph | None:
        """The graph for the staged frame: captured on its second frame (after a warm-up)."""
        if self._cache.disabled_reason:
            return None
        key = self._key
        graph = self._cache.get(key)
        if graph is not None or not self._warm:
            self._warm = True
            return graph
        return self._cache.capture(
            key,
            self._upload,
            lambda: self._enqueue_all(capturing=True),
            frame=[list(k[:2]) for k in key if k],
        )

    async def infer(self, locks: Sequence[asyncio.Lock] = ()) -> list[Result]:
        """Run every engine on the staged frame, holding ``locks`` (the engines' runners'):
        per engine what its ``infer`` returns, the caller's to keep (raw outputs of a CPU
        decode are copied out of the pinned buffers), or the exception it raised."""
        t_wait = time.perf_counter_ns()
        async with hold(locks):
            t0 = time.perf_counter_ns()
            self.lock_wait_ms = (t0 - t_wait) * _ms
            results = await self._run()
            owned = [_owned(e, r) for e, r in zip(self._engines, results, strict=True)]
            self.last_infer_ms = (time.perf_counter_ns() - t0) * _ms
            return owned

    async def _run(self) -> list[Result]:
        graph = self._graph()
        start = time.perf_counter_ns()
        if graph is None:
            self.streamed += 1
            return await self._streamed()
        graph.launch(self._upload)
        self._done.record(self._upload)
        self.launches += 1
        self.last_launch_ms = (time.perf_counter_ns() - start) * _ms
        await self._waiter.wait(self._done, self._upload)
        results: list[Result] = []
        for engine in self._engines:
            try:
                results.append(await engine.collect())
            except Exception as exc:  # isolated per engine, like the stream path
                results.append(exc)
        return results

    async def _streamed(self) -> list[Result]:
        for slot in self._slots.values():
            slot.enqueue_upload()
        return await asyncio.gather(
            *(e.infer(self._slots[e.info.input]) for e in self._engines), return_exceptions=True
        )

    @property
    def last_batch(self) -> tuple[int, bool]:
        return (1, True)

    def detach(self) -> None:
        """Nothing to tell: this launch serves one camera."""

    def close(self) -> None:
        """Release the graphs (the caller made sure none is running)."""
        self._cache.close()
        self._done.close()


@contextlib.asynccontextmanager
async def hold(locks: Sequence[asyncio.Lock]) -> AsyncIterator[None]:
    """Hold every lock, taken in one global order (so two holders cannot deadlock)."""
    async with contextlib.AsyncExitStack() as stack:
        for lock in sorted(dict.fromkeys(locks), key=id):
            await stack.enter_async_context(lock)
        yield


def _owned(
    engine: TensorRTEngine,
    result: Result,
) -> Result:
    """``result`` as the caller's: a raw output in the engine's pinned buffer is copied."""
    if engine.output_owned or isinstance(result, BaseException):
        return result
    return result.copy() if isinstance(result, np.ndarray) else result
