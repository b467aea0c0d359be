"""Synthetic detection sequences with known identities (for the tracking bench and tests).

A scene is a list of objects, each a box moving at constant velocity between a start and an
end frame, optionally hidden during some frames (occlusion). ``frames`` gives per frame the
detections as canonical arrays plus the ground-truth id of every row, with seeded noise on
the boxes and scores.
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
