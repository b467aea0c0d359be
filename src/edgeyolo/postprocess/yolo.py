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
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from edgeyolo.frames import Letterbox
from edgeyolo.postprocess.nms import nms_sorted

# Ultralytics' class offset for class-aware NMS: larger than any image side.
MAX_WH = 7680.0
# Ultralytics' cap on boxes entering NMS.
MAX_NMS = 30000
# -w/2, -h/2 and w/2, h/2 from w, h in one multiplication (2 x 1 x 1 against 2 x k).
_HALVES = np.array([-0.5, 0.5], np.float32).reshape(2, 1, 1)


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
    raw: npt.NDArray[np.floating] | Candidates | Detections,
    letterbox: Letterbox,
    thresholds: Thresholds,
    num_classes: int,
    kpt_shape: tuple[int, int] | None = None,
) -> Detections:
    """Decode one image's raw output (``rows x N`` or ``1 x rows x N``) into ``Detections``.

    ``raw`` may also be the GPU decode's ``Candidates`` (thresholded and filtered already), or
    its ``Detections`` when NMS ran on the GPU too (returned as they are).
    """
    if isinstance(raw, Detections):  # decoded on the GPU already (NMS included)
        return raw
    if isinstance(raw, Candidates):
        return decode_candidates(
            raw.box,
            raw.scores,
            raw.class_ids,
            raw.kpt_rows,
            letterbox,
            thresholds,
            kpt_shape,
            num_classes,
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
    return decode_candidates(
        box, scores, class_ids, kpt_rows, letterbox, thresholds, kpt_shape, num_classes
    )


def decode_candidates(
    box: npt.NDArray[np.float32],
    scores: npt.NDArray[np.float32],
    class_ids: npt.NDArray[np.int32],
    kpt_rows: npt.NDArray[np.float32] | None,
    letterbox: Letterbox,
    thresholds: Thresholds,
    kpt_shape: tuple[int, int] | None = None,
    num_classes: int | None = None,
) -> Detections:
    """NMS and mapping to source pixels of candidates already above the threshold.

    ``box`` is 4 x k (cx, cy, w, h in input pixels), ``kpt_rows`` K*3 x k; candidates are in
    anchor order (the GPU decode sorts its compacted candidates so), which makes score ties
    resolve as on the CPU path. ``num_classes`` (the model's; None: unknown) lets a
    single-class model skip the class shift.

    Everything after the one sort runs on candidates in score order, and only the kept ones
    are gathered and mapped back: a few dozen numpy calls in all, whatever the candidate count
    (``nms_sorted`` holds the pairwise part).
    """
    if scores.size == 0:
        return Detections.empty(kpt_shape)
    order = np.argsort(np.negative(scores), kind="stable")
    if order.size > MAX_NMS:
        order = order[:MAX_NMS]
    b = box.take(order, axis=1)
    # x1, y1, x2, y2 = cx, cy -+ w/2, h/2 in two calls: w * -0.5 is exactly -(w / 2), and
    # adding it is exactly subtracting w / 2.
    xyxy = np.add(b[:2], np.multiply(b[2:], _HALVES)).reshape(4, -1)
    # Class-aware NMS: shift each class far apart (float32, like Ultralytics, so IoU ties
    # resolve identically).
    if num_classes == 1:  # class 0 only: the shift is + 0.0, which changes nothing
        shifted = xyxy.copy()
    else:
        offsets = np.multiply(class_ids.take(order), np.float32(MAX_WH), dtype=np.float32)
        shifted = np.add(xyxy, offsets)
    keep = nms_sorted(shifted, thresholds.iou, thresholds.max_det)
    idx = order.take(keep)
    inverse = _inverse(letterbox, kpt_shape)
    boxes = _to_source(xyxy.take(keep, axis=1).T, inverse[:, :4])
    kpts = None
    if kpt_shape is not None and kpt_rows is not None:
        kpts = _to_source(kpt_rows.take(idx, axis=1).T, inverse[:, 4:]).reshape(-1, *kpt_shape)
    return Detections(boxes, scores.take(idx), class_ids.take(idx), kpts)


def _to_source(
    values: npt.NDArray[np.float32], inverse: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """``values`` (k x columns, any layout) unpadded, unscaled, clipped, columnwise by
    ``inverse``, as a new C-contiguous array.

    ``maximum`` then ``minimum`` rather than ``np.clip`` (whose Python wrapper costs more than
    the four operations together): the same values, except that a -0.0 would become 0.0.
    """
    out: npt.NDArray[np.float32] = np.subtract(values, inverse[0], order="C")
    np.divide(out, inverse[1], out=out)
    np.maximum(out, inverse[2], out=out)
    np.minimum(out, inverse[3], out=out)
    return out


@lru_cache(maxsize=64)
def _inverse(letterbox: Letterbox, kpt_shape: tuple[int, int] | None) -> npt.NDArray[np.float32]:
    """Rows pad, gain, low, high per output column: x1, y1, x2, y2, then the keypoint values.

    The operations of ``Letterbox.points_to_source`` (float32, unpad, divide, clip to the
    source), for boxes and keypoint x, y at once; keypoint visibilities pass unchanged
    (minus 0, divided by 1, clipped to +-inf).
    """
    lb = letterbox
    x = (float(lb.pad_left), lb.gain_x, 0.0, float(lb.src_w))
    y = (float(lb.pad_top), lb.gain_y, 0.0, float(lb.src_h))
    v = (0.0, 1.0, -np.inf, np.inf)
    columns: list[tuple[float, float, float, float]] = [x, y, x, y]
    if kpt_shape is not None:
        count, dims = kpt_shape
        columns += [x, y, *[v] * (dims - 2)] * count
    table: npt.NDArray[np.float32] = np.array(columns, np.float32).T.copy()
    table.flags.writeable = False
    return table
