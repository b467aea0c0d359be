"""TensorRT backend: engines on their own CUDA streams, awaited without blocking the loop.

Per frame, for every distinct input spec, the pipeline writes the letterboxed frame into a
slot's pinned host array and calls ``commit()``: that enqueues ONE host-to-device copy on the
backend's upload stream and records an event. Every engine's ``infer(slot)`` then makes its
own stream wait for that event (on the GPU), runs ``execute_async_v3``, copies the outputs
into pinned host buffers, records its completion event and awaits it with the configured
``Waiter`` (polling or host callback). No stream is ever synchronized on the loop.

Buffers are allocated and bound (``set_tensor_address``) once; only the input address is
re-bound when the pipeline alternates between slots. FP16 I/O engines get FP16 slots (the
preprocessor writes FP16 directly) and their FP16 outputs are converted to float32 on the host.

GPU path (``tensorrt.gpu``, default): ``fill`` uploads the raw frame once and a letterbox kernel
writes the device input (``commit`` of a host array stays for callers that fill ``host``), and
each engine's decode kernel runs right after ``execute_async_v3`` so ``infer`` returns the
compacted ``Candidates`` (engines/trt_gpu.py). Results equal the CPU path's.

``tensorrt`` and ``cuda`` are imported inside functions only: this module imports anywhere.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import structlog

from edgeyolo.engines.base import HostFill, InputSlot, ModelInfo, TensorSpec
from edgeyolo.engines.cache import (
    ENGINE_SUFFIXES,
    check_engine_file,
    resolve_onnx,
)
from edgeyolo.engines.model import check_model, info_from_metadata
from edgeyolo.engines.trt_batch import BatchInput, profile_max_batch
from edgeyolo.engines.trt_runtime import tensorrt_unavailable_reason
from edgeyolo.errors import ModelError

if TYPE_CHECKING:
    from collections.abc import Sequence

    import tensorrt as trt

    from edgeyolo.config import ModelConfig, TensorRTConfig
    from edgeyolo.engines.trt_gpu import DeviceDecode, GpuFill, GpuKernels
    from edgeyolo.frames import Letterbox
    from edgeyolo.gpu import CudaContext, DeviceBuffer, Event, PinnedBuffer, Stream, Waiter
    from edgeyolo.postprocess import Candidates

__all__ = [
    "TensorRTBackend",
    "TensorRTEngine",
    "TensorRTInputSlot",
    "tensorrt_unavailable_reason",  # the probe engines.select calls for backend: auto
]

# TensorRT DataType member names -> numpy; I/O of YOLO engines is FP32 or FP16.
_NUMPY_TYPES: dict[str, Any] = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT8": np.int8,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "BOOL": np.bool_,
}
_FLOAT_IO = (np.dtype(np.float32), np.dtype(np.float16))
# Ultralytics writes its metadata in front of the engine: 4-byte little-endian length + JSON.
_MAX_HEADER = 1 << 20


@dataclass(frozen=True, slots=True)
class IOTensor:
    """One engine I/O tensor as TensorRT reports it (shape may hold -1 for dynamic dims)."""

    name: str
    is_input: bool
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    format: str


def _name(member: Any) -> str:
    return str(getattr(member, "name", member)).rsplit(".", 1)[-1]


def describe_io(engine: trt.ICudaEngine, path: Path) -> list[IOTensor]:
    """Every I/O tensor of ``engine``, by name, with errors that name the file."""
    import tensorrt as trt  # noqa: PLC0415 - lazily: the package must import without TensorRT

    tensors = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = engine.get_tensor_mode(name)
        dt = _name(engine.get_tensor_dtype(name))
        if dt not in _NUMPY_TYPES:
            raise ModelError(f"{path}: I/O tensor '{name}' has TensorRT type {dt}, not supported")
        fmt = _name(engine.get_tensor_format(name))
        if fmt != "LINEAR":
            raise ModelError(
                f"{path}: I/O tensor '{name}' uses the {fmt} memory format; rebuild the engine "
                "with linear (default) I/O formats"
            )
        dims = engine.get_tensor_shape(name)
        tensors.append(
            IOTensor(
                name=name,
                is_input=mode == trt.TensorIOMode.INPUT,
                shape=tuple(int(dims[d]) for d in range(len(dims))),
                dtype=np.dtype(_NUMPY_TYPES[dt]),
                format=fmt,
            )
        )
    return tensors


def engine_model_info(
    path: Path,
    io: list[IOTensor],
    metadata: dict[str, str],
    output_shape: tuple[int, ...] | None = None,
    batch: int = 1,
) -> ModelInfo:
    """The ``ModelInfo`` of an engine: one float image input, one float output.

    A dynamic batch dimension is fixed to ``batch``; ``output_shape`` is the output's shape
    once the input shape is set (from the execution context), when the engine's is dynamic.
    """
    inputs = [t for t in io if t.is_input]
    outputs = [t for t in io if not t.is_input]
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(
            f"{path}: expected 1 input and 1 output tensor, found inputs "
            f"{[t.name for t in inputs]} and outputs {[t.name for t in outputs]} "
            "(export the ONNX with nms=False, end2end=False)"
        )
    inp, out = inputs[0], outputs[0]
    for t in (inp, out):
        if t.dtype not in _FLOAT_IO:
            raise ModelError(f"{path}: tensor '{t.name}' is {t.dtype}; expected float32 or float16")
    in_shape = inp.shape
    if in_shape and in_shape[0] == -1:
        in_shape = (batch, *in_shape[1:])
    if batch != 1 or in_shape[:1] != (1,):
        raise ModelError(f"{path}: input '{inp.name}' has batch {in_shape[:1]}; edgeyolo runs 1")
    out_shape = output_shape or out.shape
    if out_shape and out_shape[0] == -1:
        out_shape = (batch, *out_shape[1:])
    if any(d < 0 for d in out_shape):
        raise ModelError(f"{path}: output '{out.name}' keeps a dynamic shape {out_shape}")
    info = info_from_metadata(
        path,
        metadata,
        TensorSpec(inp.name, in_shape, inp.dtype),
        # What infer returns: float32 whatever the engine's output type.
        TensorSpec(out.name, out_shape, np.dtype(np.float32)),
    )
    if not metadata:
        structlog.get_logger().info(
            "engine without metadata: class names come from the config's labels",
            engine=str(path),
        )
    return info


def read_engine_file(path: Path) -> tuple[bytes, dict[str, str]]:
    """The serialized engine, and the Ultralytics metadata header if the file has one."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the engine file: {exc}") from exc
    if len(data) > 4:
        n = int.from_bytes(data[:4], "little")
        if 2 <= n < min(_MAX_HEADER, len(data) - 4) and data[4:5] == b"{":
            try:
                meta = json.loads(data[4 : 4 + n])
            except ValueError:
                meta = None
            if isinstance(meta, dict):
                return data[4 + n :], _as_metadata(meta)
    return data, {}


def _as_metadata(meta: dict[str, Any]) -> dict[str, str]:
    """Ultralytics' JSON header -> the string form ONNX metadata_props have."""
    out = {}
    for k, v in meta.items():
        out[str(k)] = v if isinstance(v, str) else repr(v)
    return out


class TensorRTInputSlot(HostFill):
    """Pinned host input + its device copy, uploaded once per frame for all engines.

    ``fill`` with the GPU letterbox (``gpu``): the raw frame goes up once and a kernel writes
    the device input; without it: the CPU letterbox into the pinned array, then ``commit``
    uploads that.
    """

    def __init__(self, spec: TensorSpec, upload: Stream, gpu: GpuFill | None = None) -> None:
        from edgeyolo.gpu import DeviceBuffer, Event, PinnedBuffer  # noqa: PLC0415

        self._spec = spec
        self._upload = upload
        self._gpu = gpu
        self._pinned: PinnedBuffer = PinnedBuffer(spec.shape, spec.dtype)
        try:
            self._device: DeviceBuffer = DeviceBuffer(self._pinned.nbytes)
            self.ready: Event = Event()
        except BaseException:
            self._pinned.close()
            raise
        self._readers: list[Event] = []

    @property
    def spec(self) -> TensorSpec:
        return self._spec

    @property
    def host(self) -> npt.NDArray[np.floating]:
        """The pinned array a caller letterboxes into before ``commit()`` (in place).

        ``fill`` with the GPU letterbox writes the device input only; this array then keeps
        whatever the caller last wrote.
        """
        return self._pinned.array

    @property
    def device_ptr(self) -> int:
        """Device address of the uploaded input, as ``set_tensor_address`` takes it."""
        return self._device.ptr

    def add_reader(self, done: Event) -> None:
        """Register an engine's completion event: the next upload waits for it on the GPU."""
        if not any(r is done for r in self._readers):
            self._readers.append(done)

    def _wait_readers(self) -> None:
        # An engine closed on its own synchronized its stream first: nothing left to wait for.
        self._readers = [r for r in self._readers if not r.closed]
        for reader in self._readers:
            # Never overwrite the device input while an engine may still be reading it.
            self._upload.wait_event(reader)

    def fill(self, image: npt.NDArray[np.uint8]) -> Letterbox:
        """Letterbox ``image`` into the device input (GPU or CPU letterbox); returns at once."""
        if self._gpu is None:
            return super().fill(image)
        self._wait_readers()
        lb = self._gpu.fill(image, self._device.ptr, self._upload)
        self.ready.record(self._upload)
        return lb

    def commit(self) -> None:
        """Enqueue one host-to-device copy of ``host`` and record ``ready``; returns at once."""
        self._wait_readers()
        self._upload.copy_htod(self._device, self._pinned)
        self.ready.record(self._upload)

    def close(self) -> None:
        if self._gpu is not None:
            self._gpu.close()
        self.ready.close()
        self._device.close()
        self._pinned.close()


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

    def enqueue(self, slot: InputSlot) -> Event:
        """Enqueue this engine's work for ``slot`` on its stream; returns the done event."""
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
        self._set_rows(context, 1, f"engine '{self._name}'")
        stream = self._stream
        stream.wait_event(slot.ready)
        if slot.device_ptr != self._bound_input:
            if not context.set_tensor_address(self._input_name, slot.device_ptr):
                raise ModelError(f"engine '{self._name}': cannot bind input '{self._input_name}'")
            self._bound_input = slot.device_ptr
        if self._t0 is not None:
            self._t0.record(stream)
        if not context.execute_async_v3(stream.ptr):
            raise ModelError(f"engine '{self._name}': execute_async_v3 failed (see the log)")
        if self._t1 is not None:
            self._t1.record(stream)
        if self._decode is not None:
            self._decode.enqueue(self._outputs[0].device.ptr, stream)
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
        if self._t0 is not None and self._t1 is not None:
            self.last_gpu_ms = self._t0.elapsed_ms(self._t1)
        if self._out32 is None:
            out: npt.NDArray[np.float32] = host
            return out
        np.copyto(self._out32, host, casting="same_kind")
        return self._out32

    async def infer(self, slot: InputSlot) -> npt.NDArray[np.float32] | Candidates:
        """Run on ``slot`` (filled) and return the raw float32 output, or with the GPU decode
        the candidates above the threshold (the raw output on an overflow frame)."""
        if self._busy:
            raise RuntimeError(f"engine '{self._name}': one infer at a time")
        self._busy = True
        try:
            done = self.enqueue(slot)
            # The polling waiter keeps its own per-stream estimate of the GPU time.
            await self._waiter.wait(done, self._stream)
            decode = self._decode
            if decode is None:
                return self.result()
            step = decode.after_wait(self._stream)
            if step == "overflow":
                for out in self._outputs:
                    self._stream.copy_dtoh(out.host, out.device)
            if step != "done":
                self._done.record(self._stream)
                await self._waiter.wait(self._done, self._stream)
            if step == "overflow":
                # A copy, like the candidates: the caller owns what a GPU-decoding engine returns.
                owned: npt.NDArray[np.float32] = self.result().copy()
                return owned
            if self._t0 is not None and self._t1 is not None:
                self.last_gpu_ms = self._t0.elapsed_ms(self._t1)
            return decode.candidates(0)
        finally:
            self._busy = False

    async def infer_batch(
        self, slots: Sequence[InputSlot]
    ) -> npt.NDArray[np.float32] | list[Candidates]:
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
            stream = self._stream
            batch.gather(stream, ours)
            self._set_rows(context, n, f"engine '{self._name}'")
            if batch.ptr != self._bound_input:
                if not context.set_tensor_address(self._input_name, batch.ptr):
                    raise ModelError(f"engine '{self._name}': cannot bind the batch input")
                self._bound_input = batch.ptr
            if self._t0 is not None:
                self._t0.record(stream)
            if not context.execute_async_v3(stream.ptr):
                raise ModelError(f"engine '{self._name}': execute_async_v3 failed (see the log)")
            if self._t1 is not None:
                self._t1.record(stream)
            decode = self._decode
            if decode is not None:
                decode.enqueue(self._outputs[0].device.ptr, stream, n)
            else:
                self._copy_rows(n)
            self._done.record(stream)
            for slot in ours:
                slot.add_reader(self._done)
            await self._waiter.wait(self._done, stream)
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
            if self._t0 is not None and self._t1 is not None:
                self.last_gpu_ms = self._t0.elapsed_ms(self._t1)
            return [decode.candidates(b) for b in range(n)]
        finally:
            self._busy = False

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


class TensorRTBackend:
    """TensorRT engines sharing one CUDA context, one upload stream and one waiter."""

    name = "tensorrt"

    def __init__(self, config: TensorRTConfig, device: int = 0, timing: bool = False) -> None:
        from edgeyolo.engines.trt_logger import make_logger  # noqa: PLC0415
        from edgeyolo.engines.trt_runtime import import_tensorrt  # noqa: PLC0415
        from edgeyolo.gpu import CudaContext, Stream, make_waiter  # noqa: PLC0415

        trt = import_tensorrt()
        self._config = config
        self._timing = timing
        self._ctx = CudaContext(device)
        self._trt_version = str(trt.__version__)
        self._logger = make_logger()
        self._runtime = trt.Runtime(self._logger)
        self._upload = Stream()
        self._waiter = make_waiter(config.wait)
        self._engines: list[TensorRTEngine] = []
        self._slots: list[TensorRTInputSlot] = []
        self._log = structlog.get_logger().bind(backend="tensorrt")
        self._log.info(
            "tensorrt backend",
            gpu=self._ctx.name,
            compute=".".join(map(str, self._ctx.compute_capability)),
            tensorrt=self._trt_version,
            wait=config.wait,
        )
        self._kernels = self._load_kernels(config)

    def _load_kernels(self, config: TensorRTConfig) -> GpuKernels | None:
        """The GPU path's kernels, or None (CPU letterbox and decode) when unwanted/unusable."""
        if config.gpu.preprocess == "cpu" and config.gpu.decode == "cpu":
            return None
        from edgeyolo.engines.trt_gpu import GpuKernels  # noqa: PLC0415

        try:
            return GpuKernels(self._ctx, config.gpu)
        except Exception as exc:  # no NVRTC library, a compile or load error: never fatal
            # Same results either way (the kernels match the CPU path): keep running.
            self._log.warning(
                "gpu path unavailable: letterbox and decode run on the CPU",
                error=f"{type(exc).__name__}: {exc}",
                hint="cuda-python with NVRTC (pip install cuda-bindings nvidia-cuda-nvrtc), "
                "or set tensorrt.gpu.preprocess/decode: cpu",
            )
            return None

    @property
    def context(self) -> CudaContext:
        """The CUDA context every engine and slot of this backend lives in."""
        return self._ctx

    def engine_path(self, model: ModelConfig) -> tuple[Path, dict[str, str]]:
        """The engine file for ``model`` (built and cached from an .onnx) and its metadata."""
        suffix = model.path.suffix.lower()
        if suffix == ".onnx":
            resolved = resolve_onnx(
                model.path,
                model.precision,
                cache_dir=self._config.cache_dir.expanduser(),
                ctx=self._ctx,
                trt_version=self._trt_version,
                allow_build=self._config.build,
                workspace_mib=self._config.workspace_mib,
                max_batch=model.max_batch,
            )
            return resolved.path, resolved.metadata
        if suffix in ENGINE_SUFFIXES:
            return model.path, check_engine_file(model.path, self._ctx, self._trt_version)
        raise ModelError(f"models[{model.name}].path: {model.path.name} is not .onnx or .engine")

    def open_engine(self, model: ModelConfig) -> TensorRTEngine:
        """Deserialize (building first if needed) and check the engine against ``model``."""
        self._ctx.check_thread()
        path, sidecar_meta = self.engine_path(model)
        data, header_meta = read_engine_file(path)
        engine = self._runtime.deserialize_cuda_engine(data)
        if engine is None:
            detail = "; ".join(self._logger.errors) or "see the TensorRT log above"
            raise ModelError(
                f"{path}: TensorRT {self._trt_version} cannot load this engine ({detail}). "
                "Engines only run with the TensorRT version and GPU they were built for: "
                "rebuild it here with `edgeyolo build`"
            )
        trt_engine = TensorRTEngine(
            model.name,
            engine,
            path,
            sidecar_meta or header_meta,
            self._ctx,
            self._waiter,
            timing=self._timing,
            max_batch=model.max_batch,
        )
        try:
            _labels, class_ids = check_model(model, trt_engine.info)
            # A batched engine's decoder holds batch_rows images (one launch per call).
            if self._kernels is not None and self._kernels.decode is not None:
                from edgeyolo.engines.trt_gpu import DeviceDecode  # noqa: PLC0415

                info = trt_engine.info
                trt_engine.use_gpu_decode(
                    DeviceDecode(
                        model.name,
                        self._kernels.decode,
                        trt_engine.output_layout,
                        info.num_classes,
                        info.kpt_shape,
                        model.conf,
                        class_ids,
                        self._config.gpu.decode_capacity,
                    )
                )
        except BaseException:
            trt_engine.close()
            raise
        self._engines.append(trt_engine)
        return trt_engine

    def allocate_input(self, spec: TensorSpec) -> TensorRTInputSlot:
        """A pinned + device input slot for ``spec`` (FP16 when the engines' input is)."""
        self._ctx.check_thread()
        gpu = None
        if self._kernels is not None and self._kernels.letterbox is not None:
            from edgeyolo.engines.trt_gpu import GpuFill  # noqa: PLC0415

            h, w = spec.hw
            gpu = GpuFill(self._kernels.letterbox, spec.dtype, w, h, self._kernels.integrated)
        try:
            slot = TensorRTInputSlot(spec, self._upload, gpu)
        except BaseException:
            if gpu is not None:
                gpu.close()
            raise
        self._slots.append(slot)
        return slot

    def close(self) -> None:
        """Finish GPU work, then release engines, slots, waiter, stream and context."""
        self._ctx.synchronize()
        for engine in reversed(self._engines):
            engine.close()
        self._engines.clear()
        for slot in reversed(self._slots):
            slot.close()
        self._slots.clear()
        if self._kernels is not None:
            self._kernels.close()
            self._kernels = None
        self._waiter.close()
        self._upload.close()
        self._ctx.close()
