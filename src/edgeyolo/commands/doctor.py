"""``edgeyolo doctor``: what this machine has, and whether the configured backend works.

Prints one line per check (Python, OS/JetPack, GPU and driver, CUDA, cuda-python, TensorRT,
ONNX Runtime, OpenCV's video back-ends), then, where TensorRT is usable, builds an FP16
engine from the bundled demo detection model, runs it on a bundled frame and compares it with
ONNX Runtime. Exit status 0 only when everything the configured backend needs works.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from edgeyolo.commands._common import DEMO_VIDEO
from edgeyolo.config import GpuPathConfig, TensorRTConfig
from edgeyolo.errors import SourceError

Status = Literal["ok", "FAIL", "warn", "info"]
_REPO = Path(__file__).resolve().parents[3]
DEMO_MODEL = _REPO / "models" / "edgeyolo-demo-det.onnx"
# FP16 engines vs the FP32 ONNX model: scores and boxes drift a little, classes must not.
MAX_REL_ERROR = {"fp32": 1e-3, "fp16": 2e-2, "int8": 1e-1}
MIN_MATCHED = 0.95


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the report; ``needed`` checks decide the exit status."""

    name: str
    status: Status
    detail: str
    needed: bool = False


def register(subparsers: Any) -> None:
    """Add the ``doctor`` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "doctor",
        help="check this machine: GPU, CUDA, TensorRT, ONNX Runtime, OpenCV; test an engine",
        # The module docstring without its reST markup: argparse prints it as it is.
        description=(__doc__ or "").replace("``edgeyolo doctor``: w", "W", 1).replace("``", "`"),
    )
    parser.add_argument(
        "-c", "--config", type=Path, default=None, help="config file (its backend and cache)"
    )
    parser.add_argument(
        "--backend",
        choices=("auto", "tensorrt", "onnxruntime"),
        default=None,
        help="backend to check for (default: the config's, else auto)",
    )
    parser.add_argument(
        "--model", type=Path, default=DEMO_MODEL, help="ONNX detection model for the engine test"
    )
    parser.add_argument(
        "--image", type=Path, default=None, help="image for the engine test (default: demo video)"
    )
    parser.add_argument(
        "--precision",
        choices=("fp32", "fp16", "int8"),
        default="fp16",
        help="precision of the test engine (fp16)",
    )
    parser.set_defaults(func=run)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_python() -> Check:
    ok = sys.version_info >= (3, 10)
    return Check(
        "python", "ok" if ok else "FAIL", f"{platform.python_version()} ({sys.executable})", True
    )


def check_os() -> Check:
    detail = f"{platform.system()} {platform.release()} {platform.machine()}"
    os_release = Path("/etc/os-release")
    if os_release.is_file():
        m = re.search(
            r'^PRETTY_NAME="?([^"\n]+)', os_release.read_text(encoding="utf-8"), re.MULTILINE
        )
        if m:
            detail = f"{m.group(1)}, {detail}"
    tegra = Path("/etc/nv_tegra_release")
    if tegra.is_file():
        first = tegra.read_text(encoding="utf-8", errors="replace").splitlines()[0]
        m = re.search(r"R(\d+).*REVISION:\s*([\d.]+)", first)
        jetpack = (
            {"35": "JetPack 5", "36": "JetPack 6", "38": "JetPack 7"}.get(m.group(1), "")
            if m
            else ""
        )
        l4t = f"L4T R{m.group(1)}.{m.group(2)}" if m else first.strip("# ")
        detail += f"; Jetson {l4t} {f'({jetpack})' if jetpack else ''}".rstrip()
    return Check("os", "info", detail)


def check_gpu(needed: bool) -> tuple[Check, Check]:
    """The GPU and driver, and CUDA as the driver and cuda-python report it."""
    from edgeyolo.engines.trt_runtime import cuda_problem  # noqa: PLC0415

    bindings = _version("cuda-bindings") or _version("cuda-python")
    cuda_py = Check(
        "cuda-python",
        "ok" if bindings else ("FAIL" if needed else "warn"),
        bindings or "not installed: pip install 'edgeyolo[tensorrt]'",
        needed,
    )
    problem = cuda_problem()
    if problem is not None:
        return Check("gpu", "FAIL" if needed else "warn", problem, needed), cuda_py
    from edgeyolo.gpu import CudaContext  # noqa: PLC0415

    with CudaContext(0) as ctx:
        major, minor = ctx.compute_capability
        cuda_major, cuda_minor = ctx.driver_version
        free, total = ctx.memory()
        detail = (
            f"{ctx.name}, compute {major}.{minor}, {total / 2**30:.1f} GiB "
            f"({free / 2**30:.1f} free); driver supports CUDA {cuda_major}.{cuda_minor}"
        )
    smi = shutil.which("nvidia-smi")
    if smi:
        out = subprocess.run(  # noqa: S603 - a fixed argument list, no shell
            [smi, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=False,
            timeout=20,
        ).stdout.strip()
        if out:
            detail += f", driver {out.splitlines()[0]}"
    return Check("gpu", "ok", detail, needed), cuda_py


def check_tensorrt(needed: bool) -> Check:
    from edgeyolo.engines.trt_runtime import import_tensorrt, tensorrt_problem  # noqa: PLC0415

    problem = tensorrt_problem()
    if problem is not None:
        return Check("tensorrt", "FAIL" if needed else "warn", problem, needed)
    trt = import_tensorrt()
    return Check(
        "tensorrt", "ok", f"{trt.__version__} ({Path(trt.__file__ or '?').parent})", needed
    )


def check_onnxruntime(needed: bool) -> Check:
    try:
        import onnxruntime as ort  # noqa: PLC0415
    except ImportError as exc:
        return Check("onnxruntime", "FAIL" if needed else "warn", f"not importable: {exc}", needed)
    providers = ", ".join(ort.get_available_providers())
    return Check("onnxruntime", "ok", f"{ort.__version__} ({providers})", needed)


def check_opencv(needed: bool) -> Check:
    """Which OpenCV is in use (version, origin, file) and its video back-ends."""
    try:
        from edgeyolo.sources.opencv import SYSTEM_OPENCV_DOC, opencv_info  # noqa: PLC0415

        info = opencv_info()
    except ImportError as exc:
        return Check("opencv", "FAIL", f"not importable: {exc}", needed)
    gst = f"GStreamer {info.gstreamer}" if info.gstreamer else "GStreamer NO"
    detail = (
        f"{info.version} ({info.origin}: {info.path}); {gst}, "
        f"FFMPEG {'YES' if info.ffmpeg else 'NO'}, V4L/V4L2 {'YES' if info.v4l2 else 'NO'}"
    )
    if not info.gstreamer:
        detail += f" (GStreamer cameras need an OpenCV with it: {SYSTEM_OPENCV_DOC})"
    return Check("opencv", "ok", detail, needed)


def _frame(image: Path | None) -> Any:
    from edgeyolo.sources.files import read_image, video_frames  # noqa: PLC0415

    if image is not None:
        return read_image(image)
    for _, img in video_frames(DEMO_VIDEO, keep={60}):
        return img
    raise SourceError(f"{DEMO_VIDEO}: has no frame 60 to check with; pass --image")


async def _engine_vs_onnxruntime(
    model: Path, image: Path | None, precision: str, cache_dir: Path
) -> tuple[str, float, float, int, int]:
    """Build/load the engine, run one frame, compare; returns timing and error figures."""
    import numpy as np  # noqa: PLC0415
    import onnxruntime as ort  # noqa: PLC0415

    from edgeyolo.config import ModelConfig  # noqa: PLC0415
    from edgeyolo.engines.model import inspect_onnx  # noqa: PLC0415
    from edgeyolo.engines.tensorrt import TensorRTBackend  # noqa: PLC0415
    from edgeyolo.preprocess import Preprocessor  # noqa: PLC0415
    from edgeyolo.runner import ModelRunner  # noqa: PLC0415

    task = inspect_onnx(model).metadata.get("task", "detect")
    cfg = ModelConfig(name="doctor", path=model, task=task, precision=precision)
    img = _frame(image)
    start = time.perf_counter()
    # The raw output is compared, so decode stays on the CPU here (the letterbox may be GPU).
    backend = TensorRTBackend(TensorRTConfig(cache_dir=cache_dir, gpu=GpuPathConfig(decode="cpu")))
    try:
        engine = ModelRunner.open(backend, cfg).engine
        ready = time.perf_counter() - start
        spec = engine.info.input
        # The reference input: the CPU letterbox, whatever way the slot fills itself.
        blob = np.zeros(spec.shape, np.float32)
        Preprocessor(*spec.hw)(img, blob)
        slot = backend.allocate_input(spec)
        slot.fill(img)
        raw = await engine.infer(slot)
        if not isinstance(raw, np.ndarray):
            raise TypeError("the engine decoded on the GPU; doctor compares raw outputs")
        out = raw.copy()
    finally:
        backend.close()
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    ref = session.run(None, {session.get_inputs()[0].name: blob})[0]
    rel = float(np.linalg.norm(out - ref) / max(float(np.linalg.norm(ref)), 1e-12))
    nc = engine.info.num_classes
    ref_s, out_s = ref[0, 4 : 4 + nc], out[0, 4 : 4 + nc]
    cand = ref_s.max(0) > 0.25
    same = cand & (ref_s.argmax(0) == out_s.argmax(0)) & (out_s.max(0) > 0.25)
    return (
        f"{ready:.1f} s to build/load",
        rel,
        float(np.abs(out - ref).max()),
        int(same.sum()),
        int(cand.sum()),
    )


def check_engine(args: argparse.Namespace, cache_dir: Path, needed: bool) -> Check:
    name = f"engine {args.precision} vs onnxruntime"
    try:
        took, rel, max_abs, matched, cands = asyncio.run(
            _engine_vs_onnxruntime(args.model, args.image, args.precision, cache_dir)
        )
    except Exception as exc:  # every failure becomes a report line, with its message
        return Check(name, "FAIL" if needed else "warn", f"{type(exc).__name__}: {exc}", needed)
    ok = rel <= MAX_REL_ERROR[args.precision] and (cands == 0 or matched >= MIN_MATCHED * cands)
    detail = (
        f"{took}; raw output relative error {rel:.2e} (max abs {max_abs:.3g}); "
        f"candidates above 0.25 matched {matched}/{cands}"
    )
    return Check(name, "ok" if ok else "FAIL", detail, needed)


def diagnose(args: argparse.Namespace) -> tuple[str, list[Check]]:
    """Run every check; returns the backend checked for and the report lines."""
    backend = args.backend
    cache_dir = TensorRTConfig().cache_dir.expanduser()
    if args.config is not None:
        from edgeyolo.config import load_config  # noqa: PLC0415

        cfg = load_config(args.config)
        backend = backend or cfg.backend
        cache_dir = cfg.tensorrt.cache_dir
    backend = backend or "auto"
    trt_needed = backend == "tensorrt"
    checks = [check_python(), check_os()]
    gpu, cuda_py = check_gpu(trt_needed)
    checks += [gpu, cuda_py, check_tensorrt(trt_needed)]
    checks += [check_onnxruntime(backend != "tensorrt"), check_opencv(needed=True)]
    trt_usable = all(
        c.status == "ok" for c in checks if c.name in {"gpu", "cuda-python", "tensorrt"}
    )
    if trt_usable:
        checks.append(check_engine(args, cache_dir, trt_needed))
    else:
        checks.append(
            Check(
                "engine test",
                "FAIL" if trt_needed else "info",
                "skipped: TensorRT is not usable here (see above)",
                trt_needed,
            )
        )
    if backend == "auto":
        engine_ok = trt_usable and checks[-1].status == "ok"
        chosen = "tensorrt" if engine_ok else "onnxruntime"
        checks.append(Check("backend auto", "info", f"would use {chosen}"))
    return backend, checks


def run(args: argparse.Namespace) -> int:
    """Print the report; 0 when every check the backend needs passed, else 1."""
    from edgeyolo.log import configure_logging  # noqa: PLC0415

    configure_logging(level="warning")
    backend, checks = diagnose(args)
    width = max(len(c.name) for c in checks)
    print(f"edgeyolo doctor (backend: {backend})")
    for c in checks:
        mark = c.status if c.needed or c.status != "FAIL" else "warn"
        print(f"  {mark:<4}  {c.name:<{width}}  {c.detail}")
    failed = [c.name for c in checks if c.needed and c.status == "FAIL"]
    if failed:
        print(f"not ready for backend {backend}: {', '.join(failed)}")
        return 1
    print(f"ready for backend {backend}")
    return 0
