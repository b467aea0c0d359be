"""Draw what the models saw onto a copy of a frame: boxes, labels, track ids, skeletons, zones.

Pure functions on numpy images with OpenCV. ``annotate`` never writes into the image it is
given (the engines' frame): it draws on a copy and returns it. Nothing here runs unless a
consumer asks for a picture (a live viewer, a snapshot): see ``edgeyolo.live``.

Every model gets its own colour (the header shows the legend), so an INT8 model's boxes can
be compared with its FP32 twin's on the same picture. A detection's text is
``label conf`` and ``#id`` when the tracker gave it a track id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

    from edgeyolo.config import CameraConfig
    from edgeyolo.postprocess import Detections

# COCO's 17-keypoint skeleton (0-based keypoint indices): legs, hips, torso, arms, head.
COCO_SKELETON: tuple[tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
    (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)  # fmt: skip

# BGR, distinct on grey street scenes; models take them in config order.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (56, 56, 255),  # red
    (255, 157, 151),  # light blue
    (31, 212, 255),  # yellow
    (151, 255, 131),  # green
    (255, 112, 255),  # magenta
    (255, 194, 0),  # cyan-blue
    (0, 149, 255),  # orange
    (199, 55, 255),  # pink
)
ZONE_COLOUR = (0, 215, 255)  # amber: zones are no model's
LINE_COLOUR = (255, 255, 0)  # cyan: nor are lines
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_FONT_SCALE = 0.45
_HEADER_H = 22


class OutputLike(Protocol):
    """What ``annotate`` reads of one model's result (``edgeyolo.stages.ModelOutput``)."""

    @property
    def model(self) -> str: ...
    @property
    def labels(self) -> Sequence[str]: ...
    @property
    def detections(self) -> Detections: ...


@dataclass(frozen=True, slots=True)
class Shape:
    """A zone (closed polygon) or a line (open polyline), in source-image pixels or, with
    ``normalized``, in fractions of the frame (as ``cameras[].zones``/``lines`` allow)."""

    name: str
    points: tuple[tuple[float, float], ...]
    closed: bool = True
    normalized: bool = False


@dataclass(frozen=True, slots=True)
class Header:
    """The text line on top: camera, fps and capture-to-result latency."""

    camera: str
    fps: float | None = None
    latency_ms: float | None = None


def camera_shapes(camera: CameraConfig) -> tuple[Shape, ...]:
    """The zones and lines configured for ``camera``, to draw."""
    zones = [
        Shape(z.name, tuple((float(x), float(y)) for x, y in z.points), True, z.normalized)
        for z in camera.zones
    ]
    lines = [
        Shape(ln.name, tuple((float(x), float(y)) for x, y in ln.points), False, ln.normalized)
        for ln in camera.lines
    ]
    return (*zones, *lines)


def model_colour(index: int) -> tuple[int, int, int]:
    """The BGR colour of the ``index``-th model."""
    return PALETTE[index % len(PALETTE)]


def annotate(
    image: npt.NDArray[np.uint8],
    outputs: Sequence[OutputLike],
    *,
    header: Header | None = None,
    shapes: Sequence[Shape] = (),
    models: Collection[str] | None = None,
    kpt_conf: float = 0.5,
) -> npt.NDArray[np.uint8]:
    """A copy of ``image`` (HxWx3 BGR) with ``outputs`` drawn on it.

    ``models`` limits which models are drawn (None: all). ``shapes`` are zones and lines.
    Keypoints below ``kpt_conf`` visibility, and limbs touching them, are left out.
    """
    out: npt.NDArray[np.uint8] = image.copy()
    for shape in shapes:
        _draw_shape(out, shape)
    drawn = [(i, o) for i, o in enumerate(outputs) if models is None or o.model in models]
    # Last model first: where boxes coincide, the first model's (usually the tracked
    # reference) stays on top with its track ids.
    for i, o in reversed(drawn):
        _draw_detections(out, o, model_colour(i), kpt_conf)
    legend = [(o.model, model_colour(i)) for i, o in drawn]
    if header is not None:
        _draw_header(out, header, legend)
    return out


def _draw_detections(
    img: npt.NDArray[np.uint8], o: OutputLike, colour: tuple[int, int, int], kpt_conf: float
) -> None:
    dets = o.detections
    if len(dets) == 0:
        return
    boxes = np.rint(dets.boxes).astype(np.int32).tolist()
    scores = dets.scores.tolist()
    ids = dets.class_ids.tolist()
    track_ids = getattr(dets, "track_ids", None)  # set by the tracker stage, when it runs
    tracks = None if track_ids is None else np.asarray(track_ids).tolist()
    labels = o.labels
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        cv2.rectangle(img, (x1, y1), (x2, y2), colour, 2, cv2.LINE_AA)
        cid = ids[i]
        text = f"{labels[cid] if 0 <= cid < len(labels) else cid} {scores[i]:.2f}"
        if tracks is not None and tracks[i] >= 0:  # -1: no confirmed track
            text += f" #{tracks[i]}"
        _label(img, text, (x1, y1), colour)
    if dets.keypoints is not None:
        _draw_skeletons(img, dets.keypoints, colour, kpt_conf)


def _draw_skeletons(
    img: npt.NDArray[np.uint8],
    keypoints: npt.NDArray[np.float32],
    colour: tuple[int, int, int],
    kpt_conf: float,
) -> None:
    n_kpt = keypoints.shape[1]
    pts = np.rint(keypoints[..., :2]).astype(np.int32).tolist()
    visible = (keypoints[..., 2] >= kpt_conf).tolist()
    limbs = COCO_SKELETON if n_kpt == 17 else ()
    for person, vis in zip(pts, visible, strict=True):
        for a, b in limbs:
            if vis[a] and vis[b]:
                cv2.line(img, tuple(person[a]), tuple(person[b]), colour, 2, cv2.LINE_AA)
        for p, v in zip(person, vis, strict=True):
            if v:
                cv2.circle(img, tuple(p), 3, (255, 255, 255), -1, cv2.LINE_AA)
                cv2.circle(img, tuple(p), 3, colour, 1, cv2.LINE_AA)


def _draw_shape(img: npt.NDArray[np.uint8], shape: Shape) -> None:
    if not shape.points:
        return
    xy = np.asarray(shape.points, np.float32)
    if shape.normalized:
        xy = xy * np.array([img.shape[1], img.shape[0]], np.float32)
    pts = np.rint(xy).astype(np.int32).reshape(-1, 1, 2)
    if shape.closed:
        cv2.polylines(img, [pts], True, ZONE_COLOUR, 2, cv2.LINE_AA)
        x, y = pts[0, 0].tolist()
        _label(img, shape.name, (x, y + 16), ZONE_COLOUR)
        return
    # A line is directed (first point to last): an arrow, named at its head.
    for a, b in zip(pts[:-1, 0].tolist(), pts[1:, 0].tolist(), strict=True):
        cv2.arrowedLine(img, tuple(a), tuple(b), LINE_COLOUR, 2, cv2.LINE_AA, tipLength=0.04)
    x, y = pts[-1, 0].tolist()
    _label(img, shape.name, (x + 4, y + 16), LINE_COLOUR)


def _label(
    img: npt.NDArray[np.uint8], text: str, at: tuple[int, int], colour: tuple[int, int, int]
) -> None:
    """``text`` on a filled box of ``colour`` just above ``at`` (below it at the top edge)."""
    (w, h), base = cv2.getTextSize(text, _FONT, _FONT_SCALE, 1)
    x, y = at
    x = max(0, min(x, img.shape[1] - w - 2))
    top = y - h - base - 2
    if top < 0:
        top = y
    cv2.rectangle(img, (x, top), (x + w + 2, top + h + base + 2), colour, -1)
    cv2.putText(img, text, (x + 1, top + h + 1), _FONT, _FONT_SCALE, (0, 0, 0), 1, cv2.LINE_AA)


def _draw_header(
    img: npt.NDArray[np.uint8], header: Header, legend: Sequence[tuple[str, tuple[int, int, int]]]
) -> None:
    bar = img[:_HEADER_H]
    # Darken the strip in place: readable on any scene, and cheaper than a blended copy.
    bar >>= 2
    parts = [header.camera]
    if header.fps is not None:
        parts.append(f"{header.fps:.1f} fps")
    if header.latency_ms is not None:
        parts.append(f"{header.latency_ms:.0f} ms")
    text = "  ".join(parts)
    cv2.putText(img, text, (6, 15), _FONT, _FONT_SCALE, (255, 255, 255), 1, cv2.LINE_AA)
    x = 12 + cv2.getTextSize(text, _FONT, _FONT_SCALE, 1)[0][0]
    for name, colour in legend:
        cv2.rectangle(img, (x, 6), (x + 10, 16), colour, -1)
        cv2.putText(img, name, (x + 14, 15), _FONT, _FONT_SCALE, colour, 1, cv2.LINE_AA)
        x += 24 + cv2.getTextSize(name, _FONT, _FONT_SCALE, 1)[0][0]
