"""CUDA graphs by stream capture: record a frame's GPU work once, replay it with one launch.

``capture(stream, record)`` begins a thread-local capture on ``stream``, calls ``record()`` (which
enqueues work on ``stream`` and on other streams forked from it with events and joined back),
ends the capture and instantiates the graph. Work enqueued while capturing is recorded, not run;
``Graph.launch(stream)`` then runs all of it with one driver call. A capture that fails (an
operation that cannot be captured, such as a stream synchronization, or an exception from
``record``) is ended and discarded, and raises ``GraphCaptureError`` saying why.

Thread-local mode: only CUDA calls from the capturing thread are affected, and an unsafe call
from that thread (e.g. a synchronous allocation) makes the capture fail rather than race.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from edgeyolo.closing import Closing
from edgeyolo.gpu.errors import CudaError, check, driver, error_name

if TYPE_CHECKING:
    from collections.abc import Callable

    from edgeyolo.gpu.runtime import Stream


class GraphCaptureError(CudaError):
    """Stream capture or graph instantiation failed; ``reason`` says what was refused."""

    def __init__(self, reason: str) -> None:
        super().__init__("stream capture", "GRAPH_CAPTURE_FAILED", -1, reason)
        self.reason = reason


def is_capturing(stream_handle: Any) -> bool:
    """True while ``stream_handle`` (a CUstream or its integer value) is being captured."""
    drv = driver()
    handle = stream_handle if not isinstance(stream_handle, int) else drv.CUstream(stream_handle)
    status = check(drv.cuStreamIsCapturing(handle), "cuStreamIsCapturing")
    return bool(int(status) == int(drv.CUstreamCaptureStatus.CU_STREAM_CAPTURE_STATUS_ACTIVE))


class Graph(Closing):
    """An instantiated CUDA graph (the ``CUgraphExec``) and the graph it was made from."""

    def __init__(self, graph: Any, nodes: int, capture_ms: float) -> None:
        self._drv = driver()
        self._graph: Any = graph
        self._exec: Any = None
        self.nodes = nodes
        self.capture_ms = capture_ms
        try:
            self._exec = check(self._drv.cuGraphInstantiate(graph, 0), "cuGraphInstantiate")
        except CudaError as exc:
            self.close()
            raise GraphCaptureError(f"instantiation failed: {exc}") from exc

    def launch(self, stream: Stream) -> None:
        """Enqueue the whole graph on ``stream`` (ordered after the stream's earlier work)."""
        if self._exec is None:
            raise RuntimeError("the graph is closed")
        check(self._drv.cuGraphLaunch(self._exec, stream.handle), "cuGraphLaunch")

    def close(self) -> None:
        if self._exec is not None:
            check(self._drv.cuGraphExecDestroy(self._exec), "cuGraphExecDestroy")
            self._exec = None
        if self._graph is not None:
            check(self._drv.cuGraphDestroy(self._graph), "cuGraphDestroy")
            self._graph = None


def capture(stream: Stream, record: Callable[[], None]) -> Graph:
    """Capture what ``record()`` enqueues, starting from ``stream``, into an instantiated graph.

    Raises ``GraphCaptureError`` when the capture is refused; the stream is out of capture
    mode afterwards either way.
    """
    drv = driver()
    mode = drv.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL
    start = time.perf_counter()
    check(drv.cuStreamBeginCapture(stream.handle, mode), "cuStreamBeginCapture")
    failure: BaseException | None = None
    try:
        record()
    except BaseException as exc:  # the capture must be ended before anything else
        failure = exc
    err, graph = drv.cuStreamEndCapture(stream.handle)
    if failure is not None:
        if int(err) == 0 and graph is not None:
            check(drv.cuGraphDestroy(graph), "cuGraphDestroy")
        if not isinstance(failure, Exception):
            raise failure
        raise GraphCaptureError(f"{type(failure).__name__}: {failure}") from failure
    if int(err) != 0:
        # e.g. CUDA_ERROR_STREAM_CAPTURE_INVALIDATED: an operation in record() was not capturable
        raise GraphCaptureError(f"cuStreamEndCapture failed with {error_name(err)}")
    # (err, nodes, count): asking for 0 nodes returns just the count.
    count = int(drv.cuGraphGetNodes(graph, 0)[-1])
    return Graph(graph, count, (time.perf_counter() - start) * 1e3)
