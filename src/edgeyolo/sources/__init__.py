"""Frame sources (camera, file, RTSP, GStreamer) captured in threads."""

from edgeyolo.sources.capture import CaptureSource, SourceStats, classify

__all__ = ["CaptureSource", "SourceStats", "classify"]
