"""Frame sources (camera, file, RTSP, GStreamer) captured in threads.

``edgeyolo.sources.kinds`` (what a source string is) imports no OpenCV, so the config can use
it; the capture classes are imported from ``edgeyolo.sources.capture`` on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgeyolo.sources.kinds import SourceKind, is_live, source_kind

if TYPE_CHECKING:
    from edgeyolo.sources.capture import CaptureSource, SourceStats

__all__ = ["CaptureSource", "SourceKind", "SourceStats", "is_live", "source_kind"]


def __getattr__(name: str) -> Any:
    if name in {"CaptureSource", "SourceStats"}:
        from edgeyolo.sources import capture  # noqa: PLC0415 - cv2 only when capturing

        return getattr(capture, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
