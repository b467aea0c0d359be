"""The sinks a config asks for: JSON lines, and the MQTT sink with its routes and objects.

The service (``app.py``) calls these once per run; the MQTT sink announces every camera x
model pair it will see (its Home Assistant discovery), the zones, lines and tracked models of
each camera, and the HTTP server's address when it listens beyond loopback.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from edgeyolo.sinks.jsonl import JsonlSink

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from edgeyolo.config import Config
    from edgeyolo.runner import ModelRunner
    from edgeyolo.sinks.base import Sink
    from edgeyolo.sinks.mqtt import MqttSink
    from edgeyolo.sinks.objects import CameraObjects


def mqtt_sink(config: Config, runners: list[ModelRunner]) -> MqttSink | None:
    """The MQTT sink the config asks for, announcing every camera x model pair it will see."""
    if config.sinks.mqtt is None:
        return None
    from edgeyolo.sinks.discovery import configuration_url  # noqa: PLC0415
    from edgeyolo.sinks.mqtt import MqttSink  # noqa: PLC0415 - imports aiomqtt
    from edgeyolo.sinks.topics import Route  # noqa: PLC0415

    routes = [
        Route(cam.name, r.name, str(r.config.task), tuple(r.reported_labels))
        for cam in config.cameras
        for r in runners
        if r.config.cameras is None or cam.name in r.config.cameras
    ]
    http = config.http
    url = configuration_url(http.host, http.port, socket.gethostname()) if http.enabled else None
    return MqttSink(
        config.sinks.mqtt, routes, configuration_url=url, objects=camera_objects(config)
    )


def camera_objects(config: Config) -> list[CameraObjects]:
    """Per camera: its zones and lines and the tracked models that run on it (for MQTT)."""
    from edgeyolo.sinks.objects import CameraObjects  # noqa: PLC0415

    def labels(v: list[str] | None) -> tuple[str, ...] | None:
        return None if v is None else tuple(v)

    return [
        CameraObjects(
            cam.name,
            zones=tuple((z.name, labels(z.labels)) for z in cam.zones),
            lines=tuple((ln.name, labels(ln.labels)) for ln in cam.lines),
            tracked=tuple(m.name for m in config.models_for(cam.name) if m.tracking.enabled),
        )
        for cam in config.cameras
    ]


def build_sinks(
    config: Config,
    mqtt: MqttSink | None,
    *,
    jsonl: bool = True,
    extra: Sequence[Sink] = (),
    on_stdout_closed: Callable[[], None] | None = None,
) -> list[Sink]:
    """The configured sinks (JSON lines unless ``jsonl`` is off, then MQTT) plus ``extra``;
    ``on_stdout_closed``: called when the JSON lines go to stdout and its reader exits."""
    sinks: list[Sink] = []
    if jsonl and config.sinks.jsonl.enabled:
        sinks.append(JsonlSink(config.sinks.jsonl.path, on_stdout_closed=on_stdout_closed))
    if mqtt is not None:
        sinks.append(mqtt)
    sinks.extend(extra)
    return sinks
