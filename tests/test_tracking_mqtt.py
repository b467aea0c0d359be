"""Tracked objects end to end: tracker -> MqttSink -> a real mosquitto -> a real subscriber."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import numpy as np
import pytest

from edgeyolo.config import LineConfig, TrackingConfig, ZoneConfig
from edgeyolo.config.mqtt import MqttConfig
from edgeyolo.events import DetectionEvent
from edgeyolo.postprocess import Detections
from edgeyolo.runner import to_detections
from edgeyolo.sinks.mqtt import MqttSink
from edgeyolo.sinks.objects import CameraObjects
from edgeyolo.sinks.topics import Route
from edgeyolo.tracking.objects import ObjectTracker
from mosquitto import Collector, Mosquitto, validate

pytestmark = pytest.mark.mqtt

FPS = 15.0
ZONE = ZoneConfig(name="door", points=[(400, 200), (600, 200), (600, 500), (400, 500)])
LINE = LineConfig(name="gate", points=[(480, 520), (480, 100)])  # pointing up: in = rightwards
ROUTES = [
    Route("front", "det", "detect", ("person", "car")),
    Route("front", "pose", "pose", ("person",)),
]
OBJECTS = [
    CameraObjects(
        "front", zones=(("door", ("person",)),), lines=(("gate", None),), tracked=("det", "pose")
    )
]


def upright(x: float, y: float) -> list[tuple[float, float, float]]:
    """COCO-17 keypoints of a standing person with feet at (x, y)."""
    k = [(x, y - 90.0, 0.9)] * 17
    for i, (dx, dy) in {
        5: (-8, -70),
        6: (8, -70),
        11: (-6, -40),
        12: (6, -40),
        13: (-6, -20),
        14: (6, -20),
    }.items():
        k[i] = (x + dx, y + dy, 0.9)
    return k


def lying(x: float, y: float) -> list[tuple[float, float, float]]:
    """A person lying along x: shoulders and hips side by side."""
    k = [(x, y - 10.0, 0.9)] * 17
    for i, (dx, dy) in {
        5: (-40, -12),
        6: (-40, -8),
        11: (0, -12),
        12: (0, -8),
        13: (20, -12),
        14: (20, -8),
    }.items():
        k[i] = (x + dx, y + dy, 0.9)
    return k


def frame_dets(f: int) -> tuple[Detections, Detections]:
    """One walker crossing the door zone and the gate line (det), and one person standing
    then lying down at frame 30 (pose)."""
    x = 300.0 + 8 * f  # inside the zone for x in [400, 600): frames 13..37
    det = Detections(
        np.array([[x - 15, 320, x + 15, 400]], np.float32),
        np.array([0.9], np.float32),
        np.zeros(1, np.int32),
    )
    if f < 30:
        box, kp = [180.0, 300.0, 220.0, 400.0], upright(200, 400)
    else:
        box, kp = [150.0, 370.0, 250.0, 400.0], lying(200, 400)
    pose = Detections(
        np.array([box], np.float32),
        np.array([0.9], np.float32),
        np.zeros(1, np.int32),
        np.array([kp], np.float32),
    )
    return det, pose


def test_objects_zone_line_and_posture_over_mqtt(broker: Mosquitto) -> None:
    """Lifecycle, zone and line events on the objects topic; zone and line state retained;
    the HA entities exist; a tracked pose model fires one pose event per posture change."""
    pfx = f"test-{uuid.uuid4().hex[:8]}"
    base = f"{pfx}/box/front"
    cfg = MqttConfig.model_validate(
        {
            "url": broker.url,
            "prefix": pfx,
            "device_id": "box",
            "discovery": {"prefix": f"{pfx}-ha", "status_topic": f"{pfx}-ha/status"},
            "state_min_interval_s": 0.0,
            "count_labels": ["person"],
        }
    )
    tc = TrackingConfig(enabled=True, max_lost_s=0.5, posture_min_s=1.0)
    det_t = ObjectTracker("front", "det", ["person", "bike", "car"], tc, zones=[ZONE], lines=[LINE])
    pose_t = ObjectTracker("front", "pose", ["person"], tc, pose=True, zones=[ZONE], lines=[LINE])

    async def main() -> None:
        sink = MqttSink(cfg, ROUTES, objects=OBJECTS)
        async with Collector(broker.port, [f"{pfx}/#", f"{pfx}-ha/#"]) as col:
            await sink.start()
            for f in range(80):
                det, pose = (
                    frame_dets(f) if f < 60 else (Detections.empty(), Detections.empty((17, 3)))
                )
                ts = 1000.0 + f / FPS
                for model, task, tr, raw in (
                    ("det", "detect", det_t, det),
                    ("pose", "pose", pose_t, pose),
                ):
                    ids, events = tr.step(raw, ts, f, 960, 540)
                    d = Detections(raw.boxes, raw.scores, raw.class_ids, raw.keypoints, ids)
                    labels = tr.labels
                    await sink.emit(
                        DetectionEvent(
                            "front",
                            model,
                            task,
                            f,
                            ts,
                            960,
                            540,
                            to_detections(d, labels),
                            1.0,
                            tracked=True,
                        )  # type: ignore[arg-type]
                    )
                    for ev in events:
                        await sink.emit(ev)
                await asyncio.sleep(0.02)
            await col.wait_for(
                lambda c: any(
                    m.json().get("kind") == "end" and m.json()["model"] == "det"
                    for m in c.on(f"{base}/objects")
                ),
                what="the walker's end event",
            )
            await sink.close()
        objs = [m.json() for m in col.on(f"{base}/objects")]
        for o in objs:
            validate(o, o["type"])
        det_objs = [
            (o["type"], o.get("kind") or o.get("action") or o.get("direction"))
            for o in objs
            if o["model"] == "det"
        ]
        assert det_objs == [
            ("track", "new"),
            ("zone", "enter"),
            ("track", "update"),
            ("line", "in"),
            ("zone", "leave"),
            ("track", "update"),
            ("track", "end"),
        ]
        zone = [m.json() for m in col.on(f"{base}/zone/door/person")]
        for z in zone:
            validate(z, "zone_occupancy")
        assert [z["count"] for z in zone] == [0, 1, 0]
        assert all(m.retain is False for m in col.on(f"{base}/zone/door/person"))  # live
        line = [m.json() for m in col.on(f"{base}/line/gate")]
        for ln in line:
            validate(ln, "line_count")
        assert [(ln["in_count"], ln["out_count"]) for ln in line] == [(0, 0), (1, 0)]
        # Pose events: one per posture change of the tracked person (standing, then lying).
        poses = [m.json() for m in col.on(f"{base}/pose/pose")]
        for p in poses:
            validate(p, "pose")
        assert [(p["event_type"], p["track_id"]) for p in poses] == [("standing", 1), ("lying", 1)]
        # Discovery: the camera device has the zone and line entities, on those topics.
        cmps: dict[str, Any] = col.last(f"{pfx}-ha/device/box_front/config").json()["cmps"]
        assert cmps["zone_door_person_occupancy"]["state_topic"] == f"{base}/zone/door/person"
        assert cmps["zone_door_person_count"]["p"] == "sensor"
        for d in ("in", "out"):
            c = cmps[f"line_gate_{d}"]
            assert (c["state_topic"], c["state_class"]) == (f"{base}/line/gate", "total_increasing")
        # Retained: a late subscriber gets the last zone and line state.
        async with Collector(broker.port, [f"{base}/zone/#", f"{base}/line/#"]) as late:
            await late.wait_for(lambda c: len(c.messages) >= 2, what="retained zone and line state")
            assert all(m.retain for m in late.messages)
            assert late.last(f"{base}/line/gate").json()["in_count"] == 1

    asyncio.run(asyncio.wait_for(main(), 60))
