"""A small fake of TensorRT's Python API, for contract tests where TensorRT cannot run.

It follows the real name-based API (``Logger``/``ILogger``, ``Runtime``, ``Builder``,
``OnnxParser``, ``ICudaEngine.num_io_tensors/get_tensor_name/get_tensor_mode/...``,
``IExecutionContext.set_tensor_address/set_input_shape/execute_async_v3``, the enums) closely
enough for edgeyolo's code to run unchanged against it. An "engine" is a small JSON document
pointing at the ONNX file it was "built" from; its I/O is read from that ONNX file, and
executing it runs the model with ONNX Runtime (CPU) underneath, copying through the device
addresses bound with ``set_tensor_address`` (which needs CUDA). ``set_executor`` swaps in
another execution stand-in, e.g. the PyTorch one in ``torch_context`` that enqueues real GPU
work on the stream.

What it proves: the calls, names, shapes, dtypes and buffer handling edgeyolo uses exist in
this form. What it does not: anything about TensorRT's own behaviour, speed or numerics.

Install it with ``sys.modules["tensorrt"] = fake_tensorrt`` (``install()``); ``configure``
sets the version, and with 11+ the FP16/INT8 builder flags disappear as they do in TensorRT 11.
"""

from __future__ import annotations

import enum
import hashlib
import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__version__ = "10.3.0.30"
MAGIC = b"FAKETRT1\n"
# The GPU the fake pretends engines were built for (the real TensorRT checks the device too).
FAKE_DEVICE = "fake-gpu"


class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    FP8 = 6
    BF16 = 7
    INT64 = 8


class TensorIOMode(enum.IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class TensorFormat(enum.IntEnum):
    LINEAR = 0
    CHW2 = 1
    HWC8 = 2
    CHW32 = 7


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0


class NetworkDefinitionCreationFlag(enum.IntEnum):
    EXPLICIT_BATCH = 0
    STRONGLY_TYPED = 1


class _BuilderFlag10(enum.IntEnum):
    FP16 = 0
    INT8 = 1
    DEBUG = 2
    TF32 = 6
    STRICT_TYPES = 5


class _BuilderFlag11(enum.IntEnum):
    DEBUG = 2
    TF32 = 6


BuilderFlag: type[enum.IntEnum] = _BuilderFlag10

_NP = {
    DataType.FLOAT: np.float32,
    DataType.HALF: np.float16,
    DataType.INT32: np.int32,
    DataType.INT8: np.int8,
}


def configure(version: str) -> None:
    """Pretend to be TensorRT ``version`` (11+ has no FP16/INT8 builder flags)."""
    global __version__, BuilderFlag  # noqa: PLW0603 - the fake is a module, like TensorRT
    __version__ = version
    BuilderFlag = _BuilderFlag11 if int(version.split(".", maxsplit=1)[0]) >= 11 else _BuilderFlag10
    sys.modules[__name__].__dict__["BuilderFlag"] = BuilderFlag


def install() -> Any:
    """Make ``import tensorrt`` return this module; returns it."""
    sys.modules["tensorrt"] = sys.modules[__name__]
    return sys.modules[__name__]


class Dims(tuple):  # noqa: SLOT001 - a tuple with TensorRT's Dims behaviour is enough
    """TensorRT's Dims: indexable, with len(); ``Dims([1, 3, 640, 640])`` as in TensorRT."""


# --- logging ---------------------------------------------------------------------------------


class ILogger:
    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    def __init__(self) -> None:
        pass

    def log(self, severity: ILogger.Severity, msg: str) -> None:
        raise NotImplementedError


class Logger(ILogger):
    INTERNAL_ERROR = ILogger.Severity.INTERNAL_ERROR
    ERROR = ILogger.Severity.ERROR
    WARNING = ILogger.Severity.WARNING
    INFO = ILogger.Severity.INFO
    VERBOSE = ILogger.Severity.VERBOSE

    def __init__(self, min_severity: ILogger.Severity = ILogger.Severity.WARNING) -> None:
        super().__init__()
        self.min_severity = min_severity
        self.messages: list[tuple[ILogger.Severity, str]] = []

    def log(self, severity: ILogger.Severity, msg: str) -> None:
        if severity <= self.min_severity:
            self.messages.append((severity, msg))


class IProgressMonitor:
    def __init__(self) -> None:
        pass


class IInt8Calibrator:
    def __init__(self) -> None:
        pass


class IInt8EntropyCalibrator2(IInt8Calibrator):
    pass


# --- engines and execution -------------------------------------------------------------------


def _onnx_io(path: Path) -> list[tuple[str, bool, tuple[int, ...], int]]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    io = []
    for vi, is_in in [(v, True) for v in model.graph.input if v.name not in inits] + [
        (v, False) for v in model.graph.output
    ]:
        t = vi.type.tensor_type
        shape = tuple(d.dim_value if d.dim_value > 0 else -1 for d in t.shape.dim)
        io.append((vi.name, is_in, shape, t.elem_type))
    return io


class ICudaEngine:
    """An engine described by a JSON document: which ONNX, which I/O types and formats."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.onnx = Path(doc["onnx"])
        io_type = DataType[doc.get("io_dtype", "FLOAT")]
        dynamic = bool(doc.get("dynamic_batch", False))
        self._io: dict[str, tuple[TensorIOMode, tuple[int, ...], DataType, TensorFormat]] = {}
        names = doc.get("io_names")
        for i, (name, is_in, shape, _elem) in enumerate(_onnx_io(self.onnx)):
            nm = names[i] if names else name
            shp = (-1, *shape[1:]) if dynamic else shape
            fmt = TensorFormat[doc.get("formats", {}).get(nm, "LINEAR")]
            mode = TensorIOMode.INPUT if is_in else TensorIOMode.OUTPUT
            self._io[nm] = (mode, shp, io_type, fmt)
        for extra in doc.get("extra_outputs", []):
            self._io[extra["name"]] = (
                TensorIOMode.OUTPUT,
                tuple(extra["shape"]),
                DataType[extra.get("dtype", "FLOAT")],
                TensorFormat.LINEAR,
            )

    @property
    def num_io_tensors(self) -> int:
        return len(self._io)

    def get_tensor_name(self, index: int) -> str:
        return list(self._io)[index]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return self._io[name][0] if name in self._io else TensorIOMode.NONE

    def get_tensor_shape(self, name: str) -> Dims:
        return Dims(self._io[name][1])

    def get_tensor_dtype(self, name: str) -> DataType:
        return self._io[name][2]

    def get_tensor_format(self, name: str) -> TensorFormat:
        return self._io[name][3]

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[Dims]:
        """(min, opt, max) of a dynamic input in profile 0: as built, or 1 frame by default."""
        mode, shape, _, _ = self._io[name]
        if mode != TensorIOMode.INPUT or -1 not in shape or profile_index != 0:
            raise RuntimeError(f"no optimization profile {profile_index} for '{name}'")
        built = self.doc.get("profiles", {}).get(name)
        if built is not None:
            return [Dims(tuple(d)) for d in built]
        one = Dims((1, *shape[1:]))
        return [one, one, one]

    def create_execution_context(self) -> IExecutionContext:
        return IExecutionContext(self)


ExecutorFactory = Callable[["IExecutionContext"], Callable[[int], None]]
_executor_factory: ExecutorFactory | None = None


def set_executor(factory: ExecutorFactory | None) -> None:
    """Use ``factory(context) -> run(stream_handle)`` to execute (None: ONNX Runtime)."""
    global _executor_factory  # noqa: PLW0603
    _executor_factory = factory


class IExecutionContext:
    """Holds bound addresses and input shapes; executes through the chosen stand-in."""

    def __init__(self, engine: ICudaEngine) -> None:
        self.engine = engine
        self.addresses: dict[str, int] = {}
        self.input_shapes: dict[str, tuple[int, ...]] = {}
        # One stand-in per input shape (a batched call changes the batch dimension).
        self._runs: dict[tuple[tuple[str, tuple[int, ...]], ...], Callable[[int], None]] = {}
        self._run: Callable[[int], None] | None = None  # the last one used (gpu-check reads it)
        self.executions = 0

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        mode, declared, _, _ = self.engine._io[name]
        if mode != TensorIOMode.INPUT or len(shape) != len(declared):
            return False
        if any(d not in (-1, s) for d, s in zip(declared, shape, strict=True)):
            return False
        if -1 in declared:  # TensorRT refuses shapes outside the optimization profile
            low, _opt, high = self.engine.get_tensor_profile_shape(name, 0)
            if not all(a <= s <= b for a, s, b in zip(low, shape, high, strict=True)):
                return False
        self.input_shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> Dims:
        mode, declared, _, _ = self.engine._io[name]
        if mode == TensorIOMode.INPUT:
            return Dims(self.input_shapes.get(name, declared))
        if declared and declared[0] == -1:
            batch = next(iter(self.input_shapes.values()), (-1,))[0]
            return Dims((batch, *declared[1:]))
        return Dims(declared)

    def set_tensor_address(self, name: str, memory: int) -> bool:
        if name not in self.engine._io or not memory:
            return False
        self.addresses[name] = int(memory)
        return True

    def get_tensor_address(self, name: str) -> int:
        return self.addresses.get(name, 0)

    def execute_async_v3(self, stream_handle: int) -> bool:
        missing = [n for n in self.engine._io if n not in self.addresses]
        if missing:
            return False  # TensorRT logs an error and returns False for unbound tensors
        shapes = tuple(sorted(self.input_shapes.items()))
        run = self._runs.get(shapes)
        if run is None:
            factory = _executor_factory or OrtExecutor
            run = self._runs[shapes] = factory(self)
        self._run = run
        run(int(stream_handle))
        self.executions += 1
        return True

    def io(self) -> list[tuple[str, TensorIOMode, tuple[int, ...], Any]]:
        """(name, mode, concrete shape, numpy dtype) of every tensor, for executors."""
        return [
            (n, m, tuple(self.get_tensor_shape(n)), _NP[dt])
            for n, (m, _s, dt, _f) in self.engine._io.items()
        ]


class OrtExecutor:
    """Runs the ONNX model with ONNX Runtime on the CPU, through the bound device addresses.

    Synchronizes the stream first and copies synchronously: a correct stand-in, not a fast or
    overlapping one.
    """

    def __init__(self, context: IExecutionContext) -> None:
        import onnxruntime as ort

        self.context = context
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        self.session = ort.InferenceSession(
            str(context.engine.onnx), opts, providers=["CPUExecutionProvider"]
        )

    def __call__(self, stream_handle: int) -> None:
        from edgeyolo.gpu import check, driver

        drv = driver()
        check(drv.cuStreamSynchronize(drv.CUstream(stream_handle)))
        feeds = {}
        outs = []
        for name, mode, shape, dtype in self.context.io():
            host = np.empty(shape, dtype)
            if mode == TensorIOMode.INPUT:
                check(drv.cuMemcpyDtoH(host.ctypes.data, self.context.addresses[name], host.nbytes))
                feeds[name] = host.astype(np.float32)
            else:
                outs.append((name, host))
        results = self.session.run([n for n, _ in outs], feeds)
        for (name, host), value in zip(outs, results, strict=True):
            host[...] = value
            check(drv.cuMemcpyHtoD(self.context.addresses[name], host.ctypes.data, host.nbytes))


class Runtime:
    def __init__(self, logger: ILogger) -> None:
        self.logger = logger

    def deserialize_cuda_engine(self, serialized_engine: bytes) -> ICudaEngine | None:
        data = bytes(serialized_engine)
        if not data.startswith(MAGIC):
            self.logger.log(ILogger.Severity.ERROR, "Serialization assertion: magic tag mismatch")
            return None
        doc = json.loads(data[len(MAGIC) :])
        if doc.get("tensorrt_version") != __version__:
            # What the real TensorRT does with an engine from another version.
            got = doc.get("tensorrt_version")
            msg = (
                "The engine plan file is not compatible with this version of TensorRT, "
                f"expecting library version {__version__} got {got}"
            )
            self.logger.log(ILogger.Severity.ERROR, msg)
            return None
        return ICudaEngine(doc)


def fake_engine_bytes(onnx: Path, **fields: Any) -> bytes:
    """Serialize a fake engine for ``onnx`` (fields: io_dtype, dynamic_batch, formats, ...)."""
    doc = {"onnx": str(onnx), "tensorrt_version": __version__, **fields}
    return MAGIC + json.dumps(doc).encode()


# --- building --------------------------------------------------------------------------------


class INetworkDefinition:
    def __init__(self, flags: int) -> None:
        self.flags = flags
        self.onnx: Path | None = None
        self.inputs: list[tuple[str, tuple[int, ...]]] = []

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    def get_input(self, index: int) -> Any:
        name, shape = self.inputs[index]
        return type("ITensor", (), {"name": name, "shape": Dims(shape)})()


class ParserError:
    def __init__(self, desc: str) -> None:
        self._desc = desc

    def desc(self) -> str:
        return self._desc

    def __str__(self) -> str:
        return self._desc


class OnnxParser:
    def __init__(self, network: INetworkDefinition, logger: ILogger) -> None:
        self.network = network
        self.logger = logger
        self.errors: list[ParserError] = []

    def parse_from_file(self, model: str) -> bool:
        path = Path(model)
        try:
            io = _onnx_io(path)
        except Exception as exc:
            self.errors.append(ParserError(f"cannot parse {path}: {exc}"))
            return False
        if any(part.startswith(".fp16-") for part in path.parts):
            # edgeyolo deletes its temporary FP16 copy after the build; a real engine is
            # self-contained, ours points at its ONNX file, so keep one.
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
            keep = Path(tempfile.gettempdir()) / "fake_tensorrt" / f"{digest}-{path.name}"
            keep.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, keep)
            path = keep
        self.network.onnx = path
        self.network.inputs = [(n, s) for n, is_in, s, _ in io if is_in]
        return True

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, index: int) -> ParserError:
        return self.errors[index]


class ITimingCache:
    def __init__(self, data: bytes) -> None:
        self.data = bytes(data) or b"fake-timing-cache:"

    def serialize(self) -> bytes:
        return self.data + b"+"


class IOptimizationProfile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple[Dims, Dims, Dims]] = {}

    def set_shape(self, input: str, min: Dims, opt: Dims, max: Dims) -> None:  # noqa: A002
        self.shapes[input] = (min, opt, max)


class IBuilderConfig:
    def __init__(self) -> None:
        self.profiles: list[IOptimizationProfile] = []
        self.flags: set[str] = set()
        self.pools: dict[str, int] = {}
        self.progress_monitor: IProgressMonitor | None = None
        self.int8_calibrator: IInt8Calibrator | None = None
        self._timing_cache: ITimingCache | None = None

    def set_flag(self, flag: enum.IntEnum) -> None:
        if not isinstance(flag, BuilderFlag):
            raise TypeError(f"{flag!r} is not a BuilderFlag of TensorRT {__version__}")
        self.flags.add(flag.name)

    def get_flag(self, flag: enum.IntEnum) -> bool:
        return flag.name in self.flags

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def set_memory_pool_limit(self, pool: MemoryPoolType, pool_size: int) -> None:
        self.pools[pool.name] = pool_size

    def create_timing_cache(self, serialized_timing_cache: bytes) -> ITimingCache:
        return ITimingCache(serialized_timing_cache)

    def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
        del ignore_mismatch
        self._timing_cache = cache
        return True

    def get_timing_cache(self) -> ITimingCache:
        assert self._timing_cache is not None
        return self._timing_cache


class IHostMemory(bytes):
    """The serialized engine; supports the buffer protocol like TensorRT's."""


class Builder:
    def __init__(self, logger: ILogger) -> None:
        self.logger = logger
        self.last_config: IBuilderConfig | None = None
        self.last_network: INetworkDefinition | None = None

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        return INetworkDefinition(flags)

    def create_builder_config(self) -> IBuilderConfig:
        return IBuilderConfig()

    def create_optimization_profile(self) -> IOptimizationProfile:
        return IOptimizationProfile()

    def build_serialized_network(
        self, network: INetworkDefinition, config: IBuilderConfig
    ) -> IHostMemory | None:
        self.last_config, self.last_network = config, network
        if network.onnx is None:
            self.logger.log(ILogger.Severity.ERROR, "network has no layers")
            return None
        monitor = config.progress_monitor
        if monitor is not None:
            monitor.phase_start("Building engine", None, 2)
            monitor.step_complete("Building engine", 0)
            monitor.step_complete("Building engine", 1)
            monitor.phase_finish("Building engine")
        strongly = bool(network.flags & (1 << NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        doc = {
            "io_dtype": "FLOAT",
            "builder_flags": sorted(config.flags),
            "strongly_typed": strongly,
            "calibrated": config.int8_calibrator is not None,
        }
        if config.profiles:
            doc["profiles"] = {
                name: [list(d) for d in dims] for name, dims in config.profiles[0].shapes.items()
            }
        return IHostMemory(fake_engine_bytes(network.onnx, **doc))


def write_fake_engine(
    dest: Path, onnx: Path, gpu_name: str, compute: str, precision: str = "fp32", **fields: Any
) -> Path:
    """Write a fake engine for ``onnx`` plus the sidecar edgeyolo writes for its own builds."""
    from edgeyolo.engines.cache import EngineKey, Sidecar, sidecar_path
    from edgeyolo.engines.model import inspect_onnx

    facts = inspect_onnx(onnx)
    dest.write_bytes(fake_engine_bytes(onnx, **fields))
    key = EngineKey(facts.sha256, precision, gpu_name, compute, __version__)
    Sidecar(key=key, metadata=facts.metadata, onnx=str(onnx)).write(sidecar_path(dest))
    return dest
