"""Greedy non-maximum suppression, exact (same result as torchvision.ops.nms)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

# Up to this many candidates the pairwise IoU matrix is built in one go (1024^2 floats = 4 MB);
# beyond it, rows are computed per kept box so memory stays linear.
_MATRIX_LIMIT = 1024


def _iou_rows(
    boxes: npt.NDArray[np.float32], areas: npt.NDArray[np.float32], i: npt.NDArray[np.intp] | int
) -> npt.NDArray[np.float32]:
    b = boxes[i]
    w = np.minimum(b[..., 2:3], boxes[:, 2]) - np.maximum(b[..., 0:1], boxes[:, 0])
    h = np.minimum(b[..., 3:4], boxes[:, 3]) - np.maximum(b[..., 1:2], boxes[:, 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    union = areas[i][..., None] + areas - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)  # type: ignore[no-any-return]


def nms(
    boxes: npt.NDArray[np.float32],
    scores: npt.NDArray[np.float32],
    iou_threshold: float,
    max_keep: int | None = None,
) -> npt.NDArray[np.intp]:
    """Indices of the boxes kept by greedy NMS, highest score first.

    ``boxes`` are Nx4 xyxy. A box is suppressed when its IoU with a kept, higher-scoring box
    is strictly above ``iou_threshold``. Ties in score keep the earlier index first.
    """
    n = len(scores)
    if n == 0:
        return np.empty(0, np.intp)
    order = np.argsort(-scores, kind="stable")
    boxes = boxes[order]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    limit = n if max_keep is None else max_keep
    keep: list[int] = []
    # Small sets: the whole pairwise matrix at once; large ones: one row per kept box.
    over = _iou_rows(boxes, areas, np.arange(n)) > iou_threshold if n <= _MATRIX_LIMIT else None
    alive = np.ones(n, bool)
    for i in range(n):
        if alive[i]:
            keep.append(i)
            if len(keep) >= limit:
                break
            row = over[i] if over is not None else _iou_rows(boxes, areas, i) > iou_threshold
            alive &= ~row
    return order[np.asarray(keep, np.intp)]
