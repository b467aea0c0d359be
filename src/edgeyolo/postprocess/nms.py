"""Greedy non-maximum suppression, exact (same result as torchvision.ops.nms).

Sized for tens to a few hundred candidates per model and frame, where numpy's per-call
overhead (about a microsecond) is most of the cost: up to ``_MATRIX_LIMIT`` boxes the whole
pairwise "suppresses" matrix comes from one broadcast ``minimum`` and a handful of array
operations, and the greedy scan runs on Python integers used as bit sets, one step per kept
box. Beyond it, one IoU row per kept box keeps memory linear.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import numpy.typing as npt

# Up to this many boxes the pairwise matrices are built in one go (at 1024: 20 MB for a moment).
_MATRIX_LIMIT = 1024
# Up to this many boxes the greedy scan shifts one integer of n^2 bits (beyond, row bytes win).
_FLAT_LIMIT = 64


@lru_cache(maxsize=64)
def threshold_f32(iou_threshold: float) -> np.float32:
    """The float32 ``t`` with ``x > t`` <=> ``x > iou_threshold`` for every float32 ``x``.

    torchvision compares the float32 IoU with the threshold as a double; comparing with the
    largest float32 not above it gives the same answers without widening the matrix.
    """
    thr: np.float32 = np.float32(iou_threshold)
    if float(thr) > iou_threshold:
        thr = np.float32(np.nextafter(thr, np.float32(-np.inf)))
    return thr


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
    if len(scores) == 0:
        return np.empty(0, np.intp)
    order = np.argsort(-scores, kind="stable")
    xyxy = boxes.T.take(order, axis=1).astype(np.float32, copy=False)
    return order[nms_sorted(xyxy, iou_threshold, max_keep)]


def nms_sorted(
    xyxy: npt.NDArray[np.float32], iou_threshold: float, max_keep: int | None = None
) -> npt.NDArray[np.intp]:
    """Greedy NMS of ``xyxy`` (4 x n float32 rows x1, y1, x2, y2), already in score order.

    Returns the kept columns, in order. ``xyxy`` is overwritten (it is the caller's scratch).
    """
    n = xyxy.shape[1]
    limit = n if max_keep is None else max_keep
    if n == 0:
        return np.empty(0, np.intp)
    thr = threshold_f32(iou_threshold)
    if n > _MATRIX_LIMIT:
        return _nms_rows(xyxy, thr, limit)
    # Negated x1, y1: one broadcast ``minimum`` then gives min(x2), min(y2) and -max(x1),
    # -max(y1) of every pair at once, and a + (-b) is exactly a - b. (Explicit ufunc calls
    # rather than operators: at this size the operator dispatch is a noticeable part.)
    np.negative(xyxy[:2], out=xyxy[:2])
    pair = np.minimum(xyxy[:, :, None], xyxy[:, None, :])  # 4 x n x n
    wh = np.add(pair[2:], pair[:2], out=pair[2:])
    np.maximum(wh, _zeros(wh.size).reshape(wh.shape), out=wh)
    inter = np.multiply(wh[0], wh[1], out=pair[0])
    # A box's intersection with itself is its area when its sides are positive; only when
    # one is not (an empty or inverted box) is the area computed, and 0/0 silenced.
    areas = inter.diagonal()
    if np.minimum.reduce(areas) > 0:
        union = np.add.outer(areas, areas)
        np.subtract(union, inter, out=union)
        np.divide(inter, union, out=inter)
    else:
        side = np.add(xyxy[2:], xyxy[:2])
        areas = np.multiply(side[0], side[1])
        union = np.add.outer(areas, areas)
        np.subtract(union, inter, out=union)
        with np.errstate(invalid="ignore", divide="ignore"):  # 0/0 -> NaN suppresses nothing
            np.divide(inter, union, out=inter)
    return _greedy(np.greater(inter, thr), limit)


def _zeros(count: int) -> npt.NDArray[np.float32]:
    """``count`` read-only float32 zeros (``maximum`` with a scalar 0 runs elementwise without
    SIMD, about 5x slower than with an array of zeros).

    From a shared block of at least 64 KB (up to 90 boxes), a power of two, so that frames
    of varying candidate counts reuse one block; two are kept (at most 8 + 4 MB at the
    matrix limit).
    """
    return _zeros_block(1 << max(count - 1, _ZEROS_MIN).bit_length())[:count]


_ZEROS_MIN = (1 << 14) - 1


@lru_cache(maxsize=2)
def _zeros_block(size: int) -> npt.NDArray[np.float32]:
    block = np.zeros(size, np.float32)
    block.flags.writeable = False
    return block


def _greedy(over: npt.NDArray[np.bool_], limit: int) -> npt.NDArray[np.intp]:
    """The greedy scan over a boolean "i suppresses j" matrix of boxes in score order.

    Rows become Python integers (bit j of row i: box i suppresses box j); each step takes the
    lowest live bit (the best remaining box), keeps it and clears what it suppresses, so the
    loop runs once per kept box. Bits below the kept one are already clear, so only the upper
    triangle of the matrix matters, as in the textbook loop.
    """
    n = over.shape[0]
    flat = n <= _FLAT_LIMIT
    if flat:  # the whole matrix as one integer: row i is it shifted by i * n bits
        matrix = int.from_bytes(np.packbits(over, bitorder="little").tobytes(), "little")
    else:  # one integer per row, from its bytes, when needed
        packed = np.packbits(over, axis=1, bitorder="little")
        width = packed.shape[1]
        rows = packed.tobytes()
    alive = (1 << n) - 1
    keep: list[int] = []
    while alive:
        low = alive & -alive
        i = low.bit_length() - 1
        keep.append(i)
        if len(keep) >= limit:
            break
        if flat:
            alive &= ~(matrix >> (i * n))
        else:
            alive &= ~int.from_bytes(rows[i * width : (i + 1) * width], "little")
        alive &= ~low  # a box whose IoU with itself is NaN (empty box) does not clear itself
    return np.array(keep, np.intp)


def _nms_rows(xyxy: npt.NDArray[np.float32], thr: np.float32, limit: int) -> npt.NDArray[np.intp]:
    """Many boxes: the IoU of each kept box with all others, one row at a time."""
    x1, y1, x2, y2 = xyxy
    areas = (x2 - x1) * (y2 - y1)
    n = xyxy.shape[1]
    alive = np.ones(n, bool)
    keep: list[int] = []
    for i in range(n):
        if alive[i]:
            keep.append(i)
            if len(keep) >= limit:
                break
            w = np.minimum(x2[i], x2) - np.maximum(x1[i], x1)
            np.maximum(w, 0, out=w)
            h = np.minimum(y2[i], y2) - np.maximum(y1[i], y1)
            np.maximum(h, 0, out=h)
            w *= h
            union = areas[i] + areas
            union -= w
            with np.errstate(invalid="ignore", divide="ignore"):
                w /= union
            alive &= ~(w > thr)
    return np.array(keep, np.intp)
