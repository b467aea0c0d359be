"""MQTT topic layout, the sanitizing of names that go into topics, and the topology.

Camera and model names come from the config file, labels from model metadata: none of them
may smuggle an MQTT wildcard (``+``, ``#``), a level separator (``/``) or NUL into a topic,
nor start with ``$`` (reserved for broker topics such as ``$SYS``). Layout (docs/mqtt.md)::

    <prefix>/<device>/availability                   online / offline (retained, last will)
    <prefix>/<device>/<camera>/count/<label>         count of one label (state, retained)
    <prefix>/<device>/<camera>/occupancy             someone there or not (state, retained)
    <prefix>/<device>/<camera>/stats                 fps, stage latencies, drops (retained)
    <prefix>/<device>/<camera>/snapshot/<label>      best picture of the label (JPEG, retained)
    <prefix>/<device>/<camera>/<model>/detections    every frame's detections (stream)
    <prefix>/<device>/<camera>/<model>/pose          pose events (on change)
    <prefix>/<device>/<camera>/objects               tracked objects: lifecycle, zone, line events
    <prefix>/<device>/<camera>/zone/<zone>/<label>   objects of a label in a zone (state, retained)
    <prefix>/<device>/<camera>/line/<line>           in/out crossings of a line (state, retained)
    <discovery prefix>/device/<device>/config        Home Assistant device discovery

The topology (:class:`Route`: which model runs on which camera, with which labels) decides
which count, occupancy and pose topics exist; :class:`Layout` works that out once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from edgeyolo.config.mqtt import MqttConfig

# Segments directly under a camera that a model name must not shadow.
RESERVED_UNDER_CAMERA = frozenset(
    {"count", "occupancy", "stats", "objects", "zone", "line", "snapshot"}
)

_UNSAFE = re.compile(r"[+#/\x00-\x1f\x7f\s]+")


def sanitize_segment(name: str) -> str:
    """``name`` as one safe topic level: wildcards, '/', NUL, controls and spaces become '_'."""
    seg = _UNSAFE.sub("_", name) or "_"
    if seg.startswith("$"):
        seg = "_" + seg[1:]
    return seg


def unique_segments(names: Iterable[str], reserved: frozenset[str] = frozenset()) -> dict[str, str]:
    """Map each distinct name to a sanitized segment, distinct from the others and ``reserved``.

    Names that sanitize alike ('a/b' and 'a+b') get '_2', '_3'... in the order given, so the
    mapping is stable for a given config.
    """
    out: dict[str, str] = {}
    taken = set(reserved)
    for name in names:
        if name in out:
            continue
        base = sanitize_segment(name)
        seg, n = base, 1
        while seg in taken:
            n += 1
            seg = f"{base}_{n}"
        taken.add(seg)
        out[name] = seg
    return out


@dataclass(frozen=True, slots=True)
class Topics:
    """Every topic the sink publishes or subscribes to, from already sanitized segments."""

    prefix: str
    device_id: str
    discovery_prefix: str = "homeassistant"

    @classmethod
    def for_config(cls, config: MqttConfig) -> Topics:
        """The topics of the device ``config`` describes."""
        return cls(config.prefix, config.resolved_device_id(), config.discovery.prefix)

    @property
    def base(self) -> str:
        """``<prefix>/<device>``: everything of this device lives under it."""
        return f"{self.prefix}/{self.device_id}"

    @property
    def availability(self) -> str:
        """Retained 'online' / 'offline'; the last will sets 'offline'."""
        return f"{self.base}/availability"

    @property
    def discovery(self) -> str:
        """Home Assistant device-based discovery config."""
        return f"{self.discovery_prefix}/device/{self.device_id}/config"

    def count(self, camera: str, label: str) -> str:
        """Count of ``label`` on ``camera`` (state)."""
        return f"{self.base}/{camera}/count/{label}"

    def occupancy(self, camera: str) -> str:
        """Occupancy of ``camera`` (state)."""
        return f"{self.base}/{camera}/occupancy"

    def stats(self, camera: str) -> str:
        """Pipeline statistics of ``camera``."""
        return f"{self.base}/{camera}/stats"

    def snapshot(self, camera: str, label: str) -> str:
        """Best picture of ``label`` on ``camera``: raw JPEG bytes, retained."""
        return f"{self.base}/{camera}/snapshot/{label}"

    def detections(self, camera: str, model: str) -> str:
        """Per-frame stream of ``model`` on ``camera``."""
        return f"{self.base}/{camera}/{model}/detections"

    def pose(self, camera: str, model: str) -> str:
        """Pose events of ``model`` on ``camera``."""
        return f"{self.base}/{camera}/{model}/pose"

    def objects(self, camera: str) -> str:
        """Tracked-object events of ``camera`` (lifecycle, zone, line)."""
        return f"{self.base}/{camera}/objects"

    def zone(self, camera: str, zone: str, label: str) -> str:
        """Objects of ``label`` in ``zone`` of ``camera`` (state)."""
        return f"{self.base}/{camera}/zone/{zone}/{label}"

    def line(self, camera: str, line: str) -> str:
        """Crossings of ``line`` of ``camera`` (state)."""
        return f"{self.base}/{camera}/line/{line}"


@dataclass(frozen=True, slots=True)
class Route:
    """One model running on one camera: the sink will see its events."""

    camera: str
    model: str
    task: str  # "detect" or "pose"
    labels: tuple[str, ...]  # the labels the model reports (after any class filter)


class Segments:
    """Names to unique topic segments, assigned on first use (stable for a given order).

    Like :func:`unique_segments`, but a name seen only later (an event from a camera not in
    the topology) still gets a segment distinct from the others.
    """

    def __init__(self, reserved: frozenset[str] = frozenset()) -> None:
        self._reserved = reserved
        self._table: dict[str, str] = {}

    def __call__(self, name: str) -> str:
        seg = self._table.get(name)
        if seg is None:
            base = sanitize_segment(name)
            taken = set(self._table.values()) | self._reserved
            seg, n = base, 1
            while seg in taken:
                n += 1
                seg = f"{base}_{n}"
            self._table[name] = seg
        return seg


class Layout:
    """What a topology publishes: segments for every name, and which model counts what.

    For each camera and each label in ``count_labels`` (and ``occupancy_label``), a
    detection model that knows the label is the counter; a pose model counts it (people)
    only when no detection model on that camera knows it.
    """

    def __init__(
        self, routes: Sequence[Route], count_labels: Sequence[str], occupancy_label: str
    ) -> None:
        self.camera = Segments()
        self.model = Segments(RESERVED_UNDER_CAMERA)
        self.label = Segments()
        self._counts: dict[tuple[str, str], list[str]] = {}
        self._counted: dict[str, list[str]] = {}
        self._occupancy: dict[str, str] = {}
        self._pose: dict[str, list[str]] = {}
        by_cam: dict[str, list[Route]] = {}
        for r in routes:
            by_cam.setdefault(r.camera, []).append(r)
            self.camera(r.camera)
            self.model(r.model)
        self.cameras: list[str] = list(by_cam)
        wanted = list(dict.fromkeys([*count_labels, occupancy_label]))
        for camera, cam_routes in by_cam.items():
            counted = self._counted[camera] = []
            for label in wanted:
                src = [r.model for r in cam_routes if label in r.labels and r.task == "detect"]
                src = src or [r.model for r in cam_routes if label in r.labels]
                if not src:
                    continue
                if label in count_labels:
                    self._counts.setdefault((camera, src[0]), []).append(label)
                    counted.append(label)
                    self.label(label)
                if label == occupancy_label:
                    self._occupancy[camera] = src[0]
            self._pose[camera] = [r.model for r in cam_routes if r.task == "pose"]
        known = {label for r in routes for label in r.labels}
        self.missing: list[str] = [label for label in wanted if label not in known]
        """Configured count/occupancy labels that no model reports."""

    def counts(self, camera: str, model: str) -> Sequence[str]:
        """The labels ``model`` counts on ``camera`` (maybe none)."""
        return self._counts.get((camera, model), ())

    def counted(self, camera: str) -> list[str]:
        """Every label counted on ``camera``, in config order."""
        return self._counted.get(camera, [])

    def occupancy_model(self, camera: str) -> str | None:
        """The model whose detections decide ``camera``'s occupancy, if any."""
        return self._occupancy.get(camera)

    def pose_models(self, camera: str) -> list[str]:
        """The pose models running on ``camera``."""
        return self._pose.get(camera, [])
