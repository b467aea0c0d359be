"""Greedy non-maximum suppression, exact (same result as torchvision.ops.nms)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

# Up to this many candidates the pairwise IoU matrix is built in one go (1024^2 floats = 4 MB);
# beyond it, rows are computed per kept box so memory stays linear.
_MATRIX_LIMIT = 1024


def _iou_matrix(
    x1: npt.NDArray[np.float32],
    y1: npt.NDArray[np.float32],
    x2: npt.NDArray[np.float32],
    y2: npt.NDArray[np.float32],
    areas: npt.NDArray[np.float32],
    rows: slice | int,
) -> npt.NDArray[np.float32]:
    """IoU of boxes ``rows`` against all boxes, float32 like torchvision (0/0 gives NaN, which
    suppresses nothing, as there)."""
    w = np.minimum.outer(x2[rows], x2)
    w -= np.maximum.outer(x1[rows], x1)
    np.maximum(w, 0, out=w)
    h = np.minimum.outer(y2[rows], y2)
    h -= np.maximum.outer(y1[rows], y1)
    np.maximum(h, 0, out=h)
    w *= h  # intersection
    union = np.add.outer(areas[rows], areas)
    union -= w
    with np.errstate(invalid="ignore", divide="ignore"):
        w /= union
    return w


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
    x1, y1, x2, y2 = np.ascontiguousarray(boxes[order].T)
    areas = (x2 - x1) * (y2 - y1)
    limit = n if max_keep is None else max_keep
    # torchvision compares the float32 IoU with the threshold as a double.
    thr = np.float64(iou_threshold)
    keep: list[int] = []
    # Small sets: the whole pairwise matrix at once; large ones: one row per kept box.
    over = _iou_matrix(x1, y1, x2, y2, areas, slice(None)) > thr if n <= _MATRIX_LIMIT else None
    if over is not None:
        # The greedy scan on Python integers used as bit sets (bit j of row i: box i suppresses
        # box j): one integer operation per box instead of a numpy call per kept box.
        packed = np.packbits(over, axis=1, bitorder="little")
        width = packed.shape[1]
        rows = packed.tobytes()
        alive_bits = (1 << n) - 1
        for i in range(n):
            if (alive_bits >> i) & 1:
                keep.append(i)
                if len(keep) >= limit:
                    break
                alive_bits &= ~int.from_bytes(rows[i * width : (i + 1) * width], "little")
        return order[np.asarray(keep, np.intp)]
    alive = np.ones(n, bool)
    for i in range(n):
        if alive[i]:
            keep.append(i)
            if len(keep) >= limit:
                break
            alive &= ~(_iou_matrix(x1, y1, x2, y2, areas, i) > thr)
    return order[np.asarray(keep, np.intp)]
