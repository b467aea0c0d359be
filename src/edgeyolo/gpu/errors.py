"""Loading the CUDA driver bindings, and turning their ``(err, *values)`` results into values.

cuda-python 12.6+ and 13.x provide ``cuda.bindings.driver``; 12.0-12.5 only the older
``cuda.cuda`` module with the same functions. Both are accepted, so JetPack 6 (CUDA 12.2/12.6)
and current x86 installs work with one code path.
"""

from __future__ import annotations

import importlib
from typing import Any

from edgeyolo.errors import EdgeYoloError


class CudaError(EdgeYoloError):
    """A CUDA driver call failed; ``name`` is the CUresult name (e.g. CUDA_ERROR_OUT_OF_MEMORY)."""

    def __init__(self, call: str, name: str, code: int, detail: str = "") -> None:
        self.call = call
        self.name = name
        self.code = code
        extra = f": {detail}" if detail else ""
        super().__init__(f"{call} failed with {name} ({code}){extra}")


def driver() -> Any:
    """The cuda-python driver module (``cuda.bindings.driver``, else the 12.x ``cuda.cuda``).

    Raises ``ImportError`` when cuda-python is not installed.
    """
    try:
        return importlib.import_module("cuda.bindings.driver")
    except ImportError:
        # cuda-python 12.0-12.5 (JetPack 6.0/6.1 images) only has the old module path.
        return importlib.import_module("cuda.cuda")


def error_name(err: Any) -> str:
    """The CUresult's name, as the driver spells it."""
    drv = driver()
    fallback = str(getattr(err, "name", err))
    try:
        res, name = drv.cuGetErrorName(err)
    except Exception:  # the driver may be unusable; the enum's own name still helps
        return fallback
    if int(res) == 0 and name:
        return name.decode() if isinstance(name, bytes) else str(name)
    return fallback


def check(result: Any, call: str = "CUDA call") -> Any:
    """Turn a cuda-python result ``(err, *values)`` into its values, or raise ``CudaError``.

    Returns ``None`` for no values, the value for one, and a tuple for several.
    """
    if isinstance(result, tuple):
        err, values = result[0], result[1:]
    else:
        err, values = result, ()
    code = int(err)
    if code != 0:
        raise CudaError(call, error_name(err), code)
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return values
