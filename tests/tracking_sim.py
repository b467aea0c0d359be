"""Synthetic detection sequences with known identities, and identity metrics.

A scene is a list of objects, each a box moving at constant velocity between a start and an
end frame, optionally hidden during some frames (occlusion). ``frames`` yields per frame the
detections as canonical arrays plus the ground-truth id of every row, with seeded noise on
the boxes and scores. ``identity_metrics`` counts id switches and fragmentations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgeyolo.postprocess import Detections


@dataclass
class SimObject:
    gid: int
    start: tuple[float, float]  # bottom-centre at the first frame
    velocity: tuple[float, float]  # pixels per frame
    size: tuple[float, float] = (40.0, 100.0)  # w, h
    first: int = 0
    last: int = 10**9
    hidden: tuple[range, ...] = ()
    class_id: int = 0
    score: float = 0.85

    def box(self, f: int) -> tuple[float, float, float, float]:
        k = f - self.first
        x = self.start[0] + self.velocity[0] * k
        y = self.start[1] + self.velocity[1] * k
        w, h = self.size
        return (x - w / 2, y - h, x + w / 2, y)

    def visible(self, f: int) -> bool:
        return self.first <= f <= self.last and not any(f in r for r in self.hidden)


@dataclass
class SimFrame:
    index: int
    timestamp: float
    dets: Detections
    gids: list[int] = field(default_factory=list)


def frames(
    objects: list[SimObject],
    n: int,
    *,
    fps: float = 15.0,
    noise_px: float = 2.0,
    seed: int = 0,
) -> list[SimFrame]:
    """The scene as ``n`` frames of detections (rows in score order, like decode's)."""
    rng = np.random.default_rng(seed)
    out = []
    for f in range(n):
        rows = [o for o in objects if o.visible(f)]
        boxes = np.array([o.box(f) for o in rows], np.float32).reshape(-1, 4)
        boxes += rng.normal(0, noise_px, boxes.shape).astype(np.float32)
        scores = np.array([o.score for o in rows], np.float32)
        scores = np.clip(scores + rng.normal(0, 0.03, scores.shape), 0.01, 0.99)
        scores = scores.astype(np.float32)
        order = np.argsort(-scores, kind="stable")
        dets = Detections(
            boxes[order],
            scores[order],
            np.array([o.class_id for o in rows], np.int32)[order],
        )
        out.append(SimFrame(f, 1000.0 + f / fps, dets, [rows[i].gid for i in order.tolist()]))
    return out


@dataclass
class IdentityMetrics:
    switches: int  # a ground-truth object's track id changed from one id to another
    fragments: int  # extra track ids per object, summed (0: one id for its whole life)
    merges: int  # track ids that covered more than one ground-truth object
    tracks: int  # distinct track ids
    untracked: int  # detections of objects without a track id (after their first frames)


def identity_metrics(
    per_frame: list[tuple[list[int], list[int]]], *, warmup: int = 3
) -> IdentityMetrics:
    """From (ground-truth ids, track ids) per frame; -1 track ids are ignored except counted."""
    last: dict[int, int] = {}
    ids_of: dict[int, set[int]] = {}
    gids_of: dict[int, set[int]] = {}
    seen_frames: dict[int, int] = {}
    switches = untracked = 0
    for gids, tids in per_frame:
        for g, t in zip(gids, tids, strict=True):
            seen_frames[g] = seen_frames.get(g, 0) + 1
            if t < 0:
                if seen_frames[g] > warmup:
                    untracked += 1
                continue
            if g in last and last[g] != t:
                switches += 1
            last[g] = t
            ids_of.setdefault(g, set()).add(t)
            gids_of.setdefault(t, set()).add(g)
    return IdentityMetrics(
        switches=switches,
        fragments=sum(len(s) - 1 for s in ids_of.values()),
        merges=sum(1 for s in gids_of.values() if len(s) > 1),
        tracks=len(gids_of),
        untracked=untracked,
    )
