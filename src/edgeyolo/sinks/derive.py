"""What subscribers want from per-frame detections: counts, occupancy, pose summaries.

Pure functions and small data, no I/O: the MQTT sink turns these into state messages that
are published on change (plus a heartbeat) rather than on every frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from edgeyolo.events import SCHEMA_VERSION

if TYPE_CHECKING:
    from collections.abc import Sequence

    from edgeyolo.events import Detection, DetectionEvent

Posture = Literal["standing", "sitting", "lying", "unknown"]

# Event types of the pose event entity, most notable first: a pose event's type is the most
# notable posture seen in the frame, so an automation can trigger on "lying".
POSE_EVENT_TYPES: tuple[str, ...] = ("lying", "sitting", "standing", "unknown", "none")
PRESENCE_EVENT_TYPES: tuple[str, ...] = ("present", "none")

# COCO-17 keypoint indices.
_L_SHOULDER, _R_SHOULDER, _L_HIP, _R_HIP, _L_KNEE, _R_KNEE = 5, 6, 11, 12, 13, 14
_MIN_KPT_CONF = 0.3


def _mid(kpts: Sequence[tuple[float, float, float]], a: int, b: int) -> tuple[float, float] | None:
    """Midpoint of two keypoints, or the one that is visible, or None."""
    seen = [(kpts[i][0], kpts[i][1]) for i in (a, b) if kpts[i][2] >= _MIN_KPT_CONF]
    if not seen:
        return None
    return (sum(p[0] for p in seen) / len(seen), sum(p[1] for p in seen) / len(seen))


def posture(  # noqa: PLR0911 - one return per rule reads clearer than a flag
    keypoints: Sequence[tuple[float, float, float]] | None,
    box: tuple[float, float, float, float],
) -> Posture:
    """A coarse posture from COCO-17 keypoints (image y grows downwards).

    Lying: the torso (mid-shoulder to mid-hip) is closer to horizontal than 45 degrees, or,
    without a visible torso, the box is much wider than tall. Sitting: the thighs (hip to
    knee) are closer to horizontal than 45 degrees while the torso is upright. Standing:
    upright torso and thighs. Unknown: not enough visible keypoints to tell.
    A heuristic for automations ("someone is lying on the floor"), not a classifier.
    """
    x1, y1, x2, y2 = box
    w, h = max(x2 - x1, 1e-6), max(y2 - y1, 1e-6)
    if keypoints is None or len(keypoints) < 17:
        return "lying" if w > 1.5 * h else "unknown"
    shoulder = _mid(keypoints, _L_SHOULDER, _R_SHOULDER)
    hip = _mid(keypoints, _L_HIP, _R_HIP)
    if shoulder is None or hip is None:
        return "lying" if w > 1.5 * h else "unknown"
    tdx, tdy = hip[0] - shoulder[0], hip[1] - shoulder[1]
    if math.hypot(tdx, tdy) < 1e-6:
        return "unknown"
    if abs(tdx) > abs(tdy):
        return "lying"
    knee = _mid(keypoints, _L_KNEE, _R_KNEE)
    if knee is None:
        return "unknown"
    kdx, kdy = knee[0] - hip[0], knee[1] - hip[1]
    if abs(kdx) > abs(kdy) or kdy < 0:
        return "sitting"
    return "standing"


def header(event: DetectionEvent, kind: str) -> dict[str, Any]:
    """The fields every derived payload starts with."""
    return {
        "schema_version": SCHEMA_VERSION,
        "type": kind,
        "timestamp": round(event.timestamp, 6),
        "camera": event.camera,
        "model": event.model,
        "seq": event.seq,
    }


def count_label(detections: Sequence[Detection], label: str) -> int:
    """How many of ``detections`` carry ``label``."""
    return sum(1 for d in detections if d.label == label)


@dataclass(frozen=True, slots=True)
class PoseSummary:
    """One frame of a pose model, reduced to what an automation needs."""

    event_type: str
    persons: int
    postures: dict[str, int]
    payload: dict[str, Any]

    @property
    def key(self) -> tuple[object, ...]:
        """What must change for a new pose event to be published."""
        return (self.event_type, self.persons, tuple(sorted(self.postures.items())))


def pose_summary(event: DetectionEvent, *, with_posture: bool, label: str) -> PoseSummary:
    """Summarize a pose model's frame: people, their keypoints and (optionally) postures."""
    people = [d for d in event.detections if d.keypoints is not None or d.label == label]
    postures: dict[str, int] = {}
    out_people = []
    for d in people:
        item = d.to_dict()
        if with_posture:
            p = posture(d.keypoints, d.box)
            item["posture"] = p
            postures[p] = postures.get(p, 0) + 1
        out_people.append(item)
    if with_posture:
        event_type = next((t for t in POSE_EVENT_TYPES if postures.get(t)), "none")
    else:
        event_type = "present" if people else "none"
    payload = header(event, "pose")
    payload.update(
        {
            "event_type": event_type,
            "persons": len(people),
            "postures": postures,
            "people": out_people,
        }
    )
    return PoseSummary(event_type, len(people), postures, payload)
