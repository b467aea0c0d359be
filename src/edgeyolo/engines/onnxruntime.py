"""ONNX Runtime backend: the CPU path (and ORT's CUDA provider where onnxruntime-gpu is).

Each model's ``InferenceSession.run`` happens in a worker thread of one pool sized to the
number of engines; ORT releases the GIL while it computes, so every model of a frame runs
at the same time. ``intra_op_threads: auto`` (the default) splits this machine's cores among
the models that run at once (``cores // models``, at least 1): one model gets every core, four
models on two cores get one thread each instead of fighting over them. Spinning is off so
idle sessions don't burn CPU.

A batched model (``max_batch`` > 1) on the CPU provider runs its batches frame-parallel. It
also opens its file as a second session with the model's intra-op threads divided by
``max_batch`` (at least 1: one thread per frame on a small CPU such as 2 cores), and each
frame of a batch is one task in a pool that all batched models share, one thread per core
(``auto``; a number N: N threads; 1 or 0: no pool, a batch is one call). On a small CPU
the cores then run whole frames instead of splitting every operator of one frame between
threads: on the 2-core box four frames cost about 10-15 % less CPU and wall time this way
than as one 2-thread call (docs/benchmarks.md, "Batching several cameras on the CPU").
Sharing the pool keeps several batched models from running more frames at once than there
are cores, and lets the slower model's frames take the core the faster one is done with.
Single frames (batch-1 calls, and a batch of one) keep the intra-op threads, so a camera
alone still gets every core it is given.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import structlog

from edgeyolo import log
from edgeyolo.engines.base import HostFill, InputSlot, ModelInfo, TensorSpec
from edgeyolo.engines.model import info_from_metadata
from edgeyolo.errors import BackendUnavailableError, ModelError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from edgeyolo.config import ModelConfig, OnnxRuntimeConfig

_log = structlog.get_logger("edgeyolo.engines")
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def _ort() -> Any:
    try:
        import onnxruntime  # noqa: PLC0415 - keeps `edgeyolo --help` fast
    except ImportError as exc:  # pragma: no cover - a hard dependency
        raise BackendUnavailableError(
            "onnxruntime is not installed: pip install onnxruntime"
        ) from exc
    return onnxruntime


def _spec(arg: Any, path: Path) -> TensorSpec:
    dtype = _ORT_TYPES.get(arg.type)
    if dtype is None:
        raise ModelError(
            f"{path}: tensor '{arg.name}' has type {arg.type}; expected float or float16"
        )
    shape = tuple(d if isinstance(d, int) else -1 for d in arg.shape)
    return TensorSpec(arg.name, shape, np.dtype(dtype))


def usable_cores() -> int:
    """The cores this process may run on (CPU affinity where the OS has it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)  # pragma: no cover - macOS, Windows


def intra_op_threads(setting: int | str, concurrent_models: int, cores: int | None = None) -> int:
    """Threads per model run: ``auto`` splits ``cores`` among ``concurrent_models``, >= 1."""
    if isinstance(setting, int):
        return setting
    cores = usable_cores() if cores is None else cores
    return max(1, cores // max(1, concurrent_models))


def batch_lanes(setting: int | str, cores: int | None = None) -> int:
    """Frames that batched CPU models run at once, all of them together: ``auto`` one per
    core, else the setting (0, ONNX Runtime's default, counts as 1: a batch runs as one call)."""
    if isinstance(setting, int):
        return max(1, setting)
    return usable_cores() if cores is None else cores


def lane_threads(intra_op: int, max_batch: int) -> int:
    """Intra-op threads of each frame of a frame-parallel batch: the model's threads shared by
    a full batch's frames, at least 1 (so ``max_batch`` frames at once use what one frame
    would at batch 1)."""
    return max(1, intra_op // max(1, max_batch))


def open_session(path: Path, options: Any = None, providers: list[str] | None = None) -> Any:
    """Create an ``InferenceSession`` for ``path`` with errors that name the file."""
    ort = _ort()
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    # ORT's own log lines are plain text on stderr; edgeyolo.log decides how many (docs/logging.md).
    ort.set_default_logger_severity(log.ORT_SEVERITY)
    if options is None:
        options = ort.SessionOptions()
    options.log_severity_level = log.ORT_SEVERITY
    if providers is None:
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # ORT raises its own exception types for every failure
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"{path}: ONNX Runtime cannot load this model ({first}). Is it a complete, "
            "uncorrupted .onnx export?"
        ) from exc
    missing = [p for p in providers if p not in session.get_providers()]
    if missing:
        # ORT falls back silently (its own line is quieted): say so as a structured event.
        _log.warning(
            "execution provider not loaded",
            path=str(path),
            missing=missing,
            using=session.get_providers(),
        )
    return session


def session_info(session: Any, path: Path) -> ModelInfo:
    """Read a session's single image input, single output and Ultralytics metadata."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(
            f"{path}: expected 1 input and 1 output, found {len(inputs)} and {len(outputs)} "
            "(export with nms=False, end2end=False)"
        )
    meta = dict(session.get_modelmeta().custom_metadata_map)
    return info_from_metadata(path, meta, _spec(inputs[0], path), _spec(outputs[0], path))


def inspect_model(path: Path) -> ModelInfo:
    """Load ``path`` once (CPU) and return what it is."""
    ort = _ort()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return session_info(open_session(path, opts, ["CPUExecutionProvider"]), path)


class HostInputSlot(HostFill):
    """An input slot in ordinary host memory, filled by the CPU letterbox; ORT reads it."""

    def __init__(self, spec: TensorSpec) -> None:
        self._spec = spec
        self._host: npt.NDArray[np.floating] = np.zeros(spec.shape, spec.dtype)

    @property
    def spec(self) -> TensorSpec:
        return self._spec

    @property
    def host(self) -> npt.NDArray[np.floating]:
        return self._host

    def commit(self) -> None:
        """Nothing to publish: engines read ``host`` in place."""

    def close(self) -> None:
        """Host memory is freed with the object."""


class OnnxRuntimeEngine:
    """One ``InferenceSession`` run in the backend's thread pool.

    A dynamic-batch model opened with ``max_batch`` > 1 owns a host batch buffer of that many
    frames: ``infer_batch`` copies each camera's slot into its row (one memcpy of
    3 x H x W floats per frame: 4.9 MB at 640x640, about 0.25 ms) before it suspends, then
    runs those rows. With ``lanes`` (a second session with fewer intra-op threads, the backend's
    shared frame pool and its size; the CPU provider, see the module doc) a batch of two or
    more runs frame-parallel: each frame is one task in the pool, writing its row of the
    output. Otherwise the session runs once on the filled rows. Either way row i of the
    result is frame i, bit for bit what the frame gets alone.
    """

    def __init__(
        self,
        name: str,
        session: Any,
        info: ModelInfo,
        pool: ThreadPoolExecutor,
        max_batch: int = 1,
        lanes: tuple[Any, ThreadPoolExecutor, int] | None = None,
    ) -> None:
        self._name = name
        self._session = session
        self._info = info
        self._pool = pool
        self._in = info.input.name
        self._out = [info.output.name]
        self._batch: npt.NDArray[np.floating] | None = None
        if max_batch > 1:
            self._batch = np.zeros((max_batch, *info.input.shape[1:]), info.input.dtype)
        self._lane_session: Any = None
        self._lane_pool: ThreadPoolExecutor | None = None
        self._lanes = 1
        if lanes is not None and lanes[2] > 1 and max_batch > 1:
            self._lane_session, self._lane_pool, self._lanes = lanes

    @property
    def name(self) -> str:
        return self._name

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def lanes(self) -> int:
        """Frames run at once, each on one thread, by all batched models together (1: a batch
        runs as one call)."""
        return self._lanes

    def run_sync(self, host: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
        """Run the model on ``host`` on the calling thread."""
        out = self._session.run(self._out, {self._in: host})[0]
        return np.asarray(out, dtype=np.float32)

    def _run_frame(
        self, batch: npt.NDArray[np.floating], out: npt.NDArray[np.float32], i: int
    ) -> None:
        out[i] = self._lane_session.run(self._out, {self._in: batch[i : i + 1]})[0][0]

    @property
    def output_owned(self) -> bool:
        """``InferenceSession.run`` returns new arrays on every call."""
        return True

    async def infer(self, slot: InputSlot) -> npt.NDArray[np.float32]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.run_sync, slot.host)

    async def infer_batch(self, slots: Sequence[InputSlot]) -> npt.NDArray[np.float32]:
        """Copy each slot into its row of the batch buffer, then run those rows."""
        batch = self._batch
        n = len(slots)
        if batch is None or not 1 <= n <= batch.shape[0]:
            limit = 1 if batch is None else batch.shape[0]
            raise ValueError(f"engine '{self._name}': a batch of {n} frames, it takes 1 to {limit}")
        for i, slot in enumerate(slots):
            np.copyto(batch[i], slot.host[0])
        loop = asyncio.get_running_loop()
        pool = self._lane_pool
        if pool is None or n == 1:
            return await loop.run_in_executor(self._pool, self.run_sync, batch[:n])
        out = np.empty((n, *self._info.output.shape[1:]), np.float32)
        await asyncio.gather(
            *(loop.run_in_executor(pool, self._run_frame, batch, out, i) for i in range(n))
        )
        return out

    def close(self) -> None:
        self._lane_pool = None  # the backend's
        self._session = None
        self._lane_session = None
        self._batch = None


class OnnxRuntimeBackend:
    """Creates ONNX Runtime engines sharing one worker pool."""

    name = "onnxruntime"

    def __init__(self, config: OnnxRuntimeConfig, max_engines: int = 4) -> None:
        self._config = config
        # One worker per engine so every model of a frame runs at once.
        self._pool = ThreadPoolExecutor(max(1, max_engines), thread_name_prefix="ort")
        self.intra_op_threads = intra_op_threads(config.intra_op_threads, max_engines)
        self._engines: list[OnnxRuntimeEngine] = []
        # Batched CPU models' frames, one per thread, shared by all of them (module doc).
        self.batch_lanes = batch_lanes(config.intra_op_threads)
        self._frame_pool: ThreadPoolExecutor | None = None

    def open_engine(self, model: ModelConfig) -> OnnxRuntimeEngine:
        if model.path.suffix.lower() != ".onnx":
            raise ModelError(
                f"models[{model.name}].path: {model.path.name} is a TensorRT engine; the "
                "onnxruntime backend needs the .onnx file (or set backend: tensorrt)"
            )
        ort = _ort()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.intra_op_threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Spinning worker threads would steal the cores other models are using.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = open_session(model.path, opts, self._config.providers)
        info = session_info(session, model.path)
        lanes = None
        cpu_only = session.get_providers() == ["CPUExecutionProvider"]
        if model.max_batch > 1 and self.batch_lanes > 1 and cpu_only:
            # Frame-parallel batches: whole frames, the model's threads split among a full
            # batch's frames (1 each on a small CPU; module doc).
            opts.intra_op_num_threads = lane_threads(self.intra_op_threads, model.max_batch)
            lane_session = open_session(model.path, opts, ["CPUExecutionProvider"])
            if self._frame_pool is None:
                self._frame_pool = ThreadPoolExecutor(
                    self.batch_lanes, thread_name_prefix="ort-frame"
                )
            lanes = (lane_session, self._frame_pool, self.batch_lanes)
        engine = OnnxRuntimeEngine(
            model.name, session, info, self._pool, max_batch=model.max_batch, lanes=lanes
        )
        self._engines.append(engine)
        return engine

    def allocate_input(self, spec: TensorSpec) -> HostInputSlot:
        return HostInputSlot(spec)

    def close(self) -> None:
        for engine in reversed(self._engines):
            engine.close()
        self._engines.clear()
        self._pool.shutdown(wait=True)
        if self._frame_pool is not None:
            self._frame_pool.shutdown(wait=True)
            self._frame_pool = None
