"""Snapshots end to end: `edgeyolo run` publishes JPEGs to a real mosquitto, a real subscriber
decodes them; Home Assistant discovery announces them as image entities and links the device
to the status page."""

from __future__ import annotations

import asyncio
import socket
import uuid
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pytest

from helpers import run_async
from mosquitto import Collector, Mosquitto, free_port
from test_mqtt_service import Service, write_config

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]


def test_snapshots_reach_a_subscriber_and_discovery_has_image_entities(
    tmp_path: Path, broker: Mosquitto
):
    """A subscriber gets a decodable JPEG of max_width on each snapshot topic, retained; the
    camera device's discovery has an image entity per label with that image_topic and
    content_type image/jpeg, and configuration_url points at the status page (listening on
    0.0.0.0 here)."""
    pfx = f"snap-{uuid.uuid4().hex[:8]}"
    config = write_config(
        tmp_path,
        pfx,
        broker.url,
        snapshots={
            "enabled": True,
            "labels": ["person", "car"],
            "min_interval_s": 1,
            "max_width": 480,
            "quality": 70,
        },
    )
    text = config.read_text() + "http:\n  allow_anonymous: true\n"
    config.write_text(text)
    port = free_port()
    base = f"{pfx}/svc/demo"
    snap_topics = [f"{base}/snapshot/person", f"{base}/snapshot/car"]

    async def main() -> tuple[Collector, list[bytes]]:
        async with Collector(broker.port, [f"{base}/snapshot/#", f"{pfx}-ha/#"]) as col:
            svc = Service(tmp_path, config, "--http", f"0.0.0.0:{port}")
            try:
                for topic in snap_topics:
                    await col.wait_for(lambda c, t=topic: c.on(t), 120, f"a message on {topic}")
            finally:
                assert svc.stop() == 0, svc.logs()[-3000:]
        # A subscriber that comes later gets the retained snapshot from the broker.
        async with Collector(broker.port, snap_topics) as late:
            await late.wait_for(lambda c: len(c.messages) >= 2, 10, "retained snapshots")
            retained = [m.payload for m in late.messages if m.retain]
        return col, retained

    col, retained = run_async(main(), 180)
    for topic in snap_topics:
        jpeg = col.on(topic)[-1].payload
        assert jpeg[:2] == b"\xff\xd8", "raw JPEG bytes, not JSON or base64"
        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None
        assert img.shape == (270, 480, 3)
        assert len(jpeg) <= 256_000
    assert len(retained) == 2
    assert all(r[:2] == b"\xff\xd8" for r in retained)

    camera_cfg = col.last(f"{pfx}-ha/device/svc_demo/config")
    assert camera_cfg is not None
    disc = camera_cfg.json()
    images = {k: v for k, v in disc["cmps"].items() if v["p"] == "image"}
    assert set(images) == {"snapshot_person", "snapshot_car"}
    for label in ("person", "car"):
        entity = images[f"snapshot_{label}"]
        assert entity["image_topic"] == f"{base}/snapshot/{label}"
        assert entity["content_type"] == "image/jpeg"
        assert entity["unique_id"].startswith("edgeyolo_svc_")
    url = f"http://{socket.gethostname()}:{port}/"
    assert disc["dev"]["configuration_url"] == url
    service_cfg = col.last(f"{pfx}-ha/device/svc/config")
    assert service_cfg is not None
    assert service_cfg.json()["dev"]["configuration_url"] == url


def test_snapshots_off_by_default_no_image_entity(tmp_path: Path, broker: Mosquitto):
    """Without snapshots.enabled nothing is published on snapshot topics and discovery has no
    image entity; a loopback-only server gives no configuration_url."""
    pfx = f"snap-{uuid.uuid4().hex[:8]}"
    config = write_config(tmp_path, pfx, broker.url)
    base = f"{pfx}/svc/demo"

    async def main() -> Collector:
        async with Collector(broker.port, [f"{base}/#", f"{pfx}-ha/#"]) as col:
            svc = Service(tmp_path, config, "--http", f"127.0.0.1:{free_port()}")
            try:
                await col.wait_for(lambda c: c.on(f"{base}/count/person"), 120, "a count")
                await asyncio.sleep(2.0)
            finally:
                assert svc.stop() == 0, svc.logs()[-3000:]
        return col

    col = run_async(main(), 180)
    assert not [m for m in col.messages if "/snapshot/" in m.topic]
    camera_cfg = col.last(f"{pfx}-ha/device/svc_demo/config")
    assert camera_cfg is not None
    disc = camera_cfg.json()
    assert not [v for v in disc["cmps"].values() if v["p"] == "image"]
    assert "configuration_url" not in disc["dev"]
