"""One TensorRT engine: execution context, stream, bound buffers, decode on the GPU or not.

``tensorrt`` and ``cuda`` are imported inside functions only: this module imports anywhere.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import structlog

from edgeyolo.engines.base import InputSlot, ModelInfo
from edgeyolo.engines.trt_batch import BatchInput, profile_max_batch
from edgeyolo.engines.trt_io import IOTensor, describe_io, engine_model_info
from edgeyolo.engines.trt_slot import TensorRTInputSlot
from edgeyolo.errors import ModelError

if TYPE_CHECKING:
    from collections.abc import Sequence

    import tensorrt as trt

    from edgeyolo.engines.trt_gpu import DeviceDecode
    from edgeyolo.gpu import CudaContext, DeviceBuffer, Event, PinnedBuffer, Stream, Waiter
    from edgeyolo.postprocess import Candidates, Detections


@dataclass(slots=True)
class _Output:
    name: str
    device: DeviceBuffer
    host: PinnedBuffer


class TensorRTEngine:
    """One deserialized engine with its execution context, stream and buffers."""

    def __init__(
        self,
        name: str,
        engine: trt.ICudaEngine,
        path: Path,
        metadata: dict[str, str],
        ctx: CudaContext,
        waiter: Waiter,
        timing: bool = False,
        max_batch: int = 1,
    ) -> None:
        from edgeyolo.gpu import Event, Stream  # noqa: PLC0415

        self._name = name
        self._engine: trt.ICudaEngine | None = engine
        self._ctx = ctx
        self._waiter = waiter
        self._log = structlog.get_logger().bind(engine=name)
        io = describe_io(engine, path)
        context: trt.IExecutionContext | None = engine.create_execution_context()
        if context is None:
            raise ModelError(f"{path}: TensorRT could not create an execution context (memory?)")
        self._context: trt.IExecutionContext | None = context
        inp = next(t for t in io if t.is_input)
        # Frames per call this engine is set up for (outputs and batch input sized for them);
        # a max_batch beyond the profile's limit is refused by check_model after this.
        limit = profile_max_batch(engine, inp.name) if inp.shape[:1] == (-1,) else 1
        self._rows = max_batch if 1 < max_batch <= limit else 1
        self._input_name = inp.name
        self._input_dims = inp.shape
        self._shape_rows = 0
        if inp.shape[:1] == (-1,):
            self._set_rows(context, self._rows, path)
        out_t = next(t for t in io if not t.is_input)
        dims = context.get_tensor_shape(out_t.name)
        out_shape = tuple(int(dims[d]) for d in range(len(dims)))
        info = engine_model_info(path, io, metadata, output_shape=(1, *out_shape[1:]))
        self._info = dataclasses.replace(info, max_batch=limit)
        self._batch: BatchInput | None = None
        self._resources: list[Any] = []
        try:
            self._stream = Stream()
            self._resources.append(self._stream)
            self._done = Event()
            self._resources.append(self._done)
            self._t0 = Event(timing=True) if timing else None
            self._t1 = Event(timing=True) if timing else None
            self._resources += [e for e in (self._t0, self._t1) if e is not None]
            self._outputs = self._allocate_outputs(context, io, path)
            if self._rows > 1:
                frame = info.input
                self._batch = BatchInput(self._rows, math.prod(frame.shape) * frame.dtype.itemsize)
                self._resources.append(self._batch)
        except BaseException:
            self._release()
            raise
        first = self._outputs[0].host.array
        # FP16 outputs are converted into this float32 array; FP32 ones are returned as is.
        self._out32: npt.NDArray[np.float32] | None = (
            None if first.dtype == np.float32 else np.empty(first.shape, np.float32)
        )
        self._bound_input = 0
        self._busy = False
        self._timed = True  # the last enqueue recorded the timing events
        self.batch_timeout_ms = 0.0  # the model's, for a batched launch (engines/trt_group.py)
        self._decode: DeviceDecode | None = None
        self.last_enqueue_ms = 0.0
        self.last_gpu_ms = 0.0

    def _allocate_outputs(
        self, context: trt.IExecutionContext, io: list[IOTensor], path: Path
    ) -> list[_Output]:
        from edgeyolo.gpu import DeviceBuffer, PinnedBuffer  # noqa: PLC0415

        outputs = []
        for t in io:
            if t.is_input:
                continue
            d = context.get_tensor_shape(t.name)
            shape = tuple(int(d[i]) for i in range(len(d)))
            host = PinnedBuffer(shape, t.dtype)
            self._resources.append(host)
            dev = DeviceBuffer(host.nbytes)
            self._resources.append(dev)
            if not context.set_tensor_address(t.name, dev.ptr):
                raise ModelError(f"{path}: cannot bind output '{t.name}'")
            outputs.append(_Output(t.name, dev, host))
        return outputs

    def _set_rows(self, context: trt.IExecutionContext, rows: int, where: object) -> None:
        """Set a dynamic-batch input's batch dimension to ``rows`` frames (when it changes)."""
        if rows == self._shape_rows or self._input_dims[:1] != (-1,):
            return
        shape = (rows, *self._input_dims[1:])
        if not context.set_input_shape(self._input_name, shape):
            raise ModelError(f"{where}: input '{self._input_name}' does not accept shape {shape}")
        self._shape_rows = rows

    @property
    def batch_rows(self) -> int:
        """Frames one call of this engine takes (its config's max_batch, or 1)."""
        return self._rows

    @property
    def name(self) -> str:
        return self._name

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def output_layout(self) -> tuple[tuple[int, ...], np.dtype[Any]]:
        """Shape and element type of the engine's output as it sits on the device."""
        arr = self._outputs[0].host.array
        return tuple(arr.shape), arr.dtype

    @property
    def done_event(self) -> Event:
        """Recorded on this engine's stream after each frame's work (and its copies back)."""
        return self._done

    @property
    def gpu_decode(self) -> DeviceDecode | None:
        """The GPU decode, when ``infer`` returns candidates instead of the raw output."""
        return self._decode

    @property
    def output_owned(self) -> bool:
        """With the GPU decode ``infer`` returns candidates (or a copy): the caller's. Without
        it, the raw output is the pinned buffer the next enqueue overwrites."""
        return self._decode is not None

    def use_gpu_decode(self, decode: DeviceDecode | None) -> None:
        """Decode on the GPU from now on (``infer`` returns ``Candidates``); None: raw output."""
        if self._decode is not None:
            self._decode.close()
        self._decode = decode

    def _execute(
        self, context: trt.IExecutionContext, rows: int, input_ptr: int, timed: bool = True
    ) -> None:
        """Enqueue ``execute_async_v3`` on this engine's stream for ``rows`` frames read from
        ``input_ptr`` (re-bound only when it changed), between the timing events if any
        (``timed=False`` while a graph is captured: those events would not be recorded)."""
        stream = self._stream
        t0, t1 = (self._t0, self._t1) if timed else (None, None)
        self._set_rows(context, rows, f"engine '{self._name}'")
        if input_ptr != self._bound_input:
            if not context.set_tensor_address(self._input_name, input_ptr):
                raise ModelError(f"engine '{self._name}': cannot bind input '{self._input_name}'")
            self._bound_input = input_ptr
        if t0 is not None:
            t0.record(stream)
        if not context.execute_async_v3(stream.ptr):
            raise ModelError(f"engine '{self._name}': execute_async_v3 failed (see the log)")
        if t1 is not None:
            t1.record(stream)

    def enqueue(self, slot: InputSlot, *, capturing: bool = False) -> Event:
        """Enqueue this engine's work for ``slot`` on its stream; returns the done event.

        ``capturing``: a frame graph is being captured (engines/trt_graph.py): the work is
        recorded into it instead of run, without the timing events.
        """
        context = self._context
        if context is None:
            raise RuntimeError(f"engine '{self._name}' is closed")
        if not isinstance(slot, TensorRTInputSlot):
            raise TypeError("the TensorRT backend needs input slots from its allocate_input()")
        if slot.spec.shape != self._info.input.shape or slot.spec.dtype != self._info.input.dtype:
            raise ModelError(
                f"engine '{self._name}' expects input {self._info.input.shape} "
                f"{self._info.input.dtype}, the slot holds {slot.spec.shape} {slot.spec.dtype}"
            )
        self._ctx.check_thread()
        start = time.perf_counter()
        stream = self._stream
        stream.wait_event(slot.ready)
        self._execute(context, 1, slot.device_ptr, timed=not capturing)
        self._timed = not capturing
        if self._decode is not None:
            self._decode.enqueue(self._outputs[0].device.ptr, stream, 1, slot.params_ptr)
        else:
            for out in self._outputs:
                stream.copy_dtoh(out.host, out.device)
        self._done.record(stream)
        slot.add_reader(self._done)
        self.last_enqueue_ms = (time.perf_counter() - start) * 1e3
        return self._done

    def result(self) -> npt.NDArray[np.float32]:
        """The output of the last completed enqueue (valid until the next one)."""
        host = self._outputs[0].host.array
        if self._t0 is not None and self._t1 is not None and self._timed:
            self.last_gpu_ms = self._t0.elapsed_ms(self._t1)
        if self._out32 is None:
            out: npt.NDArray[np.float32] = host
            return out
        np.copyto(self._out32, host, casting="same_kind")
        return self._out32

    async def infer(self, slot: InputSlot) -> npt.NDArray[np.float32] | Candidates | Detections:
        """Run on ``slot`` (filled) and return the raw float32 output, or with the GPU decode
        the candidates above the threshold (the raw output on an overflow frame)."""
        if self._busy:
            raise RuntimeError(f"engine '{self._name}': one infer at a time")
        self._busy = True
        try:
            done = self.enqueue(slot)
            # The polling waiter keeps its own per-stream estimate of the GPU time.
            await self._waiter.wait(done, self._stream)
            return await self.collect()
        finally:
            self._busy = False

    async def collect(self) -> npt.NDArray[np.float32] | Candidates | Detections:
        """What ``infer`` returns, once the work of the last ``enqueue`` (or of the frame graph
        that contains it) completed: the raw output, or the GPU decode's candidates (fetching
        records past the first copy, or the whole output on an overflow frame, if needed)."""
        out = await self.collect_rows(1)
        return out[0] if isinstance(out, list) else out

    async def infer_batch(
        self, slots: Sequence[InputSlot]
    ) -> npt.NDArray[np.float32] | list[Candidates | Detections]:
        """One call on ``len(slots)`` frames: each slot copied (device to device) into its row
        of the batch input on this engine's stream, then ``execute_async_v3`` once. Returns the
        batch's raw output rows (``len(slots)`` x rows x anchors, float32), or with the GPU
        decode (one launch over the batch) each frame's candidates; the raw rows, copied, when
        a frame overflowed the decode capacity."""
        context, batch = self._context, self._batch
        if context is None:
            raise RuntimeError(f"engine '{self._name}' is closed")
        if batch is None:
            raise RuntimeError(f"engine '{self._name}' was opened for one frame per call")
        if self._busy:
            raise RuntimeError(f"engine '{self._name}': one infer at a time")
        ours: list[TensorRTInputSlot] = []
        for slot in slots:
            if not isinstance(slot, TensorRTInputSlot) or slot.spec != self._info.input:
                raise TypeError(
                    f"engine '{self._name}': slots must be this backend's, for "
                    f"input {self._info.input.shape} {self._info.input.dtype}"
                )
            ours.append(slot)
        self._ctx.check_thread()
        self._busy = True
        try:
            n = len(slots)
            batch.gather(self._stream, ours)
            self.enqueue_rows(batch.ptr, n)
            for slot in ours:
                slot.add_reader(self._done)
            await self._waiter.wait(self._done, self._stream)
            return await self.collect_rows(n)
        finally:
            self._busy = False

    def enqueue_rows(
        self, input_ptr: int, n: int, *, capturing: bool = False, params_ptr: int = 0
    ) -> Event:
        """Enqueue one call on the ``n`` frames at ``input_ptr`` (a batch input, rows of this
        engine's input), its decode or output copy, and the done event; the caller made this
        engine's stream wait for the input. ``capturing``: into a graph, untimed;
        ``params_ptr``: the frames' letterboxes (8 floats each) for the GPU NMS."""
        context = self._context
        if context is None:
            raise RuntimeError(f"engine '{self._name}' is closed")
        stream = self._stream
        self._execute(context, n, input_ptr, timed=not capturing)
        self._timed = not capturing
        if self._decode is not None:
            self._decode.enqueue(self._outputs[0].device.ptr, stream, n, params_ptr)
        else:
            self._copy_rows(n)
        self._done.record(stream)
        return self._done

    async def collect_rows(self, n: int) -> npt.NDArray[np.float32] | list[Candidates | Detections]:
        """What ``infer_batch`` returns, once the work of ``enqueue_rows(.., n)`` completed:
        the raw output rows (a view of the pinned output), or each frame's candidates; the raw
        rows, copied, when a frame overflowed the decode capacity."""
        decode = self._decode
        stream = self._stream
        if decode is None:
            return self.result()[:n]
        step = decode.after_wait(stream)
        if step == "overflow":
            self._copy_rows(n)
        if step != "done":
            self._done.record(stream)
            await self._waiter.wait(self._done, stream)
        if step == "overflow":
            owned: npt.NDArray[np.float32] = self.result()[:n].copy()
            return owned
        if self._t0 is not None and self._t1 is not None and self._timed:
            self.last_gpu_ms = self._t0.elapsed_ms(self._t1)
        return [decode.candidates(b) for b in range(n)]

    @property
    def stream(self) -> Stream:
        """This engine's CUDA stream."""
        return self._stream

    def _copy_rows(self, n: int) -> None:
        """Enqueue the copy of the first ``n`` frames' output rows to the pinned host buffers."""
        for out in self._outputs:
            self._stream.copy_dtoh(out.host, out.device, out.host.nbytes // self._rows * n)

    def _release(self) -> None:
        for res in reversed(self._resources):
            res.close()
        self._resources.clear()

    def close(self) -> None:
        """Wait for in-flight work, then release buffers, events, stream and the context."""
        if self._context is None:
            return
        self._stream.synchronize()
        self._context = None  # TensorRT objects are freed when the last reference goes
        self._engine = None
        self.use_gpu_decode(None)
        self._release()
