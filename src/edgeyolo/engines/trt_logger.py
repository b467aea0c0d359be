"""A TensorRT ``ILogger`` that forwards to structlog (used by the runtime and the builder)."""

from __future__ import annotations

from typing import Any

import structlog


def make_logger(log: Any = None) -> Any:
    """A TensorRT ``ILogger`` forwarding to structlog, keeping the last errors for messages."""
    import tensorrt as trt  # noqa: PLC0415 - lazily: the package must import without TensorRT

    out = log or structlog.get_logger("tensorrt")
    sev = trt.ILogger.Severity

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
            if severity in (sev.INTERNAL_ERROR, sev.ERROR):
                self.errors = [*self.errors[-9:], msg]
                out.error("tensorrt", message=msg)
            elif severity == sev.WARNING:
                out.warning("tensorrt", message=msg)
            elif severity == sev.INFO:
                out.debug("tensorrt", message=msg)

    return _Logger()
