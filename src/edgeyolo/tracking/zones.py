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
    x, y = points[:, 0:1], points[:, 1:2]  # n x 1
    x0, y0 = polygon[:, 0], polygon[:, 1]  # k
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    spans = (y0 > y) != (y1 > y)  # n x k: the edge straddles the point's horizontal
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    hits = spans & (x < x_cross)
    return np.asarray(hits.sum(axis=1) % 2 == 1)


class ZoneTracker:
    """Debounced zone membership of every track, kept in the tracker's columns.

    ``in_zone`` (``n x Z`` bool) is the debounced state; ``streak`` counts the consecutive
    frames the raw state disagreed with it.
    """

    def __init__(self, zones: list[Zone]) -> None:
        self.zones = zones
        self.min_frames = np.array([z.min_frames for z in zones], np.int32)

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
        points: F64,
        seen: Bools,
        ok: Bools,
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
        """Update ``in_zone``/``streak`` in place; returns (track rows, zone cols) that flipped.

        ``points`` n x 2, ``seen`` n (tracks seen in this frame: only they move), ``ok`` n x Z
        (``applies``).
        """
        if not self.zones or len(points) == 0:
            empty = np.empty(0, np.intp)
            return empty, empty
        raw = np.stack([in_polygon(points, z.polygon) for z in self.zones], axis=1) & ok
        differs = (raw != in_zone) & seen[:, None]
        same = (raw == in_zone) & seen[:, None]
        streak[differs] += 1
        streak[same] = 0
        flip = streak >= self.min_frames
        rows, cols = np.nonzero(flip)
        in_zone[flip] = ~in_zone[flip]
        streak[flip] = 0
        return rows, cols


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
        self.counts = np.zeros((len(lines), 2), np.int64)  # in, out

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
        points: F64,
        seen: Bools,
        ok: Bools,
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.int8]]:
        """Update in place; returns (track rows, line cols, direction +1 in / -1 out)."""
        if not self.lines or len(points) == 0:
            empty = np.empty(0, np.intp)
            return empty, empty, np.empty(0, np.int8)
        rel = points[:, None, :] - self.a[None, :, :]  # n x L x 2
        cross = (self.d[None, :, 0] * rel[..., 1] - self.d[None, :, 1] * rel[..., 0]) / self.length
        t = (rel[..., 0] * self.d[None, :, 0] + rel[..., 1] * self.d[None, :, 1]) / self.length**2
        live = seen[:, None] & ok
        outside = live & ((t < 0) | (t > 1))
        raw = np.where(cross > self.margin, 1, np.where(cross < -self.margin, -1, 0))
        definite = live & ~outside & (raw != 0)
        first = definite & (side == 0)
        other = definite & (side != 0) & (raw != side)
        back = definite & (raw == side)
        side[outside] = 0
        streak[outside | back] = 0
        side[first] = raw[first]
        streak[other] += 1
        cross_now = other & (streak >= self.min_frames)
        rows, cols = np.nonzero(cross_now)
        direction = raw[rows, cols].astype(np.int8)
        side[cross_now] = raw[cross_now]
        streak[cross_now] = 0
        np.add.at(self.counts, (cols, np.where(direction > 0, 0, 1)), 1)
        return rows, cols, direction
