"""MQTT messages from tracked objects: lifecycle stream, zone occupancy, line counters, postures.

Pure derivation, no I/O: the MQTT sink feeds ``track``/``zone``/``line`` events in and
publishes what comes out (docs/mqtt.md):

* every object event goes to the camera's ``objects`` topic (an event stream);
* per zone and label a retained state ``{count, occupied}``, from one tracked model (a
  detection model reporting the label, else a pose model: as for counts);
* per line a retained state ``{in_count, out_count}`` (since the service started: Home
  Assistant's ``total_increasing`` takes the reset at a restart as a new cycle);
* for tracked pose models the pose event fires once per track and posture change (the
  tracker already held the posture for ``posture_min_s``), instead of on every change of the
  frame's posture counts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edgeyolo.events import SCHEMA_VERSION, LineEvent, TrackEvent, ZoneEvent
from edgeyolo.sinks.topics import Segments

if TYPE_CHECKING:
    from collections.abc import Sequence

    from edgeyolo.sinks.topics import Layout, Route, Topics


@dataclass(frozen=True, slots=True)
class CameraObjects:
    """What one camera tracks: its zones (with their label filter), lines, tracked models."""

    camera: str
    zones: tuple[tuple[str, tuple[str, ...] | None], ...] = ()
    lines: tuple[tuple[str, tuple[str, ...] | None], ...] = ()
    tracked: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Out:
    """One message to publish: ``state`` (retained, latest wins, keyed) or ``event``."""

    kind: str  # "state" | "event"
    topic: str
    payload: dict[str, Any]
    key: Any = None  # states: what must change for a new message


@dataclass(slots=True)
class _Camera:
    zones: dict[tuple[str, str], str] = field(default_factory=dict)  # (zone, label) -> model
    lines: dict[str, str] = field(default_factory=dict)  # line -> model
    postures: dict[tuple[str, int], str] = field(default_factory=dict)  # (model, id) -> posture


def _header(kind: str, camera: str, model: str, timestamp: float, seq: int) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "type": kind,
        "timestamp": round(timestamp, 6),
        "camera": camera,
        "model": model,
        "seq": seq,
    }


class ObjectMessages:
    """Turns object events into MQTT messages; knows which model drives which state."""

    def __init__(
        self,
        cameras: Sequence[CameraObjects],
        routes: Sequence[Route],
        count_labels: Sequence[str],
        topics: Topics,
        layout: Layout,
    ) -> None:
        self._topics, self._layout = topics, layout
        self._zone_seg: dict[str, Segments] = {}
        self._line_seg: dict[str, Segments] = {}
        self._cams: dict[str, _Camera] = {}
        self.zone_entities: dict[str, list[tuple[str, str]]] = {}  # camera -> (zone, label)
        self.line_entities: dict[str, list[str]] = {}
        for c in cameras:
            state = self._cams[c.camera] = _Camera()
            tracked = [r for r in routes if r.camera == c.camera and r.model in c.tracked]
            # Detection models first: they see cars and balls too; pose models see people.
            tracked.sort(key=lambda r: r.task != "detect")
            for zone, labels in c.zones:
                wanted = labels if labels is not None else tuple(count_labels)
                for label in wanted:
                    model = next((r.model for r in tracked if label in r.labels), None)
                    if model is not None:
                        state.zones[(zone, label)] = model
                        self.zone_entities.setdefault(c.camera, []).append((zone, label))
            for line, labels in c.lines:
                model = next(
                    (r.model for r in tracked if labels is None or set(labels) & set(r.labels)),
                    None,
                )
                if model is not None:
                    state.lines[line] = model
                    self.line_entities.setdefault(c.camera, []).append(line)

    def zone_segment(self, camera: str, zone: str) -> str:
        """The topic segment of ``zone`` (unique among the camera's zones)."""
        return self._zone_seg.setdefault(camera, Segments())(zone)

    def line_segment(self, camera: str, line: str) -> str:
        """The topic segment of ``line`` (unique among the camera's lines)."""
        return self._line_seg.setdefault(camera, Segments())(line)

    def initial(self) -> list[Out]:
        """Zero states for every zone and line, so entities have a value before any event."""
        now = time.time()
        out = []
        for cam, state in self._cams.items():
            for (zone, label), model in state.zones.items():
                out.append(self._zone_state(cam, model, zone, label, 0, now, 0))
            for line, model in state.lines.items():
                out.append(self._line_state(cam, model, line, 0, 0, now, 0))
        return out

    def on_event(self, ev: TrackEvent | ZoneEvent | LineEvent) -> list[Out]:
        """The messages of one object event."""
        out = [Out("event", self._topics.objects(self._layout.camera(ev.camera)), ev.to_dict())]
        state = self._cams.get(ev.camera)
        if state is None:
            return out
        if isinstance(ev, ZoneEvent):
            if state.zones.get((ev.zone, ev.label)) == ev.model:
                out.append(
                    self._zone_state(
                        ev.camera, ev.model, ev.zone, ev.label, ev.count, ev.timestamp, ev.seq
                    )
                )
        elif isinstance(ev, LineEvent):
            if state.lines.get(ev.line) == ev.model:
                out.append(
                    self._line_state(
                        ev.camera,
                        ev.model,
                        ev.line,
                        ev.in_count,
                        ev.out_count,
                        ev.timestamp,
                        ev.seq,
                    )
                )
        elif "posture" in ev.after:
            pose = self._posture(state, ev)
            if pose is not None:
                out.append(pose)
        return out

    def _zone_state(
        self, cam: str, model: str, zone: str, label: str, count: int, ts: float, seq: int
    ) -> Out:
        payload = _header("zone_occupancy", cam, model, ts, seq) | {
            "zone": zone,
            "label": label,
            "occupied": count > 0,
            "count": count,
        }
        seg = self._layout.camera(cam), self.zone_segment(cam, zone), self._layout.label(label)
        return Out("state", self._topics.zone(*seg), payload, key=count)

    def _line_state(
        self, cam: str, model: str, line: str, n_in: int, n_out: int, ts: float, seq: int
    ) -> Out:
        payload = _header("line_count", cam, model, ts, seq) | {
            "line": line,
            "in_count": n_in,
            "out_count": n_out,
        }
        topic = self._topics.line(self._layout.camera(cam), self.line_segment(cam, line))
        return Out("state", topic, payload, key=(n_in, n_out))

    def _posture(self, state: _Camera, ev: TrackEvent) -> Out | None:
        key = (ev.model, ev.after["id"])
        if ev.kind == "end":
            state.postures.pop(key, None)
            return None
        posture = ev.after["posture"]
        if posture == "unknown" or "posture" not in ev.changes:
            return None
        state.postures[key] = posture
        counts: dict[str, int] = {}
        for (model, _id), p in state.postures.items():
            if model == ev.model:
                counts[p] = counts.get(p, 0) + 1
        a = ev.after
        person = {
            "box": a["box"],
            "conf": a["score"],
            "class_id": a["class_id"],
            "label": a["label"],
            "track_id": a["id"],
            "posture": posture,
        }
        payload = _header("pose", ev.camera, ev.model, ev.timestamp, ev.seq) | {
            "event_type": posture,
            "track_id": a["id"],
            "persons": sum(counts.values()),
            "postures": counts,
            "people": [person],
        }
        topic = self._topics.pose(self._layout.camera(ev.camera), self._layout.model(ev.model))
        return Out("event", topic, payload)
