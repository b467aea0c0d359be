"""What kind of source a configured ``source`` string is, and whether it is live.

The one place that decides it: config validation (which paths are files to resolve and check)
and capture (which OpenCV back-end opens it, whether it ends or reconnects) both ask here, so
they cannot disagree. Pure string work: no OpenCV, no I/O.

Kinds:

- ``device``: an index (``0``, also the quoted string ``"0"``) or a ``/dev/...`` path; live.
- ``rtsp``: ``rtsp://`` / ``rtsps://``; live (FFmpeg back-end).
- ``http``: ``http://`` / ``https://`` (MJPEG cameras, HLS); live unless ``live: false``.
- ``stream``: other network URLs FFmpeg reads (``rtmp://``, ``udp://``, ``srt://``, ...); live.
- ``gstreamer``: a pipeline (``!`` between elements) ending in ``appsink``; live or finite
  by its first element (``v4l2src``, ``nvarguscamerasrc``, ``rtspsrc`` ... are live;
  ``filesrc``, ``videotestsrc`` ... are finite), or as ``live:`` in the config says.
- ``image`` / ``file``: a still image (by suffix) or a video file; finite.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Literal

SourceKind = Literal["device", "rtsp", "http", "stream", "gstreamer", "image", "file"]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
#: Kinds read over the network through OpenCV's FFmpeg back-end.
NETWORK_KINDS = frozenset({"rtsp", "http", "stream"})
#: Kinds whose liveness ``live:`` in the config may override.
LIVE_OVERRIDABLE = frozenset({"gstreamer", *NETWORK_KINDS})

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_SCHEMES: dict[str, SourceKind] = {
    "rtsp": "rtsp",
    "rtsps": "rtsp",
    "http": "http",
    "https": "http",
}

# GStreamer elements that produce frames as they happen: a pipeline starting with one is a
# camera that may drop out and is reopened, never "ended".
LIVE_ELEMENTS = frozenset(
    {
        "v4l2src",
        "nvarguscamerasrc",
        "nvv4l2camerasrc",
        "libcamerasrc",
        "rtspsrc",
        "udpsrc",
        "tcpclientsrc",
        "tcpserversrc",
        "souphttpsrc",
        "srtsrc",
        "srtclientsrc",
        "rtmpsrc",
        "rtmp2src",
        "ximagesrc",
        "pipewiresrc",
        "shmsrc",
        "aravissrc",
        "pylonsrc",
    }
)
# Elements that open a URI: live unless the URI is a file.
URI_ELEMENTS = frozenset({"uridecodebin", "uridecodebin3", "urisourcebin", "playbin", "playbin3"})
# Elements whose location= names a file (resolved against the config's folder).
FILE_ELEMENTS = frozenset({"filesrc", "multifilesrc"})


def source_kind(source: int | str) -> SourceKind:
    """The kind of a configured source (see the module docstring)."""
    if isinstance(source, int):
        return "device"
    text = source.strip()
    if text.isdigit() or text.startswith("/dev/"):
        return "device"
    if "!" in text:
        return "gstreamer"
    m = _SCHEME.match(text)
    if m:
        return _SCHEMES.get(m.group(1).lower(), "stream")
    return "image" if Path(text).suffix.lower() in IMAGE_SUFFIXES else "file"


def device_index(source: int | str) -> int | str:
    """What OpenCV opens for a ``device`` source: the index as an int, or the path."""
    if isinstance(source, int):
        return source
    text = source.strip()
    return int(text) if text.isdigit() else text


def is_file_path(source: int | str) -> bool:
    """The source is a path on disk (video or image): resolved and checked by the config."""
    return source_kind(source) in {"file", "image"}


# -- GStreamer pipelines ---------------------------------------------------------------------


def _words(segment: str) -> list[str]:
    try:
        return shlex.split(segment)
    except ValueError:  # unbalanced quotes: GStreamer will say what is wrong when opening
        return segment.split()


def pipeline_elements(pipeline: str) -> list[tuple[str, dict[str, str]]]:
    """The ``(element, properties)`` of each ``!``-separated part of a pipeline string.

    Caps parts (``video/x-raw,format=BGR``) come back with the caps as the name.
    """
    out = []
    for segment in pipeline.split("!"):
        words = _words(segment)
        if not words:
            continue
        props = {}
        for word in words[1:]:
            key, sep, value = word.partition("=")
            if sep:
                props[key] = value
        out.append((words[0], props))
    return out


def _truthy(value: str) -> bool:
    return value.strip().lower() in {"true", "1", "yes", "on"}


def pipeline_is_live(pipeline: str) -> bool:
    """Whether a GStreamer pipeline is a live camera (by its first element)."""
    elements = pipeline_elements(pipeline)
    if not elements:
        return False
    name, props = elements[0]
    if "is-live" in props:
        return _truthy(props["is-live"])
    if name in URI_ELEMENTS:
        return not props.get("uri", "").lower().startswith("file:")
    return name in LIVE_ELEMENTS


def is_live(source: int | str, override: bool | None = None) -> bool:
    """Whether a source is live (reconnects with backoff) rather than finite (ends).

    ``override`` is the camera's ``live:`` setting; it only counts for kinds in
    ``LIVE_OVERRIDABLE`` (config validation refuses it on the others).
    """
    kind = source_kind(source)
    if override is not None and kind in LIVE_OVERRIDABLE:
        return override
    if kind == "gstreamer":
        assert isinstance(source, str)
        return pipeline_is_live(source)
    return kind in {"device", *NETWORK_KINDS}


def pipeline_problem(pipeline: str) -> str | None:
    """Why a GStreamer pipeline string cannot work with OpenCV, or None."""
    elements = pipeline_elements(pipeline)
    if not elements or elements[-1][0] != "appsink":
        return (
            "a GStreamer pipeline must end in appsink (OpenCV reads frames from it), e.g. "
            "'... ! videoconvert ! video/x-raw,format=BGR ! appsink'"
        )
    return None


def _gst_quote(value: str) -> str:
    # gst-launch syntax: a value with spaces or specials goes in double quotes.
    if re.fullmatch(r"[\w./%+,:@=-]+", value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


_LOCATION = re.compile(r"""(\blocation=)("[^"]*"|'[^']*'|\S+)""")


def pipeline_files(pipeline: str) -> list[str]:
    """The ``location=`` of every ``filesrc``/``multifilesrc`` in a pipeline, as written."""
    return [
        props["location"]
        for name, props in pipeline_elements(pipeline)
        if name in FILE_ELEMENTS and "location" in props
    ]


def resolve_pipeline_files(pipeline: str, base: Path) -> str:
    """The pipeline with each relative ``filesrc location=`` made absolute against ``base``.

    Everything else of the string is kept as written.
    """
    parts = pipeline.split("!")
    for i, segment in enumerate(parts):
        words = _words(segment)
        if not words or words[0] not in FILE_ELEMENTS:
            continue

        def absolute(m: re.Match[str]) -> str:
            value = m.group(2)
            raw = value[1:-1] if value[:1] in {'"', "'"} else value
            path = Path(raw).expanduser()
            if path.is_absolute():
                return m.group(0)
            return m.group(1) + _gst_quote(str((base / path).resolve()))

        parts[i] = _LOCATION.sub(absolute, segment)
    return "!".join(parts)
