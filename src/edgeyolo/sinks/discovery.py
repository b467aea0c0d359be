"""Home Assistant MQTT discovery, device-based: a service device and one device per camera.

Home Assistant assigns areas per device, so every camera is its own device
(``<discovery prefix>/device/<device_id>_<camera id>/config``), linked with ``via_device`` to
the service's device (``<discovery prefix>/device/<device_id>/config``, the topic the single
device of earlier versions used). The service device holds one entity, a connectivity sensor
on the availability topic; the camera devices hold the counts, occupancy, pose events and
diagnostics and share the availability, so they turn unavailable with the service.

Root keys: ``dev`` (device), ``o`` (origin), ``cmps`` (components, each with ``p`` =
platform, ``unique_id`` and its own ``qos``: Home Assistant 2025.4 ignored a root ``qos``).
An empty retained payload on a topic removes that device and its entities. Long key names
are used for everything but ``dev``/``o``/``cmps``/``p``: abbreviations are optional, and the
long names read better in a broker browser. docs/mqtt.md shows a payload and what was checked
against a running Home Assistant (tests/test_ha_real.py).

Ids: every unique id starts with ``edgeyolo_<device_id>_``; camera, model and label names
become ids with :func:`ha_ids` (ASCII-folded, a short hash of the real name where two would
otherwise be the same), so they are unique and stay the same across restarts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edgeyolo import __version__
from edgeyolo.config.names import ha_ids
from edgeyolo.sinks.derive import POSE_EVENT_TYPES, PRESENCE_EVENT_TYPES

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from edgeyolo.sinks.topics import Topics

# The pose event entity gets the summary as attributes, not every keypoint (Home Assistant
# keeps event attributes in its database; 17 keypoints per person would bloat it).
_POSE_TEMPLATE = (
    "{{ {'event_type': value_json.event_type, 'persons': value_json.persons, "
    "'postures': value_json.postures, 'seq': value_json.seq} | tojson }}"
)
MANUFACTURER = "edgeyolo"
SERVICE_MODEL = "YOLO edge service"
CAMERA_MODEL = "camera pipeline"


@dataclass(slots=True)
class CameraEntities:
    """What one camera exposes to Home Assistant (segments already sanitized)."""

    camera: str
    segment: str
    counts: list[tuple[str, str]] = field(default_factory=list)  # (label, label segment)
    occupancy: bool = False
    pose_models: list[tuple[str, str]] = field(default_factory=list)  # (model, model segment)
    # Tracked objects: (zone, zone segment, label, label segment), (line, line segment).
    zones: list[tuple[str, str, str, str]] = field(default_factory=list)
    lines: list[tuple[str, str]] = field(default_factory=list)
    snapshots: list[tuple[str, str]] = field(default_factory=list)  # (label, label segment)


@dataclass(frozen=True, slots=True)
class DiscoveryOptions:
    """Per-kind QoS, posture, and what the devices link to."""

    posture: bool = True
    qos_state: int = 1
    qos_pose: int = 1
    qos_stats: int = 0
    configuration_url: str | None = None


def service_identifier(topics: Topics) -> str:
    """The service device's identifier (the same as the single device of earlier versions)."""
    return f"edgeyolo_{topics.device_id}"


def camera_topic(topics: Topics, camera_id: str) -> str:
    """Discovery topic of one camera's device."""
    return f"{topics.discovery_prefix}/device/{topics.device_id}_{camera_id}/config"


def camera_topics(topics: Topics, cameras: Iterable[str]) -> list[str]:
    """Discovery topics of the devices of ``cameras`` (what ``remove-discovery`` clears)."""
    return [camera_topic(topics, cid) for cid in ha_ids(cameras).values()]


def linked_to(topics: Topics) -> Callable[[bytes], bool]:
    """A test of a retained discovery payload: is it a camera device of this service?"""
    parent = service_identifier(topics)

    def accept(payload: bytes) -> bool:
        try:
            dev = json.loads(payload).get("dev")
        except (ValueError, AttributeError):
            return False
        return isinstance(dev, dict) and dev.get("via_device") == parent

    return accept


def _pose_name(model: str) -> str:
    # "pose-fp32" stays "pose-fp32"; "yolo11n" becomes "yolo11n pose".
    return model if "pose" in model.lower() else f"{model} pose"


def _count_unit(label: str) -> str:
    return "persons" if label == "person" else "objects"


def _origin() -> dict[str, Any]:
    return {"name": "edgeyolo", "sw_version": __version__}


def _service_payload(topics: Topics, device_name: str, options: DiscoveryOptions) -> dict[str, Any]:
    dev: dict[str, Any] = {
        "identifiers": [service_identifier(topics)],
        "name": device_name,
        "manufacturer": MANUFACTURER,
        "model": SERVICE_MODEL,
        "sw_version": __version__,
    }
    if options.configuration_url:
        dev["configuration_url"] = options.configuration_url
    # No availability here: the sensor itself shows whether the service is connected.
    return {
        "dev": dev,
        "o": _origin(),
        "cmps": {
            "status": {
                "p": "binary_sensor",
                "name": "status",
                "unique_id": f"edgeyolo_{topics.device_id}_status",
                "device_class": "connectivity",
                "entity_category": "diagnostic",
                "state_topic": topics.availability,
                "payload_on": "online",
                "payload_off": "offline",
                "qos": 1,
            }
        },
    }


def _camera_components(
    topics: Topics, cam: CameraEntities, uid: str, options: DiscoveryOptions
) -> dict[str, dict[str, Any]]:
    cmps: dict[str, dict[str, Any]] = {}
    for label, label_id in ha_ids(label for label, _s in cam.counts).items():
        seg = dict(cam.counts)[label]
        cmps[f"count_{label_id}"] = {
            "p": "sensor",
            "name": f"{label} count",
            "unique_id": f"{uid}_count_{label_id}",
            "state_topic": topics.count(cam.segment, seg),
            "value_template": "{{ value_json.count }}",
            "unit_of_measurement": _count_unit(label),
            "state_class": "measurement",
            "icon": "mdi:counter",
            "qos": options.qos_state,
        }
    if cam.occupancy:
        cmps["occupancy"] = {
            "p": "binary_sensor",
            "name": "occupancy",
            "unique_id": f"{uid}_occupancy",
            "device_class": "occupancy",
            "state_topic": topics.occupancy(cam.segment),
            "value_template": "{{ 'ON' if value_json.occupied else 'OFF' }}",
            "payload_on": "ON",
            "payload_off": "OFF",
            "qos": options.qos_state,
        }
    for model, model_id in ha_ids(m for m, _s in cam.pose_models).items():
        cmps[f"pose_{model_id}"] = {
            "p": "event",
            "name": _pose_name(model),
            "unique_id": f"{uid}_pose_{model_id}",
            "state_topic": topics.pose(cam.segment, dict(cam.pose_models)[model]),
            "event_types": list(POSE_EVENT_TYPES if options.posture else PRESENCE_EVENT_TYPES),
            "value_template": _POSE_TEMPLATE,
            "icon": "mdi:human",
            "qos": options.qos_pose,
        }
    cmps.update(_object_components(topics, cam, uid, options))
    for label, label_id in ha_ids(label for label, _s in cam.snapshots).items():
        # Raw JPEG bytes on the topic (no base64): Home Assistant's MQTT image platform.
        cmps[f"snapshot_{label_id}"] = {
            "p": "image",
            "name": f"{label} snapshot",
            "unique_id": f"{uid}_snapshot_{label_id}",
            "image_topic": topics.snapshot(cam.segment, dict(cam.snapshots)[label]),
            "content_type": "image/jpeg",
            "qos": options.qos_state,
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
        cmps[stat] = {
            "p": "sensor",
            "name": stat,
            "unique_id": f"{uid}_{stat}",
            "state_topic": topics.stats(cam.segment),
            "value_template": template,
            "unit_of_measurement": unit,
            "state_class": "measurement",
            "entity_category": "diagnostic",
            "qos": options.qos_stats,
            **extra,
        }
    return cmps


def _object_components(
    topics: Topics, cam: CameraEntities, uid: str, options: DiscoveryOptions
) -> dict[str, dict[str, Any]]:
    """Zone occupancy and count per zone and label; in and out counters per line."""
    cmps: dict[str, dict[str, Any]] = {}
    zone_ids = ha_ids(dict.fromkeys(z for z, _zs, _l, _ls in cam.zones))
    label_ids = ha_ids(dict.fromkeys(lb for _z, _zs, lb, _ls in cam.zones))
    for zone, zone_seg, label, label_seg in cam.zones:
        cid = f"zone_{zone_ids[zone]}_{label_ids[label]}"
        topic = topics.zone(cam.segment, zone_seg, label_seg)
        cmps[f"{cid}_occupancy"] = {
            "p": "binary_sensor",
            "name": f"{zone} {label} occupancy",
            "unique_id": f"{uid}_{cid}_occupancy",
            "device_class": "occupancy",
            "state_topic": topic,
            "value_template": "{{ 'ON' if value_json.occupied else 'OFF' }}",
            "payload_on": "ON",
            "payload_off": "OFF",
            "qos": options.qos_state,
        }
        cmps[f"{cid}_count"] = {
            "p": "sensor",
            "name": f"{zone} {label} count",
            "unique_id": f"{uid}_{cid}_count",
            "state_topic": topic,
            "value_template": "{{ value_json.count }}",
            "unit_of_measurement": _count_unit(label),
            "state_class": "measurement",
            "icon": "mdi:counter",
            "qos": options.qos_state,
        }
    line_ids = ha_ids(line for line, _s in cam.lines)
    for line, line_seg in cam.lines:
        for direction in ("in", "out"):
            cid = f"line_{line_ids[line]}_{direction}"
            cmps[cid] = {
                "p": "sensor",
                "name": f"{line} {direction}",
                "unique_id": f"{uid}_{cid}",
                "state_topic": topics.line(cam.segment, line_seg),
                "value_template": f"{{{{ value_json.{direction}_count }}}}",
                "unit_of_measurement": "crossings",
                # Counts restart at 0 with the service: total_increasing takes that as a reset.
                "state_class": "total_increasing",
                "icon": "mdi:transfer-right" if direction == "in" else "mdi:transfer-left",
                "qos": options.qos_state,
            }
    return cmps


def discovery_configs(
    topics: Topics,
    device_name: str,
    cameras: list[CameraEntities],
    options: DiscoveryOptions | None = None,
) -> dict[str, dict[str, Any]]:
    """Discovery topic -> retained payload: the service device first, then each camera's."""
    options = options or DiscoveryOptions()
    dev = topics.device_id
    out = {topics.discovery: _service_payload(topics, device_name, options)}
    cam_ids = ha_ids(c.camera for c in cameras)
    for cam in cameras:
        cid = cam_ids[cam.camera]
        uid = f"edgeyolo_{dev}_{cid}"
        device: dict[str, Any] = {
            "identifiers": [uid],
            "name": cam.camera,
            "manufacturer": MANUFACTURER,
            "model": CAMERA_MODEL,
            "sw_version": __version__,
            "via_device": service_identifier(topics),
        }
        if options.configuration_url:
            device["configuration_url"] = options.configuration_url
        out[camera_topic(topics, cid)] = {
            "dev": device,
            "o": _origin(),
            "availability_topic": topics.availability,
            "payload_available": "online",
            "payload_not_available": "offline",
            "qos": options.qos_state,  # also per component: see the module docstring
            "cmps": _camera_components(topics, cam, uid, options),
        }
    return out


def configuration_url(host: str, port: int, hostname: str) -> str | None:
    """The HTTP server's url for Home Assistant's "visit" link, or None when it listens on
    loopback only (or on a port chosen at start) and so is of no use from another machine."""
    if port == 0 or host in {"localhost", "::1"} or host.startswith("127."):
        return None
    shown = hostname if host in {"0.0.0.0", "::", ""} else host  # noqa: S104 - compared, not bound
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"
