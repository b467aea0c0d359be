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

Matching is per class (a person never continues a car's track). The Kalman states of all
tracks live in stacked arrays, so that predicting and correcting them costs a fixed handful of
numpy calls per frame; what the stage keeps per track (zone and line state) rides on the
``Track`` (``data``).
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


@dataclass(slots=True)
class Track:
    """One tracked object (the Python side; its Kalman state lives in the tracker's arrays)."""

    class_id: int
    first_seen: float
    last_seen: float
    score: float
    track_id: int = -1  # assigned at confirmation
    state: TrackState = TrackState.TENTATIVE
    hits: int = 1
    det: int = -1  # row of this frame's detections, -1 when not seen in this frame
    data: dict[str, Any] = field(default_factory=dict)  # the stage's per-track state


@dataclass(slots=True)
class TrackerUpdate:
    """What one frame did: detection rows -> track ids, and tracks that started or ended."""

    det_track_ids: npt.NDArray[np.int64]  # per detection row; -1: no confirmed track
    confirmed: list[Track] = field(default_factory=list)  # confirmed in this frame
    removed: list[Track] = field(default_factory=list)  # confirmed tracks removed now


def iou_matrix(a: npt.NDArray[np.floating], b: npt.NDArray[np.floating]) -> F64:
    """Pairwise IoU of ``n x 4`` and ``m x 4`` xyxy boxes (``n x m``); 0 for empty boxes."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    wh = np.minimum(a[:, None, 2:], b[:, 2:]) - np.maximum(a[:, None, :2], b[:, :2])
    np.maximum(wh, 0.0, out=wh)
    inter = wh[..., 0] * wh[..., 1]
    sa, sb = a[:, 2:] - a[:, :2], b[:, 2:] - b[:, :2]
    union = (sa[:, 0] * sa[:, 1])[:, None] + sb[:, 0] * sb[:, 1] - inter
    np.maximum(union, 1e-12, out=union)
    return np.asarray(inter / union)


def center_similarity(
    a: npt.NDArray[np.floating], b: npt.NDArray[np.floating], max_dist: float
) -> F64:
    """1 - centre distance / (``max_dist`` x the diagonal of ``a``'s box), floored at 0."""
    ca = (a[:, :2] + a[:, 2:]) / 2
    cb = (b[:, :2] + b[:, 2:]) / 2
    diag = np.hypot(a[:, 2] - a[:, 0], a[:, 3] - a[:, 1])
    dist = np.hypot(ca[:, None, 0] - cb[None, :, 0], ca[:, None, 1] - cb[None, :, 1])
    return np.clip(1.0 - dist / (max_dist * np.maximum(diag, 1.0))[:, None], 0.0, None)


def associate(iou: F64, rows: Ints, cols: Ints, min_iou: float) -> tuple[Ints, Ints]:
    """Optimal one-to-one matching of track ``rows`` to detection ``cols`` of ``iou``.

    ``iou`` is tracks x detections with pairs of different classes already zeroed. Returns the
    accepted pairs (IoU >= ``min_iou``) as indices into ``rows`` and ``cols``' values.
    """
    if len(rows) == 0 or len(cols) == 0:
        empty = np.empty(0, np.intp)
        return empty, empty
    sub = iou[np.ix_(rows, cols)]
    r, c = linear_sum_assignment(sub, maximize=True)
    ok = sub[r, c] >= min_iou
    return rows[r[ok]], cols[c[ok]]


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
        self.mean: F64 = np.zeros((0, 8))
        self.cov: F64 = np.zeros((0, 3, 4))  # Kalman covariance blocks (kalman.py)
        self._next_id = 1
        self._t: float | None = None

    def boxes(self) -> F64:
        """Every track's current (predicted or corrected) box, ``n x 4`` xyxy."""
        return kalman.cxcywh_to_xyxy(self.mean[:, :4])

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
        for tr in tracks:
            tr.det = -1
        self.mean, self.cov = kalman.predict(self.mean, self.cov, dt)
        if len(tracks):
            np.maximum(self.mean[:, 2:4], 1.0, out=self.mean[:, 2:4])
        t_cls = np.fromiter((t.class_id for t in tracks), np.intp, len(tracks))
        # One IoU matrix for all stages; pairs of different classes never match.
        pred = self.boxes()
        iou = iou_matrix(pred, boxes)
        iou[t_cls[:, None] != class_ids[None, :]] = 0.0
        # Pools are short Python lists: for tens of objects that is cheaper than numpy masks.
        score_of = scores.tolist()
        high = [i for i, v in enumerate(score_of) if v >= self.high_thresh]
        low = [i for i, v in enumerate(score_of) if self.low_thresh <= v < self.high_thresh]
        confirmed = [i for i, t in enumerate(tracks) if t.state == TrackState.CONFIRMED]
        lost = [i for i, t in enumerate(tracks) if t.state == TrackState.LOST]
        tentative = [i for i, t in enumerate(tracks) if t.state == TrackState.TENTATIVE]
        pairs: list[tuple[int, int]] = []

        def match(pool: list[int], dets: list[int], min_iou: float) -> tuple[list[int], list[int]]:
            """Match, record the pairs, return what is left of ``pool`` and ``dets``."""
            if not pool or not dets:
                return pool, dets
            r, c = associate(iou, np.array(pool, np.intp), np.array(dets, np.intp), min_iou)
            got = list(zip(r.tolist(), c.tolist(), strict=True))
            pairs.extend(got)
            used_t = {t for t, _ in got}
            used_d = {d for _, d in got}
            return [t for t in pool if t not in used_t], [d for d in dets if d not in used_d]

        # High-score detections go to the tracks seen in the last frame first, then to lost
        # ones: where two predictions overlap (paths crossing, one hidden) recency decides.
        confirmed, high = match(confirmed, high, self.match_iou)
        lost, high = match(lost, high, self.match_iou)
        confirmed, _ = match(confirmed, low, self.low_match_iou)
        _, high = match(tentative, high, self.tentative_iou)
        if self.max_center_dist > 0 and high and (confirmed or lost):
            # Small, fast or bouncing objects (a ball) leave their predicted box: no overlap,
            # but close. Last, so that it never takes a detection an overlap explains.
            iou = center_similarity(pred, boxes, self.max_center_dist)
            iou[t_cls[:, None] != class_ids[None, :]] = 0.0
            _, high = match(sorted(confirmed + lost), high, 1e-9)

        out = TrackerUpdate(np.full(len(scores), -1, np.int64))
        mt = np.array([t for t, _ in pairs], np.intp)
        md = np.array([d for _, d in pairs], np.intp)
        if pairs:
            z = kalman.xyxy_to_cxcywh(boxes[md])
            self.mean[mt], self.cov[mt] = kalman.update(self.mean[mt], self.cov[mt], z)
        for ti, di in pairs:
            tr = tracks[ti]
            tr.det, tr.last_seen, tr.score = di, timestamp, score_of[di]
            tr.hits = tr.hits + 1
            if tr.state == TrackState.LOST:
                tr.state = TrackState.CONFIRMED
            elif tr.state == TrackState.TENTATIVE and tr.hits >= self.min_hits:
                self._confirm(tr, out)
            if tr.state == TrackState.CONFIRMED:
                out.det_track_ids[di] = tr.track_id

        keep = np.ones(len(tracks), bool)
        for i, tr in enumerate(tracks):
            if tr.det >= 0:
                continue
            if tr.state == TrackState.TENTATIVE:
                keep[i] = False
            else:
                tr.state = TrackState.LOST
                tr.hits = 0
                if timestamp - tr.last_seen > self.max_lost_s:
                    keep[i] = False
                    out.removed.append(tr)
        if not keep.all():
            self._compact(keep)
        new = np.array([d for d in high if score_of[d] >= self.new_track_thresh], np.intp)
        if len(new):
            self._start(new, boxes, scores, class_ids.astype(np.intp, copy=False), timestamp, out)
        return out

    def flush(self) -> list[Track]:
        """Remove every track (the source ended); returns the confirmed ones."""
        ended = [t for t in self.tracks if t.state != TrackState.TENTATIVE]
        self._compact(np.zeros(len(self.tracks), bool))
        return ended

    def _confirm(self, tr: Track, out: TrackerUpdate) -> None:
        tr.state = TrackState.CONFIRMED
        tr.track_id = self._next_id
        self._next_id += 1
        out.confirmed.append(tr)

    def _compact(self, keep: npt.NDArray[np.bool_]) -> None:
        self.tracks = [t for t, k in zip(self.tracks, keep.tolist(), strict=True) if k]
        self.mean, self.cov = self.mean[keep], self.cov[keep]

    def _start(
        self,
        rows: Ints,
        boxes: npt.NDArray[np.floating],
        scores: npt.NDArray[np.floating],
        classes: Ints,
        timestamp: float,
        out: TrackerUpdate,
    ) -> None:
        mean, cov = kalman.initiate(kalman.xyxy_to_cxcywh(boxes[rows]))
        self.mean = np.concatenate((self.mean, mean))
        self.cov = np.concatenate((self.cov, cov))
        for di in rows.tolist():
            s = float(scores[di])
            tr = Track(int(classes[di]), timestamp, timestamp, s, det=di)
            self.tracks.append(tr)
            if self.min_hits <= 1:
                self._confirm(tr, out)
                out.det_track_ids[di] = tr.track_id
