"""Frozen, versioned event types: what the service tells the world (docs/events.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

# 2: detections of tracked models carry ``track_id``; new "track", "zone" and "line" events.
SCHEMA_VERSION = 2


@dataclass(frozen=True, slots=True)
class Detection:
    """One detected object, in source-image pixels."""

    box: tuple[float, float, float, float]
    conf: float
    class_id: int
    label: str
    keypoints: tuple[tuple[float, float, float], ...] | None = None
    track_id: int | None = None

    def to_dict(self, *, tracked: bool = False) -> dict[str, Any]:
        """JSON-ready dict; ``tracked``: the model is tracked, so ``track_id`` is always there."""
        d: dict[str, Any] = {
            "box": [round(v, 2) for v in self.box],
            "conf": round(self.conf, 4),
            "class_id": self.class_id,
            "label": self.label,
        }
        if tracked or self.track_id is not None:
            d["track_id"] = self.track_id
        if self.keypoints is not None:
            d["keypoints"] = [[round(x, 2), round(y, 2), round(c, 4)] for x, y, c in self.keypoints]
        return d


@dataclass(frozen=True, slots=True)
class DetectionEvent:
    """Everything one model saw in one frame of one camera."""

    camera: str
    model: str
    task: Literal["detect", "pose"]
    seq: int
    timestamp: float
    width: int
    height: int
    detections: tuple[Detection, ...]
    latency_ms: float | None = None
    tracked: bool = False  # the model is tracked: every detection carries track_id
    schema_version: int = SCHEMA_VERSION
    type: Literal["detections"] = "detections"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "type": self.type,
            "timestamp": round(self.timestamp, 6),
            "camera": self.camera,
            "model": self.model,
            "task": self.task,
            "seq": self.seq,
            "width": self.width,
            "height": self.height,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 3),
            "detections": [d.to_dict(tracked=self.tracked) for d in self.detections],
        }


@dataclass(frozen=True, slots=True)
class StatsEvent:
    """A periodic summary of one camera's pipeline."""

    camera: str
    timestamp: float
    fps: float
    frames: int
    dropped: int
    stages_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    type: Literal["stats"] = "stats"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "type": self.type,
            "timestamp": round(self.timestamp, 6),
            "camera": self.camera,
            "fps": round(self.fps, 2),
            "frames": self.frames,
            "dropped": self.dropped,
            "stages_ms": self.stages_ms,
        }


class _ObjectEvent(Protocol):
    @property
    def schema_version(self) -> int: ...
    @property
    def type(self) -> str: ...
    @property
    def timestamp(self) -> float: ...
    @property
    def camera(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def seq(self) -> int: ...


def _object_head(ev: _ObjectEvent) -> dict[str, Any]:
    """The fields every object event (track, zone, line) starts with, in their JSON order."""
    return {
        "schema_version": ev.schema_version,
        "type": ev.type,
        "timestamp": round(ev.timestamp, 6),
        "camera": ev.camera,
        "model": ev.model,
        "seq": ev.seq,
    }


@dataclass(frozen=True, slots=True)
class TrackEvent:
    """A tracked object's lifecycle: ``new`` (confirmed), ``update`` (changed), ``end`` (gone).

    ``before`` is the object as last published (None for ``new``), ``after`` as it is now;
    ``changes`` names what changed since ``before`` ("zones", "posture", "best_score").
    """

    camera: str
    model: str
    timestamp: float
    seq: int
    kind: Literal["new", "update", "end"]
    after: dict[str, Any]
    before: dict[str, Any] | None = None
    changes: tuple[str, ...] = ()
    schema_version: int = SCHEMA_VERSION
    type: Literal["track"] = "track"

    def to_dict(self) -> dict[str, Any]:
        return {
            **_object_head(self),
            "kind": self.kind,
            "track_id": self.after["id"],
            "label": self.after["label"],
            "changes": list(self.changes),
            "before": self.before,
            "after": self.after,
        }


@dataclass(frozen=True, slots=True)
class ZoneEvent:
    """A tracked object entered or left a zone; ``count``: objects of its label now inside."""

    camera: str
    model: str
    timestamp: float
    seq: int
    zone: str
    label: str
    track_id: int
    action: Literal["enter", "leave"]
    count: int
    schema_version: int = SCHEMA_VERSION
    type: Literal["zone"] = "zone"

    def to_dict(self) -> dict[str, Any]:
        return {
            **_object_head(self),
            "zone": self.zone,
            "label": self.label,
            "track_id": self.track_id,
            "action": self.action,
            "count": self.count,
        }


@dataclass(frozen=True, slots=True)
class LineEvent:
    """A tracked object crossed a line; ``in_count``/``out_count``: totals since start."""

    camera: str
    model: str
    timestamp: float
    seq: int
    line: str
    label: str
    track_id: int
    direction: Literal["in", "out"]
    in_count: int
    out_count: int
    schema_version: int = SCHEMA_VERSION
    type: Literal["line"] = "line"

    def to_dict(self) -> dict[str, Any]:
        return {
            **_object_head(self),
            "line": self.line,
            "label": self.label,
            "track_id": self.track_id,
            "direction": self.direction,
            "in_count": self.in_count,
            "out_count": self.out_count,
        }


Event = DetectionEvent | StatsEvent | TrackEvent | ZoneEvent | LineEvent
