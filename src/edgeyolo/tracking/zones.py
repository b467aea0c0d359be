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
    """Debounced zone membership of tracks.

    Per track (``state``, one per track, made by ``new_state``): the debounced membership of
    every zone and the consecutive frames the raw membership disagreed with it.
    """

    def __init__(self, zones: list[Zone]) -> None:
        self.zones = zones
        self.min_frames = [z.min_frames for z in zones]
        self.polygons = Polygons([z.polygon for z in zones])

    def new_state(self) -> list[list[Any]]:
        """A track's state before its first frame: in no zone."""
        n = len(self.zones)
        return [[False] * n, [0] * n]

    def applies(self, labels: list[str]) -> list[list[bool]]:
        """Per label, per zone: does the zone count objects of that label."""
        return [[z.labels is None or lb in z.labels for z in self.zones] for lb in labels]

    def step(
        self, states: list[list[list[Any]]], points: F64, ok: list[list[bool]]
    ) -> list[tuple[int, int, bool]]:
        """Update the ``states`` of tracks seen in this frame (their ``points`` and ``ok``
        rows from ``applies``) in place; returns the flips as (index, zone, now inside)."""
        if not self.zones or not states:
            return []
        raw = self.polygons.contains(points).tolist()
        # A few tracks x a few zones: a Python loop is cheaper than a dozen numpy calls.
        need = self.min_frames
        flips = []
        for a, (inside_now, run) in enumerate(states):
            counts = ok[a]
            for j, inside in enumerate(raw[a]):
                inside = inside and counts[j]  # noqa: PLW2901 - a zone that ignores the label
                if inside == inside_now[j]:
                    run[j] = 0
                    continue
                run[j] += 1
                if run[j] >= need[j]:
                    inside_now[j], run[j] = inside, 0
                    flips.append((a, j, inside))
        return flips


class LineCounter:
    """Crossings of tracks over lines, with totals per line.

    Per track (``new_state``): the side of every line it was last on (+1 right, -1 left,
    0 not known yet) and the consecutive frames it has been seen on the other side.
    """

    def __init__(self, lines: list[Line]) -> None:
        self.lines = lines
        self.a = np.array([ln.a for ln in lines], np.float64).reshape(-1, 2)
        self.d = np.array([ln.b for ln in lines], np.float64).reshape(-1, 2) - self.a
        self.length = np.maximum(np.hypot(self.d[:, 0], self.d[:, 1]), 1e-9)
        self.margin = [ln.margin for ln in lines]
        self.min_frames = [ln.min_frames for ln in lines]
        self.counts = [[0, 0] for _ in lines]  # per line: in, out

    def new_state(self) -> list[list[int]]:
        """A track's state before its first frame: no side known."""
        n = len(self.lines)
        return [[0] * n, [0] * n]

    def applies(self, labels: list[str]) -> list[list[bool]]:
        """Per label, per line: does the line count objects of that label."""
        return [[ln.labels is None or lb in ln.labels for ln in self.lines] for lb in labels]

    def step(
        self, states: list[list[list[int]]], points: F64, ok: list[list[bool]]
    ) -> list[tuple[int, int, int]]:
        """Update the ``states`` of tracks seen in this frame in place; returns the crossings
        as (index, line, +1 in / -1 out)."""
        if not self.lines or not states:
            return []
        rel = points[:, None, :] - self.a[None, :, :]  # k x L x 2
        cross = ((self.d[:, 0] * rel[..., 1] - self.d[:, 1] * rel[..., 0]) / self.length).tolist()
        along = (
            (rel[..., 0] * self.d[:, 0] + rel[..., 1] * self.d[:, 1]) / self.length**2
        ).tolist()
        applies = ok
        margin, need = self.margin, self.min_frames
        out = []
        for a, (sd, st) in enumerate(states):
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
                        out.append((a, j, raw))
        return out
