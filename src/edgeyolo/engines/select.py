"""Choosing a backend: ``auto`` takes TensorRT when it really works here, else ONNX Runtime."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import structlog

from edgeyolo.errors import BackendUnavailableError

if TYPE_CHECKING:
    from edgeyolo.config import Config
    from edgeyolo.engines.base import Backend

_log = structlog.get_logger("edgeyolo.engines")


def tensorrt_unavailable_reason() -> str | None:
    """Why the TensorRT backend cannot run here, or None when it can. Never raises."""
    try:
        mod = importlib.import_module("edgeyolo.engines.tensorrt")
        probe = getattr(mod, "tensorrt_unavailable_reason", None)
    except Exception as exc:
        return f"the TensorRT backend failed to import: {exc}"
    if probe is None:
        return "this build of edgeyolo has no TensorRT backend"
    try:
        reason: str | None = probe()
    except Exception as exc:
        return f"checking TensorRT failed: {exc}"
    return reason


def create_backend(config: Config) -> Backend:
    """The backend ``config.backend`` asks for (``auto``: TensorRT if usable, else ONNX Runtime)."""
    n_engines = max(1, len(config.models))
    if config.backend in {"auto", "tensorrt"}:
        reason = tensorrt_unavailable_reason()
        if reason is None:
            mod: Any = importlib.import_module("edgeyolo.engines.tensorrt")
            _log.info("backend selected", backend="tensorrt", requested=config.backend)
            backend: Backend = mod.TensorRTBackend(config.tensorrt)
            return backend
        if config.backend == "tensorrt":
            raise BackendUnavailableError(f"backend: tensorrt was requested, but {reason}")
        _log.info("backend selected", backend="onnxruntime", requested="auto", why=reason)
    else:
        _log.info("backend selected", backend="onnxruntime", requested=config.backend)
    from edgeyolo.engines.onnxruntime import OnnxRuntimeBackend  # noqa: PLC0415

    ort_backend = OnnxRuntimeBackend(config.onnxruntime, max_engines=n_engines)
    _log.info(
        "onnxruntime threads",
        intra_op_threads=ort_backend.intra_op_threads,
        setting=config.onnxruntime.intra_op_threads,
        models=n_engines,
    )
    return ort_backend
