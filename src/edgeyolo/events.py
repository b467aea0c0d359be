"""Frozen, versioned event types: what the service tells the world (docs/events.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class Detection:
    """One detected object, in source-image pixels."""

    box: tuple[float, float, float, float]
    conf: float
    class_id: int
    label: str
    keypoints: tuple[tuple[float, float, float], ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "box": [round(v, 2) for v in self.box],
            "conf": round(self.conf, 4),
            "class_id": self.class_id,
            "label": self.label,
        }
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
            "detections": [d.to_dict() for d in self.detections],
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


Event = DetectionEvent | StatsEvent
