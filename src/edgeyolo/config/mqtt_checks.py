"""Checks of the MQTT sink's settings against the rest of the config and the file system.

Run by ``check-config``, ``run`` and a SIGHUP reload (``load_config``): TLS files that are
missing or unloadable, and topics that would be longer than MQTT allows (65,535 bytes of
UTF-8), which the client would refuse for as long as the service runs.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgeyolo.config.models import Config

MAX_TOPIC_BYTES = 65535
# The longest topic suffixes under a camera (docs/mqtt.md, "Topics").
_UNDER_MODEL = ("detections", "pose", "objects")


def _n(text: str) -> int:
    return len(text.encode("utf-8"))


def _short(text: str) -> str:
    return text if len(text) <= 40 else f"{text[:37]}..."


def mqtt_problems(cfg: Config) -> list[tuple[str, str, str]]:
    """``(key, value, message)`` for every problem of ``sinks.mqtt``."""
    mqtt = cfg.sinks.mqtt
    if mqtt is None:
        return []
    problems: list[tuple[str, str, str]] = []
    tls = mqtt.tls
    if tls is not None:
        for key in ("ca", "cert", "key"):
            path = getattr(tls, key)
            if path is not None and not path.is_file():
                problems.append((f"sinks.mqtt.tls.{key}", str(path), "no such file"))
        if not problems:
            try:
                ctx = ssl.create_default_context(cafile=str(tls.ca) if tls.ca else None)
                if tls.cert and tls.key:
                    ctx.load_cert_chain(str(tls.cert), str(tls.key))
            except (OSError, ssl.SSLError) as exc:
                problems.append(("sinks.mqtt.tls", "", f"cannot load the TLS files: {exc}"))
    base = f"{mqtt.prefix}/{mqtt.resolved_device_id()}"
    longest_label = max((_n(label) for label in mqtt.count_labels), default=0)
    for i, cam in enumerate(cfg.cameras):
        models = max((_n(m.name) for m in cfg.models_for(cam.name)), default=0)
        # Names only shrink when made safe for topics, so this bounds every topic.
        longest = (
            _n(base)
            + 1
            + _n(cam.name)
            + 1
            + max(models + 1 + max(_n(s) for s in _UNDER_MODEL), len("count/") + longest_label)
        )
        discovery = _n(f"{mqtt.discovery.prefix}/device/{mqtt.resolved_device_id()}_/config")
        longest = max(longest, discovery + _n(cam.name))
        if longest > MAX_TOPIC_BYTES:
            why = (
                f"its MQTT topics would be up to {longest} bytes, more than the 65,535 MQTT "
                "allows: shorten the camera name (or model names, sinks.mqtt.prefix, device_id)"
            )
            problems.append((f"cameras[{i}].name", _short(cam.name), why))
    return problems
