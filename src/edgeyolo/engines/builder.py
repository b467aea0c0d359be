"""ONNX -> TensorRT engine: build options per TensorRT version, the builder, the calibrator.

Every engine built here gets its sidecar (``engines/cache.py``), so the cache can tell later
whether it still fits this GPU and TensorRT.

Precision by TensorRT version (what this module relies on, from NVIDIA's documentation):

- 8.5 - 10.x: networks are "weakly typed" by default; ``BuilderFlag.FP16`` / ``INT8`` allow
  the builder to pick those kernels. INT8 comes either from Q/DQ nodes in the ONNX (explicit
  quantization, from ``edgeyolo quantize --target tensorrt``) or, for a plain FP32 ONNX, from
  the entropy calibrator fed with letterboxed frames (implicit quantization, deprecated in
  10.x). 8.x needs ``NetworkDefinitionCreationFlag.EXPLICIT_BATCH`` for ONNX models.
- 11 and later: the precision flags and the implicit-quantization calibrators are gone; the
  network is strongly typed, so precision comes from the ONNX itself: FP32 weights build FP32,
  an FP16 ONNX builds FP16, a Q/DQ ONNX builds INT8. We refuse the combinations that cannot
  be honoured instead of silently building another precision.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from edgeyolo.engines.cache import (
    PRECISIONS,
    EngineKey,
    GpuIdentity,
    Precision,
    ProgressFn,
    Sidecar,
    atomic_write,
    current_key,
    sidecar_path,
)
from edgeyolo.engines.model import OnnxFacts, inspect_onnx
from edgeyolo.engines.trt_logger import make_logger
from edgeyolo.errors import ModelError

# --- build options per TensorRT version -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class BuildPlan:
    """How to ask a given TensorRT for a given precision (names of TensorRT enum members)."""

    network_flags: tuple[str, ...]
    builder_flags: tuple[str, ...]
    calibrator: bool
    note: str


def plan_build(  # noqa: PLR0911 - one early return per (version, precision) case reads best
    trt_version: tuple[int, ...],
    precision: Precision,
    onnx: OnnxFacts,
    have_calibration: bool,
) -> BuildPlan:
    """Translate a precision into network/builder flags for ``trt_version``.

    Raises ``ModelError`` for a combination this TensorRT cannot build, saying what to do.
    """
    if precision not in PRECISIONS:
        raise ModelError(
            f"unknown precision '{precision}'; expected one of {', '.join(PRECISIONS)}"
        )
    if onnx.qdq and onnx.quantized_for not in (None, "tensorrt"):
        raise ModelError(
            f"{onnx.path}: this Q/DQ model was quantized for '{onnx.quantized_for}' "
            "(unsigned activations), which TensorRT does not accept; run "
            "`edgeyolo quantize --target tensorrt` on the FP32 model"
        )
    if onnx.qdq and precision != "int8":
        raise ModelError(
            f"{onnx.path} is INT8-quantized (Q/DQ nodes); build it with --precision int8, or "
            f"use the FP32 model for {precision}"
        )
    major = trt_version[0] if trt_version else 0
    if major >= 11:
        # Strongly typed: the ONNX decides. The flag is the default there; name it anyway
        # where it still exists (checked when applied).
        net: tuple[str, ...] = ("STRONGLY_TYPED",)
        if precision == "fp32":
            if onnx.fp16:
                raise ModelError(
                    f"{onnx.path} has FP16 weights; TensorRT {major} builds it as FP16. "
                    "Use --precision fp16, or an FP32 export for fp32"
                )
            return BuildPlan(net, (), calibrator=False, note="strongly typed, FP32 from the ONNX")
        if precision == "fp16":
            if not onnx.fp16:
                raise ModelError(
                    f"{onnx.path} is an FP32 model, and TensorRT {major} takes precision from "
                    "the network (no FP16 builder flag any more): export an FP16 ONNX (e.g. "
                    "Ultralytics `yolo export format=onnx half=True`) and build that, or use "
                    "--precision fp32"
                )
            return BuildPlan(net, (), calibrator=False, note="strongly typed, FP16 from the ONNX")
        if not onnx.qdq:
            raise ModelError(
                f"{onnx.path} has no Q/DQ nodes, and TensorRT {major} removed implicit INT8 "
                "calibration: run `edgeyolo quantize --target tensorrt` and build its output "
                "with --precision int8"
            )
        return BuildPlan(net, (), calibrator=False, note="strongly typed, INT8 from Q/DQ nodes")
    net = ("EXPLICIT_BATCH",) if major < 10 else ()
    if precision == "fp32":
        return BuildPlan(net, (), calibrator=False, note="FP32 (TF32 allowed where the GPU has it)")
    if precision == "fp16":
        return BuildPlan(net, ("FP16",), calibrator=False, note="FP16 kernels allowed")
    if onnx.qdq:
        # FP16 too, for the layers left unquantized (the head, the decode arithmetic).
        return BuildPlan(
            net, ("INT8", "FP16"), calibrator=False, note="explicit INT8 from Q/DQ nodes"
        )
    if not have_calibration:
        raise ModelError(
            f"{onnx.path} has no Q/DQ nodes: INT8 needs calibration frames (edgeyolo build "
            "--precision int8 --calib DIR_OR_VIDEO) or a Q/DQ model from `edgeyolo quantize "
            "--target tensorrt`"
        )
    return BuildPlan(
        net, ("INT8", "FP16"), calibrator=True, note="implicit INT8, entropy calibration"
    )


# --- building -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BuildRequest:
    """Everything one build needs besides the ONNX file."""

    precision: Precision = "fp16"
    workspace_mib: int = 1024
    timing_cache: Path | None = None
    calibration: Path | None = None  # images folder or video, for implicit INT8
    calibration_frames: int = 64
    calibration_cache: Path | None = None
    max_batch: int = 1  # dynamic-batch ONNX: the profile is min 1 / opt and max max_batch


@dataclass(frozen=True, slots=True)
class BuildResult:
    """What ``build_engine`` wrote."""

    engine: Path
    sidecar: Path
    key: EngineKey
    plan: BuildPlan
    seconds: float
    size_bytes: int


def _progress_monitor(progress: ProgressFn) -> Any:
    """An ``IProgressMonitor`` (TensorRT 10+) turning phases and steps into progress lines."""
    import tensorrt as trt  # noqa: PLC0415

    class _Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.steps: dict[str, int] = {}
            self.depth: dict[str, int] = {}
            self.last = 0.0

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            self.depth[phase_name] = self.depth.get(parent_phase or "", -1) + 1
            self.steps[phase_name] = num_steps
            if self.depth[phase_name] <= 1:
                progress(f"{'  ' * self.depth[phase_name]}{phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name: str, step: int) -> bool:
            now = time.monotonic()
            # Builders report thousands of tactic steps; a line every 2 s is enough.
            if self.depth.get(phase_name, 0) == 0 and now - self.last > 2.0:
                self.last = now
                progress(f"{phase_name}: step {step + 1}/{self.steps.get(phase_name, '?')}")
            return True

        def phase_finish(self, phase_name: str) -> None:
            if self.depth.get(phase_name, 0) == 0:
                progress(f"{phase_name} done")

    return _Monitor()


@contextlib.contextmanager
def _heartbeat(say: ProgressFn, start: float, every_s: float = 20.0) -> Iterator[None]:
    """A line every ``every_s`` while the builder works (TensorRT 8.x reports no progress)."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every_s):
            say(f"still building ({time.perf_counter() - start:.0f} s)")

    thread = threading.Thread(target=beat, name="trt-build-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _calibrator(request: BuildRequest, input_shape: tuple[int, ...], progress: ProgressFn) -> Any:
    """An entropy calibrator (TensorRT < 11) fed with letterboxed frames, with a cache file."""
    import tensorrt as trt  # noqa: PLC0415

    from edgeyolo.gpu import DeviceBuffer, PinnedBuffer  # noqa: PLC0415
    from edgeyolo.preprocess import Preprocessor  # noqa: PLC0415
    from edgeyolo.sources.files import iter_frames  # noqa: PLC0415

    assert request.calibration is not None
    h, w = int(input_shape[2]), int(input_shape[3])
    # Spread over the whole source: a calibration should see its variety, not its start.
    frames: Iterator[Any] = iter_frames(
        request.calibration, request.calibration_frames, spread=True
    )
    cache = request.calibration_cache

    class _EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.pre = Preprocessor(h, w)
            self.host = PinnedBuffer((1, 3, h, w), np.float32)
            self.device = DeviceBuffer(self.host.nbytes)
            self.count = 0

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> list[int]:
            del names
            image = next(frames, None)
            if image is None:
                return []  # no more batches
            self.pre(image, self.host.array)
            from edgeyolo.gpu import check, driver  # noqa: PLC0415

            drv = driver()
            # Synchronous copy: TensorRT reads the buffer right after get_batch returns.
            check(drv.cuMemcpyHtoD(self.device.handle, self.host.ptr, self.host.nbytes))
            self.count += 1
            if self.count % 16 == 0:
                progress(f"calibration: {self.count} frames")
            return [self.device.ptr]

        def read_calibration_cache(self) -> bytes | None:
            if cache is not None and cache.is_file():
                progress(f"calibration: reusing {cache}")
                return cache.read_bytes()
            return None

        def write_calibration_cache(self, data: Any) -> None:
            if cache is not None:
                atomic_write(cache, bytes(data))

        def close(self) -> None:
            self.device.close()
            self.host.close()

    return _EntropyCalibrator()


def build_engine(
    onnx_path: Path,
    out: Path,
    request: BuildRequest,
    ctx: GpuIdentity,
    *,
    progress: ProgressFn | None = None,
    facts: OnnxFacts | None = None,
) -> BuildResult:
    """Build ``onnx_path`` into ``out`` (+ sidecar), reusing and updating the timing cache."""
    import tensorrt as trt  # noqa: PLC0415

    from edgeyolo.engines.trt_runtime import import_tensorrt, tensorrt_version  # noqa: PLC0415

    import_tensorrt()  # a clear BackendUnavailableError instead of AttributeErrors below
    say: ProgressFn = progress or (lambda _msg: None)
    facts = facts or inspect_onnx(onnx_path)
    version = tensorrt_version(trt)
    if version[:1] >= (11,) and request.precision == "fp16" and not (facts.fp16 or facts.qdq):
        # TensorRT 11 takes FP16 from the network itself: build from an FP16 copy.
        from edgeyolo.engines.fp16 import convert_to_fp16  # noqa: PLC0415

        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=".fp16-") as tmp:
            half = convert_to_fp16(onnx_path, Path(tmp) / f"{onnx_path.stem}.fp16.onnx")
            say(f"TensorRT {trt.__version__}: built from an FP16 copy of the FP32 model")
            return _build(
                onnx_path, half, out, request, ctx, say, dataclasses.replace(facts, fp16=True)
            )
    return _build(onnx_path, onnx_path, out, request, ctx, say, facts)


def _build(
    onnx_path: Path,
    parse_path: Path,
    out: Path,
    request: BuildRequest,
    ctx: GpuIdentity,
    say: ProgressFn,
    facts: OnnxFacts,
) -> BuildResult:
    import tensorrt as trt  # noqa: PLC0415

    from edgeyolo.engines.trt_runtime import tensorrt_version  # noqa: PLC0415

    log = structlog.get_logger().bind(onnx=str(onnx_path), precision=request.precision)
    version = tensorrt_version(trt)
    plan = plan_build(version, request.precision, facts, request.calibration is not None)
    key = current_key(facts.sha256, request.precision, ctx, trt.__version__, request.max_batch)
    say(f"building {out.name}: {plan.note}, TensorRT {trt.__version__} on {ctx.name}")
    start = time.perf_counter()

    logger = make_logger(log)
    builder = trt.Builder(logger)
    net_flags = 0
    for name in plan.network_flags:
        member = getattr(trt.NetworkDefinitionCreationFlag, name, None)
        if member is not None:  # e.g. STRONGLY_TYPED may be implicit in TensorRT 11
            net_flags |= 1 << int(member)
    network = builder.create_network(net_flags)
    parser = trt.OnnxParser(network, logger)
    parsed: bool = parser.parse_from_file(str(parse_path))
    if not parsed:
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ModelError(f"{onnx_path}: TensorRT's ONNX parser failed: {'; '.join(errors)}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, request.workspace_mib << 20)
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    if hasattr(config, "progress_monitor"):
        config.progress_monitor = _progress_monitor(say)
    cache_bytes = b""
    if request.timing_cache is not None and request.timing_cache.is_file():
        cache_bytes = request.timing_cache.read_bytes()
        say(f"timing cache: {request.timing_cache} ({len(cache_bytes) // 1024} KiB)")
    timing_cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(timing_cache, ignore_mismatch=False)
    inp = network.get_input(0)
    shape = tuple(int(inp.shape[i]) for i in range(len(inp.shape)))
    if any(d < 0 for d in shape[1:]):
        raise ModelError(
            f"{onnx_path}: input '{inp.name}' has a dynamic image size {shape}; export the "
            "ONNX with a fixed imgsz"
        )
    if shape and shape[0] < 0:
        # A dynamic batch needs an optimization profile: 1 to max_batch frames per call,
        # tuned for full batches (one frame per camera).
        one = trt.Dims([1, *shape[1:]])
        full = trt.Dims([request.max_batch, *shape[1:]])
        profile = builder.create_optimization_profile()
        profile.set_shape(inp.name, one, full, full)
        config.add_optimization_profile(profile)
        shape = (1, *shape[1:])
    elif request.max_batch > 1:
        raise ModelError(
            f"{onnx_path}: max_batch is {request.max_batch}, but input '{inp.name}' has a static "
            f"batch ({'x'.join(map(str, shape))}): export the ONNX with dynamic=True to batch"
        )
    calibrator = None
    if plan.calibrator:
        calibrator = _calibrator(request, shape, say)
        config.int8_calibrator = calibrator
    try:
        with _heartbeat(say, start):
            # None on failure, whatever the stubs say.
            serialized: trt.IHostMemory | None = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.close()
    if serialized is None:
        detail = "; ".join(logger.errors) or "see the log above"
        raise ModelError(f"{onnx_path}: TensorRT could not build an engine: {detail}")
    data = bytes(memoryview(serialized))
    atomic_write(out, data)
    if request.timing_cache is not None:
        atomic_write(request.timing_cache, bytes(memoryview(config.get_timing_cache().serialize())))
    seconds = time.perf_counter() - start
    side = sidecar_path(out)
    Sidecar(
        key=key,
        metadata=facts.metadata,
        onnx=str(onnx_path),
        built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        build_seconds=round(seconds, 1),
    ).write(side)
    log.info("engine built", engine=str(out), seconds=round(seconds, 1), bytes=len(data))
    say(f"built {out} in {seconds:.1f} s ({len(data) / 1e6:.1f} MB)")
    return BuildResult(out, side, key, plan, seconds, len(data))
