"""Decode Ultralytics YOLO detection and pose outputs.

Layouts (per image, anchors last, as exported by Ultralytics without NMS):
- detect: ``(4 + nc) x N``: cx, cy, w, h in input pixels, then nc class scores (0..1).
- pose: ``(4 + 1 + K*3) x N``: box, person score, then K keypoints as x, y, visibility.

``decode`` matches Ultralytics' ``non_max_suppression`` (single label per box, scores
strictly above ``conf``, class-aware NMS via a per-class coordinate offset, ``max_det``) and
maps boxes and keypoints back to source pixels through the frame's letterbox.

Cost matters (it runs for every model on every frame): the only pass over all N anchors is
one max over the class rows; everything else touches candidates above the threshold only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edgeyolo.frames import Letterbox
from edgeyolo.postprocess.nms import nms

# Ultralytics' class offset for class-aware NMS: larger than any image side.
MAX_WH = 7680.0
# Ultralytics' cap on boxes entering NMS.
MAX_NMS = 30000


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Decode settings of one model."""

    conf: float = 0.25
    iou: float = 0.7
    max_det: int = 300
    classes: npt.NDArray[np.intp] | None = None


@dataclass(frozen=True, slots=True)
class Detections:
    """Canonical result of one model on one frame, in source-image pixels.

    ``boxes`` n x 4 float32 xyxy; ``scores`` n float32; ``class_ids`` n int32;
    ``keypoints`` n x K x 3 float32 (x, y, visibility) for pose models, else None.
    ``track_ids`` n int64 when a tracker ran (-1: no confirmed track), else None.
    Rows are sorted by score, highest first.
    """

    boxes: npt.NDArray[np.float32]
    scores: npt.NDArray[np.float32]
    class_ids: npt.NDArray[np.int32]
    keypoints: npt.NDArray[np.float32] | None = None
    track_ids: npt.NDArray[np.int64] | None = None

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls, kpt_shape: tuple[int, int] | None = None) -> Detections:
        kpts = None if kpt_shape is None else np.empty((0, *kpt_shape), np.float32)
        return cls(
            np.empty((0, 4), np.float32), np.empty(0, np.float32), np.empty(0, np.int32), kpts
        )


@dataclass(frozen=True, slots=True)
class Candidates:
    """Anchors above the threshold (and in the class filter), in anchor order.

    What the GPU decode copies back instead of the whole output: ``box`` 4 x k (cx, cy, w, h
    in input pixels), ``scores`` k, ``class_ids`` k, ``kpt_rows`` K*3 x k for pose models.
    """

    anchors: npt.NDArray[np.intp]
    box: npt.NDArray[np.float32]
    scores: npt.NDArray[np.float32]
    class_ids: npt.NDArray[np.int32]
    kpt_rows: npt.NDArray[np.float32] | None = None

    def __len__(self) -> int:
        return len(self.scores)


def decode(
    raw: npt.NDArray[np.floating] | Candidates,
    letterbox: Letterbox,
    thresholds: Thresholds,
    num_classes: int,
    kpt_shape: tuple[int, int] | None = None,
) -> Detections:
    """Decode one image's raw output (``rows x N`` or ``1 x rows x N``) into ``Detections``.

    ``raw`` may also be the GPU decode's ``Candidates`` (thresholded and filtered already).
    """
    if isinstance(raw, Candidates):
        return decode_candidates(
            raw.box, raw.scores, raw.class_ids, raw.kpt_rows, letterbox, thresholds, kpt_shape
        )
    return _decode_raw(raw, letterbox, thresholds, num_classes, kpt_shape)


def _decode_raw(
    raw: npt.NDArray[np.floating],
    letterbox: Letterbox,
    thresholds: Thresholds,
    num_classes: int,
    kpt_shape: tuple[int, int] | None,
) -> Detections:
    if raw.ndim == 3:
        raw = raw[0]
    nk = 0 if kpt_shape is None else kpt_shape[0] * kpt_shape[1]
    if raw.shape[0] != 4 + num_classes + nk:
        raise ValueError(
            f"output has {raw.shape[0]} rows, expected 4 + {num_classes} classes + {nk} keypoint "
            "values"
        )
    class_rows = raw[4 : 4 + num_classes]
    best = class_rows[0] if num_classes == 1 else class_rows.max(axis=0)
    cand = np.flatnonzero(best > thresholds.conf)
    if cand.size == 0:
        return Detections.empty(kpt_shape)
    sub = raw[:, cand].astype(np.float32, copy=False)  # rows x k, a small copy
    scores = best[cand].astype(np.float32, copy=False)
    if num_classes == 1:
        class_ids = np.zeros(cand.size, np.int32)
    else:
        class_ids = sub[4 : 4 + num_classes].argmax(axis=0).astype(np.int32)
    if thresholds.classes is not None:
        wanted = np.isin(class_ids, thresholds.classes)
        sub, scores, class_ids = sub[:, wanted], scores[wanted], class_ids[wanted]
    box = sub[:4]
    kpt_rows = sub[4 + num_classes :] if kpt_shape is not None else None
    return decode_candidates(box, scores, class_ids, kpt_rows, letterbox, thresholds, kpt_shape)


def decode_candidates(
    box: npt.NDArray[np.float32],
    scores: npt.NDArray[np.float32],
    class_ids: npt.NDArray[np.int32],
    kpt_rows: npt.NDArray[np.float32] | None,
    letterbox: Letterbox,
    thresholds: Thresholds,
    kpt_shape: tuple[int, int] | None = None,
) -> Detections:
    """NMS and mapping to source pixels of candidates already above the threshold.

    ``box`` is 4 x k (cx, cy, w, h in input pixels), ``kpt_rows`` K*3 x k; candidates are in
    anchor order (the GPU decode sorts its compacted candidates so), which makes score ties
    resolve as on the CPU path.
    """
    if scores.size == 0:
        return Detections.empty(kpt_shape)
    if scores.size > MAX_NMS:
        top = np.argsort(-scores, kind="stable")[:MAX_NMS]
        box, scores, class_ids = box[:, top], scores[top], class_ids[top]
        if kpt_rows is not None:
            kpt_rows = kpt_rows[:, top]

    cx, cy, half_w, half_h = box[0], box[1], box[2] / 2, box[3] / 2
    boxes = np.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), axis=1)
    # Class-aware NMS: shift each class far apart (float32, like Ultralytics, so IoU ties
    # resolve identically).
    offsets = class_ids.astype(np.float32) * np.float32(MAX_WH)
    keep = nms(boxes + offsets[:, None], scores, thresholds.iou, thresholds.max_det)

    boxes = letterbox.boxes_to_source(boxes[keep])
    kpts = None
    if kpt_shape is not None and kpt_rows is not None:
        kpts = np.ascontiguousarray(kpt_rows[:, keep].T).reshape(-1, *kpt_shape)
        letterbox.points_to_source(kpts[..., :2])
    return Detections(boxes, scores[keep], class_ids[keep], kpts)
