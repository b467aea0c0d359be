"""The GPU NMS (``nms_f32`` in kernels/decode.cu): its numpy model, and the host's side of it.

Per image, one block takes the decode kernel's candidates (at most ``NMS_LIMIT``; more are left
to the host), sorts them by score with the anchor index breaking ties (the CPU path's stable
argsort over candidates in anchor order), runs greedy class-aware NMS with the CPU path's
float32 arithmetic, and maps the kept boxes and keypoints to source pixels with the frame's
letterbox (``letterbox_params``, 8 floats per image in mapped pinned memory the host writes
before the launch). Only the kept rows come back: ``to_detections`` turns them into
``Detections``. ``reference_nms`` is the kernel in numpy; CI checks it against the CPU decode,
the GPU machine checks the kernel against both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from edgeyolo.postprocess.yolo import MAX_WH, Detections

if TYPE_CHECKING:
    from edgeyolo.frames import Letterbox

FIELDS = 7  # a candidate record: anchor, class, score, cx, cy, w, h (then keypoint values)
NMS_LIMIT = 1024  # candidates per image the NMS kernel takes (more: NMS on the host)
NMS_THREADS = 256
OUT_FIELDS = 6  # x1, y1, x2, y2, score, class; then the keypoint values


def letterbox_params(letterbox: Letterbox, out: npt.NDArray[np.float32]) -> None:
    """Write the NMS kernel's per-image letterbox inverse (8 floats) into ``out``."""
    lb = letterbox
    out[:6] = (lb.pad_left, lb.pad_top, lb.gain_x, lb.gain_y, lb.src_w, lb.src_h)


def reference_nms(
    records: npt.NDArray[np.float32],
    letterbox: Letterbox,
    iou: float,
    max_det: int,
    num_classes: int,
    kpt_shape: tuple[int, int] | None,
) -> npt.NDArray[np.float32]:
    """The NMS kernel in numpy: one image's records (any order) -> kept rows of
    ``6 + nk`` floats (x1, y1, x2, y2 in source pixels, score, class, keypoints), best first.

    The same float32 operations in the same order as ``nms_f32`` (and, the tests check, as
    the CPU path's ``decode_candidates``), one pair at a time where the kernel works so.
    """
    from edgeyolo.postprocess.nms import threshold_f32  # noqa: PLC0415

    f = np.float32
    n = len(records)
    nk = records.shape[1] - FIELDS
    score, anchor = records[:, 2], records[:, 0]
    rank = np.array(
        [
            int(np.sum((score > score[i]) | ((score == score[i]) & (anchor < anchor[i]))))
            for i in range(n)
        ],
        np.intp,
    )
    order = np.empty(n, np.intp)
    order[rank] = np.arange(n)
    rec = records[order]
    cx, cy, w, h = (rec[:, 3 + k] for k in range(4))
    x1, y1 = cx + w * f(-0.5), cy + h * f(-0.5)
    x2, y2 = cx + w * f(0.5), cy + h * f(0.5)
    if num_classes != 1:
        off = rec[:, 1] * f(MAX_WH)
        x1, y1, x2, y2 = x1 + off, y1 + off, x2 + off, y2 + off
    nx1, ny1 = -x1, -y1
    area = (x2 + nx1) * (y2 + ny1)
    thr = threshold_f32(iou)
    removed = np.zeros(n, bool)
    keep: list[int] = []
    for p in range(n):
        if removed[p]:
            continue
        keep.append(p)
        if len(keep) >= max_det:
            break
        q = np.arange(p + 1, n)
        ww = np.maximum(np.minimum(x2[p], x2[q]) + np.minimum(nx1[p], nx1[q]), f(0))
        hh = np.maximum(np.minimum(y2[p], y2[q]) + np.minimum(ny1[p], ny1[q]), f(0))
        inter = ww * hh
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = inter / ((area[p] + area[q]) - inter)
        removed[q[ratio > thr]] = True
    kept = rec[keep]
    out = np.empty((len(keep), OUT_FIELDS + nk), np.float32)
    kx, ky, kw, kh = (kept[:, 3 + k] for k in range(4))
    corners = (kx + kw * f(-0.5), ky + kh * f(-0.5), kx + kw * f(0.5), ky + kh * f(0.5))
    lb = letterbox
    pad, gain, high = (
        (f(lb.pad_left), f(lb.pad_top)),
        (f(lb.gain_x), f(lb.gain_y)),
        (
            f(lb.src_w),
            f(lb.src_h),
        ),
    )
    for c, v in enumerate(corners):
        d = c % 2
        out[:, c] = np.minimum(np.maximum((v - pad[d]) / gain[d], f(0)), high[d])
    out[:, 4], out[:, 5] = kept[:, 2], kept[:, 1]
    dims = kpt_shape[1] if kpt_shape is not None else 1
    for k in range(nk):
        d, v = k % dims, kept[:, FIELDS + k]
        if d < 2:
            v = np.minimum(np.maximum((v - pad[d]) / gain[d], f(0)), high[d])
        out[:, OUT_FIELDS + k] = v
    return out


def to_detections(rows: npt.NDArray[np.float32], kpt_shape: tuple[int, int] | None) -> Detections:
    """Kept rows (the NMS kernel's output) -> ``Detections`` (copies)."""
    k = len(rows)
    kpts = None
    if kpt_shape is not None:
        kpts = np.array(rows[:, OUT_FIELDS:], np.float32).reshape(k, *kpt_shape)
    return Detections(
        boxes=np.array(rows[:, :4], np.float32),
        scores=np.array(rows[:, 4], np.float32),
        class_ids=rows[:, 5].astype(np.int32),
        keypoints=kpts,
    )
