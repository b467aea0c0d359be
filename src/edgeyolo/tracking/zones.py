"""Zones (polygons) and lines (directed segments) over tracks, vectorized over tracks.

An object's position is the bottom-centre of its box (its feet, where it stands on the
ground). Zone membership is debounced: a track enters (or leaves) a zone only after its point
was inside (outside) for ``min_frames`` consecutive frames in which it was seen. A line counts
a crossing once, when the point has been on the other side for ``min_frames`` frames and
beyond ``margin`` pixels from the line: wobbling on the line counts nothing.

Sides of a line from A to B, as seen on screen (image y grows downwards): a point is on the
right (+1) when the cross product (B - A) x (P - A) is positive. ``in`` is a crossing from the
left of A->B to its right, ``out`` the reverse. Points whose projection falls outside the
segment (walking around its end) forget their side and count nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Zone:
    """A polygon in source pixels; ``labels`` None means every label."""

    name: str
    polygon: F64  # k x 2
    labels: frozenset[str] | None = None
    min_frames: int = 3


@dataclass(frozen=True, slots=True)
class Line:
    """A directed segment A -> B in source pixels."""

    name: str
    a: tuple[float, float]
    b: tuple[float, float]
    labels: frozenset[str] | None = None
    min_frames: int = 2
    margin: float = 8.0


def anchors(boxes: npt.NDArray[np.floating]) -> F64:
    """Bottom-centre points of ``n x 4`` xyxy boxes (``n x 2``)."""
    b = boxes.astype(np.float64, copy=False)
    return np.stack(((b[:, 0] + b[:, 2]) / 2, b[:, 3]), axis=1)


def in_polygon(points: F64, polygon: F64) -> Bools:
    """Even-odd rule: which of ``n x 2`` points lie inside the ``k x 2`` polygon."""
    return Polygons([polygon]).contains(points)[:, 0]


class Polygons:
    """Several polygons' edges stacked once, for one point-in-polygon pass over all of them."""

    def __init__(self, polygons: list[F64]) -> None:
        x0 = np.concatenate([p[:, 0] for p in polygons]) if polygons else np.empty(0)
        y0 = np.concatenate([p[:, 1] for p in polygons]) if polygons else np.empty(0)
        x1 = np.concatenate([np.roll(p[:, 0], -1) for p in polygons]) if polygons else x0
        y1 = np.concatenate([np.roll(p[:, 1], -1) for p in polygons]) if polygons else y0
        self.count = len(polygons)
        self._y0, self._y1 = y0, y1
        self._x0 = x0
        dy = y1 - y0
        # Horizontal edges never straddle a point's horizontal: their slope is never used.
        self._slope = np.divide(x1 - x0, dy, out=np.zeros_like(dy), where=dy != 0)
        self._starts = np.cumsum([0] + [len(p) for p in polygons[:-1]]).astype(np.intp)

    def contains(self, points: F64) -> Bools:
        """``n x count``: which point lies in which polygon."""
        x, y = points[:, 0:1], points[:, 1:2]
        spans = (self._y0 > y) != (self._y1 > y)  # n x edges: the edge straddles y
        hits = spans & (x < self._x0 + (y - self._y0) * self._slope)
        if self.count == 0:
            return np.zeros((len(points), 0), bool)
        per = np.add.reduceat(hits.view(np.uint8), self._starts, axis=1)
        return np.asarray(per % 2 == 1)


class ZoneTracker:
    """Debounced zone membership of every track, kept in the tracker's columns.

    ``in_zone`` (``n x Z`` bool) is the debounced state; ``streak`` counts the consecutive
    frames the raw state disagreed with it.
    """

    def __init__(self, zones: list[Zone]) -> None:
        self.zones = zones
        self.min_frames = np.array([z.min_frames for z in zones], np.int32)
        self.polygons = Polygons([z.polygon for z in zones])

    def applies(self, labels: list[str]) -> Bools:
        """``n x Z``: which zones count which track (by label)."""
        out = np.ones((len(labels), len(self.zones)), bool)
        for j, z in enumerate(self.zones):
            if z.labels is not None:
                out[:, j] = [lb in z.labels for lb in labels]
        return out

    def step(
        self,
        in_zone: npt.NDArray[Any],
        streak: npt.NDArray[Any],
        rows: list[int],
        points: F64,
        ok: Bools,
    ) -> list[tuple[int, int, bool]]:
        """Update ``in_zone``/``streak`` of the tracks ``rows`` (seen in this frame; ``points``
        and ``ok`` are theirs, ``ok`` from ``applies``) in place; returns the flips as
        (track row, zone, now inside)."""
        if not self.zones or not rows:
            return []
        raw = (self.polygons.contains(points) & ok).tolist()
        # A few tracks x a few zones: a Python loop is cheaper than a dozen numpy calls.
        cur, run = in_zone[rows].tolist(), streak[rows].tolist()
        need = self.min_frames.tolist()
        flips = []
        for a, row in enumerate(rows):
            r, c, s = raw[a], cur[a], run[a]
            for j, inside in enumerate(r):
                if inside == c[j]:
                    s[j] = 0
                    continue
                s[j] += 1
                if s[j] >= need[j]:
                    c[j], s[j] = inside, 0
                    flips.append((row, j, inside))
        in_zone[rows] = cur
        streak[rows] = run
        return flips


class LineCounter:
    """Crossings of every track over every line, kept in the tracker's columns.

    ``side`` (``n x L`` int8): the last side held (+1 right, -1 left, 0 not known yet);
    ``streak``: consecutive frames seen on the other side.
    """

    def __init__(self, lines: list[Line]) -> None:
        self.lines = lines
        self.a = np.array([ln.a for ln in lines], np.float64).reshape(-1, 2)
        d = np.array([ln.b for ln in lines], np.float64).reshape(-1, 2) - self.a
        self.d = d
        self.length = np.maximum(np.hypot(d[:, 0], d[:, 1]), 1e-9)
        self.margin = np.array([ln.margin for ln in lines], np.float64)
        self.min_frames = np.array([ln.min_frames for ln in lines], np.int32)
        self.counts = [[0, 0] for _ in lines]  # per line: in, out

    def applies(self, labels: list[str]) -> Bools:
        """``n x L``: which lines count which track (by label)."""
        out = np.ones((len(labels), len(self.lines)), bool)
        for j, ln in enumerate(self.lines):
            if ln.labels is not None:
                out[:, j] = [lb in ln.labels for lb in labels]
        return out

    def step(
        self,
        side: npt.NDArray[Any],
        streak: npt.NDArray[Any],
        rows: list[int],
        points: F64,
        ok: Bools,
    ) -> list[tuple[int, int, int]]:
        """Update ``side``/``streak`` of the tracks ``rows`` in place; returns the crossings as
        (track row, line, +1 in / -1 out)."""
        if not self.lines or not rows:
            return []
        rel = points[:, None, :] - self.a[None, :, :]  # k x L x 2
        cross = ((self.d[:, 0] * rel[..., 1] - self.d[:, 1] * rel[..., 0]) / self.length).tolist()
        along = (
            (rel[..., 0] * self.d[:, 0] + rel[..., 1] * self.d[:, 1]) / self.length**2
        ).tolist()
        applies = ok.tolist()
        sides, run = side[rows].tolist(), streak[rows].tolist()
        margin, need = self.margin.tolist(), self.min_frames.tolist()
        out = []
        for a, row in enumerate(rows):
            sd, st = sides[a], run[a]
            for j in range(len(self.lines)):
                if not applies[a][j]:
                    continue
                if not 0.0 <= along[a][j] <= 1.0:  # beyond the segment's ends: forget
                    sd[j] = st[j] = 0
                    continue
                c = cross[a][j]
                raw = 1 if c > margin[j] else -1 if c < -margin[j] else 0
                if raw == 0:  # on the line (within the margin): no information
                    continue
                if sd[j] == 0:  # first sight: a side, no crossing
                    sd[j] = raw
                elif raw == sd[j]:
                    st[j] = 0
                else:
                    st[j] += 1
                    if st[j] >= need[j]:
                        sd[j], st[j] = raw, 0
                        self.counts[j][0 if raw > 0 else 1] += 1
                        out.append((row, j, raw))
        side[rows] = sides
        streak[rows] = run
        return out
