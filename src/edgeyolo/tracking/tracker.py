"""A ByteTrack-style multi-object tracker: numpy, scipy's optimal assignment, no other deps.

Per frame (the ideas of Zhang et al., "ByteTrack: Multi-Object Tracking by Associating Every
Detection Box", 2022; written here from the paper, not from its code):

1. Predict every track with a constant-velocity Kalman filter (``kalman.py``).
2. Match high-score detections to confirmed tracks by IoU (optimal assignment), then the
   rest to lost tracks (recency breaks ties where predictions overlap).
3. Match low-score detections to the confirmed tracks still unmatched: a person half hidden
   behind a car scores low, but is still that person.
4. Match the remaining high-score detections to tentative tracks; a tentative track that
   misses a frame is dropped (most false positives flicker).
4b. Match what is left to confirmed and lost tracks by centre distance (within one box
   diagonal): small fast objects (a bouncing ball) jump out of their predicted box.
5. Unmatched confirmed tracks become lost and are predicted on; a track lost for longer than
   ``max_lost_s`` is removed. Remaining high-score detections start tentative tracks, which
   are confirmed after ``min_hits`` consecutive hits and only then get a ``track_id``.

Matching is per class (a person never continues a car's track). What is per track and
numeric lives in arrays with a column (or row) per track, in the order of ``tracks``: the
Kalman states (``x``, ``kalman.py``), the class ids, and the caller's ``columns`` (the
stage's zone and line state), so that a frame costs a fixed handful of numpy calls however
many tracks there are, and the Python side is a few attribute updates per matched track.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

from edgeyolo.tracking import kalman

F64 = npt.NDArray[np.float64]
Ints = npt.NDArray[np.intp]


class TrackState(IntEnum):
    """Where a track is in its life."""

    TENTATIVE = 0
    CONFIRMED = 1
    LOST = 2


_TENTATIVE, _CONFIRMED, _LOST = TrackState.TENTATIVE, TrackState.CONFIRMED, TrackState.LOST


@dataclass(slots=True)
class Track:
    """One tracked object (the Python side; its numbers live in the tracker's arrays)."""

    class_id: int
    first_seen: float
    last_seen: float
    score: float
    track_id: int = -1  # assigned at confirmation
    state: TrackState = TrackState.TENTATIVE
    hits: int = 1  # consecutive hits while tentative
    det: int = -1  # row of this frame's detections, -1 when not seen in this frame


@dataclass(slots=True)
class TrackerUpdate:
    """What one frame did: detection rows -> track ids, and tracks that started or ended."""

    det_track_ids: npt.NDArray[np.int64]  # per detection row; -1: no confirmed track
    confirmed: list[Track] = field(default_factory=list)  # confirmed in this frame
    removed: list[Track] = field(default_factory=list)  # confirmed tracks removed now


def pairwise_iou(a: F64, b: F64) -> F64:
    """IoU of boxes given as rows x1, y1, x2, y2 (``4 x n`` and ``4 x m``): ``n x m``.

    Computed over the ``n * m`` pairs laid out flat (``a`` repeated, ``b`` tiled): for tens
    of boxes, numpy's cost is per call, and calls on equal shapes are the cheapest.
    """
    n, m = a.shape[1], b.shape[1]
    pa = a.repeat(m, 1)
    pb = b[:, None, :].repeat(n, 1).reshape(4, n * m)
    wh = np.minimum(pa[2:], pb[2:])
    wh -= np.maximum(pa[:2], pb[:2])
    wh = np.maximum(wh, 0.0)
    inter: F64 = wh[0] * wh[1]
    sa = pa[2:] - pa[:2]
    sb = pb[2:] - pb[:2]
    union = sa[0] * sa[1]
    union += sb[0] * sb[1]
    union -= inter
    union = np.maximum(union, 1e-12)
    inter /= union
    return inter.reshape(n, m)


def iou_matrix(a: npt.NDArray[np.floating], b: npt.NDArray[np.floating]) -> F64:
    """Pairwise IoU of ``n x 4`` and ``m x 4`` xyxy boxes (``n x m``); 0 for empty boxes."""
    return pairwise_iou(np.asarray(a, np.float64).T, np.asarray(b, np.float64).T)


def center_similarity(
    a: npt.NDArray[np.floating], b: npt.NDArray[np.floating], max_dist: float
) -> F64:
    """1 - centre distance / (``max_dist`` x the diagonal of ``a``'s box), floored at 0."""
    ca = (a[:, :2] + a[:, 2:]) / 2
    cb = (b[:, :2] + b[:, 2:]) / 2
    diag = np.hypot(a[:, 2] - a[:, 0], a[:, 3] - a[:, 1])
    dist = np.hypot(ca[:, None, 0] - cb[None, :, 0], ca[:, None, 1] - cb[None, :, 1])
    return np.clip(1.0 - dist / (max_dist * np.maximum(diag, 1.0))[:, None], 0.0, None)


def associate(
    score: F64, rows: list[int], cols: list[int], min_score: float
) -> list[tuple[int, int]]:
    """Optimal one-to-one matching of track ``rows`` to detection ``cols`` of ``score``.

    ``score`` is tracks x detections (IoU) with pairs of different classes already zeroed;
    ``rows`` and ``cols`` are ascending. Returns the accepted pairs (score >= ``min_score``)
    as (row, col) values of ``rows`` and ``cols``.
    """
    if not rows or not cols:
        return []
    n, m = score.shape
    full = len(rows) == n and len(cols) == m  # every row and column: no need to cut
    sub = score if full else score.take(rows, 0).take(cols, 1)
    r, c = linear_sum_assignment(sub, maximize=True)
    vals = sub[r, c].tolist()
    r_, c_ = r.tolist(), c.tolist()
    if full:
        return [(i, j) for i, j, v in zip(r_, c_, vals, strict=True) if v >= min_score]
    return [(rows[i], cols[j]) for i, j, v in zip(r_, c_, vals, strict=True) if v >= min_score]


class ByteTracker:
    """Tracks the detections of one model on one camera; call ``update`` once per frame."""

    def __init__(
        self,
        *,
        high_thresh: float = 0.5,
        low_thresh: float = 0.1,
        new_track_thresh: float | None = None,
        match_iou: float = 0.2,
        low_match_iou: float = 0.5,
        tentative_iou: float = 0.3,
        max_center_dist: float = 1.0,
        min_hits: int = 2,
        max_lost_s: float = 1.5,
    ) -> None:
        if not 0.0 <= low_thresh <= high_thresh <= 1.0:
            raise ValueError(f"need 0 <= low_thresh ({low_thresh}) <= high_thresh ({high_thresh})")
        self.high_thresh = high_thresh
        self.low_thresh = low_thresh
        self.new_track_thresh = high_thresh if new_track_thresh is None else new_track_thresh
        self.match_iou = match_iou
        self.low_match_iou = low_match_iou
        self.tentative_iou = tentative_iou
        self.max_center_dist = max_center_dist
        self.min_hits = max(1, min_hits)
        self.max_lost_s = max_lost_s
        self.tracks: list[Track] = []
        self.x: F64 = np.zeros((kalman.STATE_ROWS, 0))  # Kalman states, a column per track
        self.classes: Ints = np.zeros(0, np.intp)  # class id per track
        # The caller's per-track arrays (first axis: track), kept in step with ``tracks``:
        # zeros for a new track, compacted when tracks go.
        self.columns: dict[str, npt.NDArray[Any]] = {}
        self._next_id = 1
        self._t: float | None = None

    def add_column(self, name: str, width: int, dtype: npt.DTypeLike) -> None:
        """Keep a ``tracks x width`` array ``columns[name]`` (zeros for new tracks)."""
        self.columns[name] = np.zeros((len(self.tracks), width), dtype)

    def boxes(self) -> F64:
        """Every track's current (predicted or corrected) box, ``n x 4`` xyxy."""
        return kalman.cxcywh_to_xyxy(np.ascontiguousarray(self.x[:4].T))

    def update(
        self,
        boxes: npt.NDArray[np.floating],
        scores: npt.NDArray[np.floating],
        class_ids: npt.NDArray[np.integer],
        timestamp: float,
    ) -> TrackerUpdate:
        """Advance to ``timestamp`` (seconds) and associate this frame's detections."""
        dt = 0.0 if self._t is None else min(max(timestamp - self._t, 0.0), 1.0)
        self._t = timestamp
        tracks = self.tracks
        # Pools are short Python lists: for tens of objects that is cheaper than numpy masks.
        pools: tuple[list[int], list[int], list[int]] = ([], [], [])  # by TrackState
        for i, tr in enumerate(tracks):
            tr.det = -1
            pools[tr.state].append(i)
        tentative, confirmed, lost = pools
        score_of = scores.tolist()
        hi_t, lo_t = self.high_thresh, self.low_thresh
        high = [i for i, v in enumerate(score_of) if v >= hi_t]
        low = [i for i, v in enumerate(score_of) if lo_t <= v < hi_t]
        b = boxes.T.astype(np.float64, order="C")  # 4 x m: x1, y1, x2, y2
        if tracks:
            x = kalman.predict_state(self.x, dt)
            x[2:4] = np.maximum(x[2:4], 1.0)
            self.x = x
            half = x[2:4] / 2
            pred = np.concatenate((x[:2] - half, x[:2] + half))  # 4 x n xyxy
            # One IoU matrix for all stages; pairs of different classes never match.
            iou = pairwise_iou(pred, b)
            np.putmask(iou, self.classes[:, None] != class_ids, 0.0)
        pairs: list[tuple[int, int]] = []

        def match(pool: list[int], dets: list[int], min_iou: float) -> tuple[list[int], list[int]]:
            """Match, record the pairs, return what is left of ``pool`` and ``dets``."""
            if not pool or not dets:
                return pool, dets
            got = associate(iou, pool, dets, min_iou)
            if not got:
                return pool, dets
            pairs.extend(got)
            if len(got) < len(pool):
                used_t = {t for t, _ in got}
                pool = [t for t in pool if t not in used_t]
            else:
                pool = []
            if len(got) < len(dets):
                used_d = {d for _, d in got}
                dets = [d for d in dets if d not in used_d]
            else:
                dets = []
            return pool, dets

        # High-score detections go to the tracks seen in the last frame first, then to lost
        # ones: where two predictions overlap (paths crossing, one hidden) recency decides.
        confirmed, high = match(confirmed, high, self.match_iou)
        lost, high = match(lost, high, self.match_iou)
        confirmed, _ = match(confirmed, low, self.low_match_iou)
        _, high = match(tentative, high, self.tentative_iou)
        if self.max_center_dist > 0 and high and (confirmed or lost):
            # Small, fast or bouncing objects (a ball) leave their predicted box: no overlap,
            # but close. Last, so that it never takes a detection an overlap explains.
            iou = center_similarity(pred.T, boxes, self.max_center_dist)
            np.putmask(iou, self.classes[:, None] != class_ids, 0.0)
            _, high = match(sorted(confirmed + lost), high, 1e-9)

        wh = b[2:] - b[:2]
        z = np.concatenate((b[:2] + wh / 2, wh))  # 4 x m: cx, cy, w, h
        ids = [-1] * len(score_of)
        out = TrackerUpdate(np.empty(0, np.int64))
        if pairs:
            self._correct(pairs, z)
        for ti, di in pairs:
            tr = tracks[ti]
            tr.det = di
            tr.last_seen = timestamp
            tr.score = score_of[di]
            state = tr.state
            if state is _LOST:
                tr.state = _CONFIRMED
            elif state is _TENTATIVE:
                tr.hits += 1  # (only tentative tracks count their hits)
                if tr.hits < self.min_hits:
                    continue
                self._confirm(tr, out)
            ids[di] = tr.track_id

        drop = []
        for i, tr in enumerate(tracks):
            if tr.det >= 0:
                continue
            if tr.state is _TENTATIVE:
                drop.append(i)
            else:
                tr.state = _LOST
                if timestamp - tr.last_seen > self.max_lost_s:
                    drop.append(i)
                    out.removed.append(tr)
        if drop:
            keep = np.ones(len(tracks), bool)
            keep[drop] = False
            self._compact(keep)
        new = [d for d in high if score_of[d] >= self.new_track_thresh]
        if new:
            self._start(new, z, class_ids, score_of, timestamp, out, ids)
        out.det_track_ids = np.array(ids, np.int64)
        return out

    def flush(self) -> list[Track]:
        """Remove every track (the source ended); returns the confirmed ones."""
        ended = [t for t in self.tracks if t.state != TrackState.TENTATIVE]
        self._compact(np.zeros(len(self.tracks), bool))
        return ended

    def _correct(self, pairs: list[tuple[int, int]], z: F64) -> None:
        """Kalman update of the matched tracks with their detections' ``z`` columns."""
        mt = [t for t, _ in pairs]
        md = [d for _, d in pairs]
        # (``take`` with an index array: numpy's cheapest gather for a few columns.)
        zm = z if md == list(range(z.shape[1])) else z.take(np.array(md, np.intp), 1)
        if mt == list(range(len(self.tracks))):  # every track, in order: no gather/scatter
            self.x = kalman.update_state(self.x, zm)
        else:
            idx = np.array(mt, np.intp)
            self.x[:, idx] = kalman.update_state(self.x.take(idx, 1), zm)

    def _confirm(self, tr: Track, out: TrackerUpdate) -> None:
        tr.state = TrackState.CONFIRMED
        tr.track_id = self._next_id
        self._next_id += 1
        out.confirmed.append(tr)

    def _compact(self, keep: npt.NDArray[np.bool_]) -> None:
        self.tracks = [t for t, k in zip(self.tracks, keep.tolist(), strict=True) if k]
        self.x, self.classes = self.x[:, keep], self.classes[keep]
        for name, col in self.columns.items():
            self.columns[name] = col[keep]

    def _start(
        self,
        rows: list[int],
        z: F64,
        class_ids: npt.NDArray[np.integer],
        score_of: list[float],
        timestamp: float,
        out: TrackerUpdate,
        ids: list[int],
    ) -> None:
        idx = np.array(rows, np.intp)
        self.x = np.concatenate((self.x, kalman.initiate_state(z.take(idx, 1))), axis=1)
        classes = class_ids.take(idx).astype(np.intp)
        self.classes = np.concatenate((self.classes, classes))
        k = len(rows)
        for name, col in self.columns.items():
            self.columns[name] = np.concatenate((col, np.zeros((k, col.shape[1]), col.dtype)))
        for di, cls in zip(rows, classes.tolist(), strict=True):
            tr = Track(cls, timestamp, timestamp, score_of[di], det=di)
            self.tracks.append(tr)
            if self.min_hits <= 1:
                self._confirm(tr, out)
                ids[di] = tr.track_id
