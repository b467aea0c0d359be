"""Zones (polygons) and lines (directed segments) over tracks, vectorized over tracks.

An object's position is the bottom-centre of its box (its feet, where it stands on the
ground). Zone membership is debounced: a track enters (or leaves) a zone only after its point
was inside (outside) for ``min_frames`` consecutive frames in which it was seen. A line counts
a crossing once, when the point has been on the other side for ``min_frames`` frames and
beyond ``margin`` pixels from the line: wobbling on the line counts nothing.

Everything is vectorized over the tracks seen in a frame: per (track, zone edge) and per
(track, line) "cell", laid out flat with the per-edge and per-line constants tiled to match
(cached per number of tracks), since for tens of objects numpy costs per call and calls on
equal shapes cost least. The per-track state lives in arrays the caller keeps.

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
I8 = npt.NDArray[np.int8]
I32 = npt.NDArray[np.int32]


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


class _Tiles:
    """Rows of per-item constants tiled for ``k`` tracks (``rows x (k * items)``), cached."""

    def __init__(self, rows: npt.NDArray[Any]) -> None:
        self.rows = rows
        self._cache: dict[int, npt.NDArray[Any]] = {}

    def __call__(self, k: int) -> npt.NDArray[Any]:
        t = self._cache.get(k)
        if t is None:
            t = self._cache[k] = np.tile(self.rows, (1, k))
        return t


class Polygons:
    """Several polygons' edges stacked once, for one point-in-polygon pass over all of them."""

    def __init__(self, polygons: list[F64]) -> None:
        x0 = np.concatenate([p[:, 0] for p in polygons]) if polygons else np.empty(0)
        y0 = np.concatenate([p[:, 1] for p in polygons]) if polygons else np.empty(0)
        x1 = np.concatenate([np.roll(p[:, 0], -1) for p in polygons]) if polygons else x0
        y1 = np.concatenate([np.roll(p[:, 1], -1) for p in polygons]) if polygons else y0
        self.count = len(polygons)
        self.edges = len(x0)
        dy = y1 - y0
        # Horizontal edges never straddle a point's horizontal: their slope is never used.
        slope = np.divide(x1 - x0, dy, out=np.zeros_like(dy), where=dy != 0)
        self._edges = _Tiles(np.stack((x0, y0, y1, slope)))
        self._starts = np.cumsum([0] + [len(p) for p in polygons[:-1]]).astype(np.intp)

    def contains(self, points: F64) -> Bools:
        """``n x count``: which point lies in which polygon."""
        return self.contains_xy(points[:, 0], points[:, 1])

    def contains_xy(self, px: F64, py: F64) -> Bools:
        """``n x count`` for the points ``(px, py)``."""
        n = len(px)
        if self.count == 0 or n == 0:
            return np.zeros((n, self.count), bool)
        x0, y0, y1, slope = self._edges(n)
        x, y = px.repeat(self.edges), py.repeat(self.edges)  # cell: (point, edge)
        spans = (y0 > y) != (y1 > y)  # the edge straddles the point's horizontal ...
        spans &= x < x0 + (y - y0) * slope  # ... right of the point
        per = spans.reshape(n, self.edges)
        return np.asarray(np.logical_xor.reduceat(per, self._starts, axis=1))  # odd: inside


class ZoneTracker:
    """Debounced zone membership of tracks.

    The per-track state is two ``tracks x zones`` arrays the caller keeps: the debounced
    membership (bool) and the consecutive frames the raw membership disagreed with it (int32).
    """

    def __init__(self, zones: list[Zone]) -> None:
        self.zones = zones
        self.polygons = Polygons([z.polygon for z in zones])
        self._need = _Tiles(np.array([[z.min_frames for z in zones]], np.int32))

    def applies(self, labels: list[str]) -> Bools:
        """``labels x zones``: does the zone count objects of that label."""
        table = [[z.labels is None or lb in z.labels for z in self.zones] for lb in labels]
        return np.array(table, bool).reshape(len(labels), len(self.zones))

    def step(
        self, inside: Bools, run: I32, px: F64, py: F64, ok: Bools | None
    ) -> list[tuple[int, int, bool]]:
        """One frame of the ``k`` tracks seen in it: their state rows (``inside``, ``run``,
        updated in place), feet ``(px, py)`` and ``ok`` rows from ``applies`` (None: every
        zone counts every track). Returns the flips as (row, zone, now inside), in order."""
        raw = self.polygons.contains_xy(px, py)
        if ok is not None:
            raw &= ok  # a zone that ignores the label never contains it
        run += 1
        np.putmask(run, raw == inside, 0)  # agreeing frames reset the count
        flip = run >= self._need(len(px)).reshape(run.shape)
        if not np.count_nonzero(flip):
            return []
        inside ^= flip
        np.putmask(run, flip, 0)
        rows, cols = np.nonzero(flip)
        r, c = rows.tolist(), cols.tolist()
        return [(a, j, bool(inside[a, j])) for a, j in zip(r, c, strict=True)]


class LineCounter:
    """Crossings of tracks over lines, with totals per line.

    The per-track state is two ``tracks x lines`` arrays the caller keeps: the side of
    every line the track was last on (+1 right, -1 left, 0 not known yet) and the
    consecutive frames it has been seen on the other side (int8, int32). Usually nothing
    happens on a line: numpy finds the few (track, line) cells where something does, and
    the rules run in Python on those only.
    """

    def __init__(self, lines: list[Line]) -> None:
        self.lines = lines
        a = np.array([ln.a for ln in lines], np.float64).reshape(-1, 2)
        d = np.array([ln.b for ln in lines], np.float64).reshape(-1, 2) - a
        length = np.maximum(np.hypot(d[:, 0], d[:, 1]), 1e-9)
        margin = np.array([ln.margin for ln in lines], np.float64)
        dx, dy = d[:, 0], d[:, 1]
        # Per cell: the line's start, its direction twice (dx, dy | dy, dx: the products of
        # the dot and the cross product), its length (squared) and margin.
        consts = (a[:, 0], a[:, 1], dx, dy, dy, dx, length, length**2, margin, -margin)
        self._consts = _Tiles(np.stack(consts))
        self.min_frames = [ln.min_frames for ln in lines]
        self.counts = [[0, 0] for _ in lines]  # per line: in, out

    def applies(self, labels: list[str]) -> Bools:
        """``labels x lines``: does the line count objects of that label."""
        table = [[ln.labels is None or lb in ln.labels for ln in self.lines] for lb in labels]
        return np.array(table, bool).reshape(len(labels), len(self.lines))

    def step(
        self, side: I8, run: I32, px: F64, py: F64, ok: Bools | None
    ) -> list[tuple[int, int, int]]:
        """One frame of the tracks seen in it (as ``ZoneTracker.step``, state updated in
        place). Returns the crossings as (row, line, +1 in / -1 out), in order."""
        k, n_lines = side.shape
        t = self._consts(k)
        rel = np.array((px, py)).repeat(n_lines, 1) - t[0:2]  # cell: (track, line)
        prod = rel * t[2:6].reshape(2, 2, -1)  # x dx, y dy | x dy, y dx
        along = (prod[0, 0] + prod[0, 1]) / t[7]
        cross = (prod[1, 1] - prod[1, 0]) / t[6]
        # Beyond the segment's ends: forget the side. Within the margin: no information.
        inseg = along >= 0.0
        inseg &= along <= 1.0
        raw = (cross > t[8]).view(np.int8) - (cross < t[9]).view(np.int8)
        sd, st = side.reshape(-1), run.reshape(-1)  # views: updates land in side and run
        # Something happens where a side is seen that is new (or a count is running), or
        # where a known side is forgotten.
        news = raw != sd
        news |= st != 0
        news &= raw != 0
        busy = np.where(inseg, news, sd != 0)
        if ok is not None:
            busy &= ok.reshape(-1)
        if not np.count_nonzero(busy):
            return []
        out = []
        for c in np.flatnonzero(busy).tolist():
            a, j = divmod(c, n_lines)
            if not inseg[c]:
                sd[c] = st[c] = 0
                continue
            now, was = int(raw[c]), int(sd[c])
            if was == 0:  # first sight: a side, no crossing
                sd[c] = now
            elif now == was:
                st[c] = 0
            else:  # seen on the other side
                st[c] += 1
                if st[c] >= self.min_frames[j]:
                    sd[c], st[c] = now, 0
                    self.counts[j][0 if now > 0 else 1] += 1
                    out.append((a, j, now))
        return out
