"""Home Assistant MQTT discovery, device-based: one retained config for the whole device.

Published on ``<discovery prefix>/device/<device_id>/config``. Root keys: ``dev`` (device),
``o`` (origin), ``cmps`` (components, each with ``p`` = platform and a ``unique_id``) and the
shared availability options, so every entity turns unavailable with the device. An empty
retained payload on the same topic removes the device and its entities.
Checked against the Home Assistant MQTT documentation and its discovery tests (docs/mqtt.md
lists what was verified). Long key names are used for everything but ``dev``/``o``/``cmps``/
``p``: abbreviations are optional, and the long names read better in a broker browser.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgeyolo import __version__
from edgeyolo.config.mqtt import sanitize_id
from edgeyolo.sinks.derive import POSE_EVENT_TYPES, PRESENCE_EVENT_TYPES
from edgeyolo.sinks.topics import Topics

# The pose event entity gets the summary as attributes, not every keypoint (Home Assistant
# keeps event attributes in its database; 17 keypoints per person would bloat it).
_POSE_TEMPLATE = (
    "{{ {'event_type': value_json.event_type, 'persons': value_json.persons, "
    "'postures': value_json.postures, 'seq': value_json.seq} | tojson }}"
)


@dataclass(slots=True)
class CameraEntities:
    """What one camera exposes to Home Assistant (segments already sanitized)."""

    camera: str
    segment: str
    counts: list[tuple[str, str]] = field(default_factory=list)  # (label, label segment)
    occupancy: bool = False
    pose_models: list[tuple[str, str]] = field(default_factory=list)  # (model, model segment)


def _component_id(*parts: str) -> str:
    return sanitize_id("_".join(parts))


def discovery_payload(
    topics: Topics,
    device_name: str,
    cameras: list[CameraEntities],
    *,
    posture: bool,
    qos: int = 1,
) -> dict[str, Any]:
    """The device discovery config for ``cameras``."""
    dev = topics.device_id
    cmps: dict[str, dict[str, Any]] = {}
    for cam in cameras:
        for label, label_seg in cam.counts:
            cid = _component_id(cam.segment, "count", label_seg)
            cmps[cid] = {
                "p": "sensor",
                "name": f"{cam.camera} {label} count",
                "unique_id": f"{dev}_{cid}",
                "state_topic": topics.count(cam.segment, label_seg),
                "value_template": "{{ value_json.count }}",
                "state_class": "measurement",
                "icon": "mdi:counter",
            }
        if cam.occupancy:
            cid = _component_id(cam.segment, "occupancy")
            cmps[cid] = {
                "p": "binary_sensor",
                "name": f"{cam.camera} occupancy",
                "unique_id": f"{dev}_{cid}",
                "device_class": "occupancy",
                "state_topic": topics.occupancy(cam.segment),
                "value_template": "{{ 'ON' if value_json.occupied else 'OFF' }}",
                "payload_on": "ON",
                "payload_off": "OFF",
            }
        for model, model_seg in cam.pose_models:
            cid = _component_id(cam.segment, model_seg, "pose")
            cmps[cid] = {
                "p": "event",
                "name": f"{cam.camera} {model} pose",
                "unique_id": f"{dev}_{cid}",
                "state_topic": topics.pose(cam.segment, model_seg),
                "event_types": list(POSE_EVENT_TYPES if posture else PRESENCE_EVENT_TYPES),
                "value_template": _POSE_TEMPLATE,
                "icon": "mdi:human",
            }
        for stat, template, unit, extra in (
            ("fps", "{{ value_json.fps }}", "fps", {}),
            (
                "latency",
                "{{ value_json.latency_ms }}",
                "ms",
                {"device_class": "duration", "suggested_display_precision": 1},
            ),
        ):
            cid = _component_id(cam.segment, stat)
            cmps[cid] = {
                "p": "sensor",
                "name": f"{cam.camera} {stat}",
                "unique_id": f"{dev}_{cid}",
                "state_topic": topics.stats(cam.segment),
                "value_template": template,
                "unit_of_measurement": unit,
                "state_class": "measurement",
                "entity_category": "diagnostic",
                **extra,
            }
    return {
        "dev": {
            "identifiers": [f"edgeyolo_{dev}"],
            "name": device_name,
            "manufacturer": "edgeyolo",
            "model": "edgeyolo",
            "sw_version": __version__,
        },
        "o": {"name": "edgeyolo", "sw_version": __version__},
        "availability_topic": topics.availability,
        "payload_available": "online",
        "payload_not_available": "offline",
        "qos": qos,
        "cmps": cmps,
    }
