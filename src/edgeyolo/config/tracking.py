"""Configuration models of tracking, zones and lines (pydantic only, no implementation).

``TrackingConfig`` sits under a model (``models[].tracking``); ``ZoneConfig`` and
``LineConfig`` under a camera (``cameras[].zones``, ``cameras[].lines``).
"""

from __future__ import annotations

from pydantic import Field, model_validator

from edgeyolo.config.base import Strict


class TrackingConfig(Strict):
    """Multi-object tracking of one model's detections (ByteTrack-style), per camera."""

    enabled: bool = Field(False, description="Track this model's objects (ids, lifecycle events).")
    high_thresh: float = Field(
        0.5, ge=0.0, le=1.0, description="Detections scoring at least this match tracks first."
    )
    low_thresh: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description=(
            "Detections between this and high_thresh only continue existing tracks. The model's "
            "conf still applies first: lower conf to feed weaker boxes to the tracker."
        ),
    )
    new_track_thresh: float | None = Field(
        None, ge=0.0, le=1.0, description="Score to start a track. None: high_thresh."
    )
    match_iou: float = Field(
        0.2, gt=0.0, le=1.0, description="Least IoU of a high-score detection with its track."
    )
    min_hits: int = Field(
        3, ge=1, description="Consecutive frames before a track is confirmed and gets an id."
    )
    max_lost_s: float = Field(
        1.5, gt=0.0, description="Seconds a track may go unseen (occlusion) before it ends."
    )
    update_interval_s: float = Field(
        5.0,
        ge=0.0,
        description=(
            "Least seconds between 'update' events for a better score alone; zone and posture "
            "changes are published at once (they are debounced already)."
        ),
    )
    posture_min_s: float = Field(
        1.0, ge=0.0, description="Pose models: seconds a new posture must hold before it counts."
    )

    @model_validator(mode="after")
    def _ordered(self) -> TrackingConfig:
        if self.low_thresh > self.high_thresh:
            raise ValueError(
                f"low_thresh ({self.low_thresh}) must not be above high_thresh ({self.high_thresh})"
            )
        return self


Point = tuple[float, float]


def _check_points(points: list[Point], normalized: bool) -> list[Point]:
    for i, (x, y) in enumerate(points):
        if normalized and not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            raise ValueError(
                f"point {i} ({x:g}, {y:g}) is outside 0..1; normalized points are fractions of "
                "the frame's width and height (or set normalized: false for pixels)"
            )
        if not normalized and (x < 0 or y < 0):
            raise ValueError(f"point {i} ({x:g}, {y:g}) is outside the frame (negative pixels)")
    return points


class ZoneConfig(Strict):
    """A polygon on one camera; an object is in it when its box's bottom-centre is."""

    name: str = Field(min_length=1, description="Zone name, used in events and topics.")
    points: list[Point] = Field(description="Polygon corners [[x, y], ...], at least 3.")
    normalized: bool = Field(
        False, description="Points are fractions of the frame (0..1), not pixels."
    )
    labels: list[str] | None = Field(None, description="Only these labels. None: every label.")
    min_frames: int = Field(
        3, ge=1, description="Frames an object must be in (out) before it enters (leaves)."
    )

    @model_validator(mode="after")
    def _polygon(self) -> ZoneConfig:
        if len(self.points) < 3:
            raise ValueError(
                f"zone '{self.name}' has {len(self.points)} point(s); a polygon needs at least 3"
            )
        _check_points(self.points, self.normalized)
        return self


class LineConfig(Strict):
    """A directed segment on one camera with in/out counters.

    ``in`` is a crossing from the left of the segment (walking from its first point to its
    second, as seen on screen) to its right; ``out`` the reverse.
    """

    name: str = Field(min_length=1, description="Line name, used in events and topics.")
    points: list[Point] = Field(description="Two points [[x1, y1], [x2, y2]]: from, to.")
    normalized: bool = Field(
        False, description="Points are fractions of the frame (0..1), not pixels."
    )
    labels: list[str] | None = Field(None, description="Only these labels. None: every label.")
    min_frames: int = Field(
        2, ge=1, description="Frames on the other side before a crossing counts."
    )
    margin_px: float = Field(
        8.0, ge=0.0, description="Pixels either side of the line that count as neither side."
    )

    @model_validator(mode="after")
    def _segment(self) -> LineConfig:
        if len(self.points) != 2:
            raise ValueError(f"line '{self.name}' needs exactly 2 points, got {len(self.points)}")
        if self.points[0] == self.points[1]:
            raise ValueError(f"line '{self.name}' has two equal points")
        _check_points(self.points, self.normalized)
        return self


def check_unique(kind: str, names: list[str]) -> None:
    """Raise ValueError naming repeated ``names``."""
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{kind} names must be unique, repeated: {', '.join(dupes)}")
