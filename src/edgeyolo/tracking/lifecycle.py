"""Per-object records behind the lifecycle events, and posture with hysteresis.

A record is created when a track is confirmed and dropped when it is removed. What it
publishes (``snapshot``) follows Frigate's tracked-object events: id, label, first/last seen,
dwell seconds, current and ever-entered zones, best score, box, and posture for pose models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeyolo.sinks.derive import Posture


@dataclass(slots=True)
class PostureFilter:
    """A posture that changes only after the new one was seen for ``min_s`` seconds.

    ``unknown`` frames (too few keypoints) neither change the posture nor reset a pending
    change: a person half out of view keeps the posture they had.
    """

    min_s: float
    current: Posture = "unknown"
    _pending: Posture | None = None
    _since: float = 0.0

    def step(self, raw: Posture, t: float) -> bool:
        """Feed one frame's raw posture; True when ``current`` changed."""
        if raw == "unknown":
            return False
        if raw == self.current:
            self._pending = None
            return False
        if raw != self._pending:
            self._pending, self._since = raw, t
        if t - self._since >= self.min_s:
            self.current, self._pending = raw, None
            return True
        return False


@dataclass(slots=True)
class TrackRecord:
    """What is known about one confirmed track."""

    track_id: int
    class_id: int
    label: str
    first_seen: float
    last_seen: float
    box: tuple[float, float, float, float]
    score: float
    best_score: float
    zones: list[str] = field(default_factory=list)
    entered_zones: list[str] = field(default_factory=list)
    posture: PostureFilter | None = None
    published: dict[str, Any] | None = None  # the last snapshot sent (``before`` of the next)
    published_at: float = 0.0
    published_best: float = 0.0
    changes: set[str] = field(default_factory=set)

    def snapshot(self) -> dict[str, Any]:
        """The object as JSON-ready data (the ``before``/``after`` of lifecycle events)."""
        d: dict[str, Any] = {
            "id": self.track_id,
            "label": self.label,
            "class_id": self.class_id,
            "first_seen": round(self.first_seen, 6),
            "last_seen": round(self.last_seen, 6),
            "dwell_s": round(self.last_seen - self.first_seen, 3),
            "zones": list(self.zones),
            "entered_zones": list(self.entered_zones),
            "score": round(self.score, 4),
            "best_score": round(self.best_score, 4),
            "box": [round(v, 2) for v in self.box],
        }
        if self.posture is not None:
            d["posture"] = self.posture.current
        return d

    def enter(self, zone: str) -> None:
        self.zones.append(zone)
        if zone not in self.entered_zones:
            self.entered_zones.append(zone)
        self.changes.add("zones")

    def leave(self, zone: str) -> None:
        if zone in self.zones:
            self.zones.remove(zone)
            self.changes.add("zones")
