"""Which OpenCV this process uses, what its video back-ends are, and its native log level.

PyPI's ``opencv-python-headless`` is built without GStreamer; on a Jetson the camera is
usually a GStreamer pipeline (``nvarguscamerasrc ...``), which only JetPack's (or a
distribution's) OpenCV opens. ``edgeyolo doctor``, ``check-config`` and capture all ask here.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import cv2

#: Where the docs say how to install with the system's OpenCV.
SYSTEM_OPENCV_DOC = "docs/deploy.md, 'OpenCV with GStreamer (Jetson)'"


@dataclass(frozen=True, slots=True)
class OpenCvInfo:
    """The imported ``cv2``: version, file, and the build's video back-ends."""

    version: str
    path: str
    gstreamer: str | None  # "1.22.0" when built with it, else None
    ffmpeg: bool
    v4l2: bool

    @property
    def origin(self) -> str:
        """Where it comes from, as far as its path tells: "pip", "system" or "other"."""
        if "site-packages" in self.path and "/cv2/" in self.path.replace("\\", "/"):
            return "pip"
        if "dist-packages" in self.path or self.path.startswith("/usr/"):
            return "system"
        return "other"

    def describe(self) -> str:
        gst = f"GStreamer {self.gstreamer}" if self.gstreamer else "no GStreamer"
        return f"OpenCV {self.version} ({self.origin}, {self.path}; {gst})"


def _backend(info: str, name: str) -> str | None:
    m = re.search(rf"^\s*{re.escape(name)}:\s*(.+)$", info, re.MULTILINE | re.IGNORECASE)
    return m.group(1).strip() if m else None


@functools.cache
def opencv_info() -> OpenCvInfo:
    """What ``cv2.getBuildInformation()`` says about the OpenCV in use (cached)."""
    build = cv2.getBuildInformation()
    gst = _backend(build, "GStreamer")
    version = None
    if gst and gst.upper().startswith("YES"):
        m = re.search(r"\(([^)]*)\)", gst)
        version = m.group(1) if m else "yes"
    return OpenCvInfo(
        version=cv2.__version__,
        path=str(getattr(cv2, "__file__", "?")),
        gstreamer=version,
        ffmpeg=(_backend(build, "FFMPEG") or "").upper().startswith("YES"),
        v4l2=(_backend(build, "v4l/v4l2") or "").upper().startswith("YES"),
    )


def no_gstreamer_message() -> str:
    """The documented error for a GStreamer source on an OpenCV built without it."""
    info = opencv_info()
    return (
        f"this OpenCV has no GStreamer support ({info.describe()}), so it cannot open a "
        "GStreamer pipeline. Use an OpenCV built with GStreamer: on a Jetson JetPack's "
        "(apt package libopencv-python), elsewhere the distribution's python3-opencv, in a "
        "venv made with --system-site-packages and without opencv-python from PyPI "
        f"(see {SYSTEM_OPENCV_DOC}; `edgeyolo doctor` shows the OpenCV in use)"
    )


def set_log_level(level: str) -> None:
    """OpenCV's own log level: ``silent``, ``error``, ``warning``, ``info`` or ``debug``."""
    logging: Any = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:  # pragma: no cover - every OpenCV 4 has it
        return
    value = {
        "silent": logging.LOG_LEVEL_SILENT,
        "error": logging.LOG_LEVEL_ERROR,
        "warning": logging.LOG_LEVEL_WARNING,
        "info": logging.LOG_LEVEL_INFO,
        "debug": logging.LOG_LEVEL_DEBUG,
    }[level]
    logging.setLogLevel(value)
