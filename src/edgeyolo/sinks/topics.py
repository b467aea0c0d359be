"""MQTT topic layout and the sanitizing of names that go into topics.

Camera and model names come from the config file, labels from model metadata: none of them
may smuggle an MQTT wildcard (``+``, ``#``), a level separator (``/``) or NUL into a topic,
nor start with ``$`` (reserved for broker topics such as ``$SYS``). Layout (docs/mqtt.md)::

    <prefix>/<device>/availability                   online / offline (retained, last will)
    <prefix>/<device>/<camera>/count/<label>         count of one label (state, retained)
    <prefix>/<device>/<camera>/occupancy             someone there or not (state, retained)
    <prefix>/<device>/<camera>/stats                 fps, stage latencies, drops (retained)
    <prefix>/<device>/<camera>/<model>/detections    every frame's detections (stream)
    <prefix>/<device>/<camera>/<model>/pose          pose events (on change)
    <discovery prefix>/device/<device>/config        Home Assistant device discovery
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

# Segments directly under a camera that a model name must not shadow.
RESERVED_UNDER_CAMERA = frozenset({"count", "occupancy", "stats"})

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

    def detections(self, camera: str, model: str) -> str:
        """Per-frame stream of ``model`` on ``camera``."""
        return f"{self.base}/{camera}/{model}/detections"

    def pose(self, camera: str, model: str) -> str:
        """Pose events of ``model`` on ``camera``."""
        return f"{self.base}/{camera}/{model}/pose"
