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

The backend is here; the engine (engines/trt_engine.py), its input slots (trt_slot.py), what
an engine file holds (trt_io.py), the GPU path (trt_gpu.py) and batching (trt_batch.py) have
modules of their own. ``tensorrt`` and ``cuda`` are imported inside functions only: this
module imports anywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import structlog

from edgeyolo.engines.base import TensorSpec
from edgeyolo.engines.cache import (
    ENGINE_SUFFIXES,
    check_engine_file,
    resolve_onnx,
)
from edgeyolo.engines.model import check_model
from edgeyolo.engines.trt_engine import TensorRTEngine
from edgeyolo.engines.trt_io import describe_io, engine_model_info, read_engine_file
from edgeyolo.engines.trt_runtime import tensorrt_unavailable_reason
from edgeyolo.engines.trt_slot import TensorRTInputSlot
from edgeyolo.errors import ModelError

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Mapping, Sequence

    from edgeyolo.config import ModelConfig, TensorRTConfig
    from edgeyolo.engines.base import Engine, FrameLaunch, InputSlot
    from edgeyolo.engines.trt_gpu import GpuKernels
    from edgeyolo.engines.trt_graph import FrameGraph
    from edgeyolo.engines.trt_group import BatchGroup, GroupMember
    from edgeyolo.gpu import CudaContext, PinnedBuffer
    from edgeyolo.sources.pool import FramePool


FRAME_POOL_SIZE = 6  # per camera: pending, staged, in the engines, in stages and sinks, + 2

__all__ = [
    "TensorRTBackend",
    "TensorRTEngine",
    "TensorRTInputSlot",
    "describe_io",
    "engine_model_info",
    "read_engine_file",
    "tensorrt_unavailable_reason",  # the probe engines.select calls for backend: auto
]


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
        self._launches: list[FrameGraph] = []
        self._groups: dict[tuple[int, ...], BatchGroup] = {}
        self._frame_buffers: dict[int, PinnedBuffer] = {}  # frame pools' buffers by address
        self._pools: list[FramePool] = []
        self._graph_reasons: set[str] = set()
        self._log = structlog.get_logger().bind(backend="tensorrt")
        self._log.info(
            "tensorrt backend",
            gpu=self._ctx.name,
            compute=".".join(map(str, self._ctx.compute_capability)),
            tensorrt=self._trt_version,
            wait=config.wait,
            cuda_graph=config.gpu.cuda_graph,
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
        trt_engine.batch_timeout_ms = model.batch_timeout_ms
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
                        nms=(model.iou, model.max_det) if self._config.gpu.nms == "gpu" else None,
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
            gpu = GpuFill(
                self._kernels.letterbox,
                spec.dtype,
                w,
                h,
                self._kernels.integrated,
                frames=self._frame_buffers,
            )
        try:
            slot = TensorRTInputSlot(spec, self._upload, gpu)
        except BaseException:
            if gpu is not None:
                gpu.close()
            raise
        self._slots.append(slot)
        return slot

    def frame_pool(self, shape: tuple[int, ...], count: int = FRAME_POOL_SIZE) -> FramePool | None:
        """Pinned buffers of the camera's frame size for its capture to decode into, so the GPU
        letterbox uploads the frame in place (mapped memory on integrated GPUs: the kernel
        reads it in place); None without the GPU letterbox, or for frames it does not take."""
        if self._kernels is None or self._kernels.letterbox is None:
            return None
        if len(shape) != 3 or shape[2] != 3:
            return None
        from edgeyolo.gpu import PinnedBuffer  # noqa: PLC0415
        from edgeyolo.sources.pool import FramePool  # noqa: PLC0415

        self._ctx.check_thread()
        buffers = []
        for _ in range(count):
            buf = PinnedBuffer(tuple(shape), np.uint8, mapped=self._kernels.integrated)
            self._frame_buffers[buf.ptr] = buf
            buffers.append(buf.array)
        pool = FramePool(buffers)
        self._pools.append(pool)
        return pool

    def frame_launch(
        self,
        slots: Mapping[TensorSpec, InputSlot],
        engines: Sequence[Engine],
        owner: object = None,
        locks: Sequence[asyncio.Lock] = (),
    ) -> FrameLaunch | None:
        """One launch per frame for these engines on this slot set (``tensorrt.gpu.cuda_graph``),
        or for a batch of cameras' frames when every model batches (``max_batch`` > 1, the
        same for all, GPU letterbox; ``owner``: the camera, ``locks``: its runners' locks, which
        a batch holds while it uses the engines); None: each engine on its own
        (graphs off, or batched models without the GPU letterbox: the per-model batcher)."""
        mode = self._config.gpu.cuda_graph
        ours = [e for e in engines if isinstance(e, TensorRTEngine)]
        mine = {s: v for s, v in slots.items() if isinstance(v, TensorRTInputSlot)}
        rows = {e.batch_rows for e in ours}
        reason = ""
        if len(ours) != len(engines) or len(mine) != len(slots) or not ours:
            reason = "engines or slots of another backend"
        elif rows != {1}:
            if len(rows) > 1 or 1 in rows:
                reason = "models with different max_batch (per-model batching)"
            elif any(v.gpu_fill is None for v in mine.values()):
                reason = "batched models with the CPU letterbox (per-model batching)"
            else:
                return self._group_member(mine, ours, rows.pop(), owner, locks)
        elif mode == "off":
            reason = "tensorrt.gpu.cuda_graph is off"
        if reason:
            if reason not in self._graph_reasons:
                self._graph_reasons.add(reason)
                self._log.info("one launch per frame not used", reason=reason)
            return None
        from edgeyolo.engines.trt_graph import FrameGraph  # noqa: PLC0415

        launch = FrameGraph(mine, ours, self._upload, self._waiter, mode)
        self._launches.append(launch)
        return launch

    def _group_member(
        self,
        slots: Mapping[TensorSpec, TensorRTInputSlot],
        engines: Sequence[TensorRTEngine],
        rows: int,
        owner: object,
        locks: Sequence[asyncio.Lock],
    ) -> GroupMember:
        """The camera's place in the batched launch of these engines (made on first use)."""
        from edgeyolo.engines.trt_group import BatchGroup, GroupMember  # noqa: PLC0415

        key = tuple(id(e) for e in engines)
        group = self._groups.get(key)
        if group is None:
            timeout = min(e.batch_timeout_ms for e in engines)
            group = BatchGroup(
                engines, rows, timeout, self._upload, self._waiter, self._config.gpu.cuda_graph
            )
            self._groups[key] = group
            self._log.info(
                "batched launch: cameras share one launch per batch",
                engines=[e.name for e in engines],
                max_batch=rows,
                batch_timeout_ms=timeout,
            )
        return GroupMember(group, slots, owner, locks)

    def close(self) -> None:
        """Finish GPU work, then release engines, slots, waiter, stream and context."""
        self._ctx.synchronize()
        for launch in reversed(self._launches):
            launch.close()
        self._launches.clear()
        for group in self._groups.values():
            group.close()
        self._groups.clear()
        for engine in reversed(self._engines):
            engine.close()
        self._engines.clear()
        for slot in reversed(self._slots):
            slot.close()
        self._slots.clear()
        for pool in self._pools:
            for array in pool.close():  # only buffers no frame refers to any more
                self._frame_buffers.pop(array.ctypes.data).close()
        self._pools.clear()
        # Buffers still referenced by a frame somewhere stay allocated (a few MB, at exit).
        if self._kernels is not None:
            self._kernels.close()
            self._kernels = None
        self._waiter.close()
        self._upload.close()
        self._ctx.close()
