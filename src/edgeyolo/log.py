"""structlog set-up: called once at start-up by the CLI; nothing is configured at import."""

from __future__ import annotations

import logging
import os
import sys
from typing import Literal, TextIO

import structlog

from edgeyolo.secrets import redact

# Native libraries write plain-text lines to stderr on their own (OpenCV's
# "[ WARN:0@0.3] ... GStreamer warning: ...", FFmpeg's "[h264 @ 0x...] ...", ONNX Runtime's
# "[W:onnxruntime ...]"). A log shipper reading stderr as JSON lines breaks on them, so their
# own log levels are set here: silent in JSON format, errors only on a console, their warnings
# with `level: debug`. What matters reaches the log as structured events from edgeyolo itself
# (a source that cannot open or stops, an execution provider that did not load). A variable
# the user set in the environment wins over these. OpenCV reads OPENCV_LOG_LEVEL when cv2 is
# imported; builds without cv2.utils.logging (Debian's 4.6) cannot change it afterwards, so
# the CLI calls `quiet_native_logs_early` before any command imports cv2.
_USER_ENV = {k for k in ("OPENCV_LOG_LEVEL", "OPENCV_FFMPEG_LOGLEVEL") if k in os.environ}
#: ONNX Runtime's log severity for new sessions (0 verbose ... 3 error, 4 fatal); set by
#: ``configure_logging``, read by ``edgeyolo.engines.onnxruntime``.
ORT_SEVERITY = 3

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _redact_secrets(
    _logger: object, _name: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    """No url password or token-like query parameter reaches a log line (a camera source
    ``rtsp://user:pass@cam/...`` is logged with its url)."""
    for key, value in event.items():
        if isinstance(value, str) and ("@" in value or "=" in value):
            event[key] = redact(value)
    return event


def configure_logging(
    fmt: Literal["auto", "json", "console"] = "auto",
    level: str = "info",
    stream: TextIO | None = None,
) -> None:
    """Send structured logs to ``stream`` (stderr): JSON lines, or console on a terminal.

    stdout is left to events (JSON lines), so the two never mix.
    """
    out = stream if stream is not None else sys.stderr
    if fmt == "auto":
        fmt = "console" if out.isatty() else "json"
    renderer: structlog.types.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if fmt == "json":
        processors.append(structlog.processors.format_exc_info)
    processors.append(_redact_secrets)
    processors.append(renderer)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    _quiet_native_logs(fmt, level)
    # Libraries that use stdlib logging (aiomqtt, amqtt) go to the same stream, rendered like
    # edgeyolo's own lines (JSON lines stay JSON lines), with a `logger` field. Python
    # warnings (an ONNX Runtime UserWarning, a DeprecationWarning) go through it as well.
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.format_exc_info,
            ],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(LEVELS.get(level, logging.INFO), logging.WARNING))
    logging.captureWarnings(True)


def quiet_native_logs_early(stream: TextIO | None = None) -> None:
    """Before the config is read: native logs as ``configure_logging("auto")`` will want."""
    out = stream if stream is not None else sys.stderr
    _quiet_native_logs("console" if out.isatty() else "json", "info")


def _quiet_native_logs(fmt: str, level: str) -> None:
    global ORT_SEVERITY  # one process-wide setting, like the libraries' own
    if level == "debug":
        opencv, ffmpeg, ORT_SEVERITY = "WARNING", "24", 2
    elif fmt == "json":
        opencv, ffmpeg, ORT_SEVERITY = "SILENT", "-8", 4
    else:
        opencv, ffmpeg, ORT_SEVERITY = "ERROR", "16", 3
    for key, value in (("OPENCV_LOG_LEVEL", opencv), ("OPENCV_FFMPEG_LOGLEVEL", ffmpeg)):
        if key not in _USER_ENV:
            os.environ[key] = value
    if "cv2" in sys.modules and "OPENCV_LOG_LEVEL" not in _USER_ENV:
        # Already imported (tests, a reload): the variable was read; set the level directly.
        from edgeyolo.sources.opencv import set_log_level  # noqa: PLC0415

        set_log_level(opencv.lower())
    if "onnxruntime" in sys.modules:
        sys.modules["onnxruntime"].set_default_logger_severity(ORT_SEVERITY)
