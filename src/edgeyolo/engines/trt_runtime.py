"""Finding a usable TensorRT: imported lazily, recognised by what it provides.

``import tensorrt`` is not proof of TensorRT: with the ``tensorrt-stubs`` type stubs installed
it succeeds as an empty namespace package. A real TensorRT has ``Runtime`` and a
``__version__``; versions are compared as integer tuples, never as strings.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from edgeyolo.errors import BackendUnavailableError
from edgeyolo.gpu.errors import check, driver

if TYPE_CHECKING:
    from types import ModuleType

# The name-based I/O API (num_io_tensors, set_tensor_address, execute_async_v3) starts here.
MIN_VERSION = (8, 5)

INSTALL_HINT = (
    "Jetson: TensorRT comes with JetPack (sudo apt install python3-libnvinfer, then create "
    "the venv with --system-site-packages); x86-64: pip install tensorrt-cu12 (or -cu13) "
    "from NVIDIA's index (pip install --extra-index-url https://pypi.nvidia.com ...); "
    "cuda-python: pip install 'edgeyolo[tensorrt]'"
)


def parse_version(text: str) -> tuple[int, ...]:
    """'10.3.0.30' -> (10, 3, 0, 30); non-numeric tails ('10.8.0.43+cuda12') are dropped."""
    parts: list[int] = []
    for piece in text.split("."):
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) != len(piece):
            break
    return tuple(parts)


def is_real_tensorrt(module: ModuleType) -> bool:
    """True for TensorRT's bindings, False for the stubs' empty namespace package."""
    return hasattr(module, "Runtime") and isinstance(getattr(module, "__version__", None), str)


def _import() -> ModuleType:
    return importlib.import_module("tensorrt")


def tensorrt_problem() -> str | None:
    """Why TensorRT's Python bindings are unusable here, or None (no GPU check)."""
    try:
        trt = _import()
    except ImportError as exc:
        return f"TensorRT's Python bindings are not installed ({exc}). {INSTALL_HINT}"
    except Exception as exc:  # a broken install can raise anything while loading libnvinfer
        return f"importing tensorrt failed: {type(exc).__name__}: {exc}. {INSTALL_HINT}"
    if not is_real_tensorrt(trt):
        where = ", ".join(str(p) for p in getattr(trt, "__path__", [])) or "?"
        return (
            f"the 'tensorrt' module found at {where} is not TensorRT (it has no Runtime or "
            f"__version__; probably only the type stubs 'tensorrt-stubs'). {INSTALL_HINT}"
        )
    version = parse_version(trt.__version__)
    if version[:2] < MIN_VERSION:
        return (
            f"TensorRT {trt.__version__} is too old: edgeyolo needs "
            f"{'.'.join(map(str, MIN_VERSION))} or newer (the name-based I/O API)"
        )
    return None


def cuda_problem(device: int = 0) -> str | None:
    """Why CUDA (cuda-python, the driver, a GPU) is unusable here, or None."""
    try:
        drv = driver()
    except ImportError as exc:
        return f"cuda-python is not installed ({exc}): pip install 'edgeyolo[tensorrt]'"
    try:
        check(drv.cuInit(0), "cuInit")
        count = int(check(drv.cuDeviceGetCount(), "cuDeviceGetCount"))
    except Exception as exc:  # missing libcuda raises cuda-python's own exception types
        return f"no usable NVIDIA GPU: {exc}"
    if count <= device:
        return f"no NVIDIA GPU {device}: the driver reports {count} GPU(s)"
    return None


def tensorrt_unavailable_reason(device: int = 0) -> str | None:
    """Why the TensorRT backend cannot run here, or None when it can.

    Cheap and never raising: for ``backend: auto`` to decide, and to log why it fell back.
    """
    try:
        return tensorrt_problem() or cuda_problem(device)
    except Exception as exc:  # this function is a probe: it must never take the service down
        return f"checking for TensorRT failed: {type(exc).__name__}: {exc}"


def import_tensorrt() -> ModuleType:
    """The real ``tensorrt`` module, or ``BackendUnavailableError`` saying what is missing."""
    problem = tensorrt_problem()
    if problem is not None:
        raise BackendUnavailableError(problem)
    return _import()


def tensorrt_version(trt: ModuleType) -> tuple[int, ...]:
    """The module's version as integers."""
    return parse_version(str(trt.__version__))
