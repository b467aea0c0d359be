"""Home Assistant discovery payloads as the sink builds them (no broker; tests/test_ha_real.py
checks them against a running Home Assistant)."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import aiomqtt
import pytest
import yaml

from conftest import DEMO_VIDEO, DET, POSE
from edgeyolo.config.mqtt import MqttConfig
from edgeyolo.config.names import ha_id, ha_ids, sanitize_id
from edgeyolo.sinks.discovery import configuration_url
from edgeyolo.sinks.mqtt import MqttSink
from edgeyolo.sinks.topics import Route
from helpers import DOCS, run_cli
from mosquitto import HOST, Collector, Mosquitto

COCO = ["person", "bicycle", "car"]
ANY = "0.0.0.0"  # noqa: S104 - a config value under test, nothing binds it


def _configs(cameras: list[str], **mqtt: object) -> dict[str, dict]:
    cfg = MqttConfig.model_validate(
        {"url": "mqtt://127.0.0.1:1", "device_id": "vm", "count_labels": ["person", "car"], **mqtt}
    )
    topo = [
        Route(cam, model, task, tuple(COCO))
        for cam in cameras
        for model, task in (("det-fp32", "detect"), ("pose-fp32", "pose"), ("yolo11n", "pose"))
    ]
    return {m.topic: json.loads(m.payload) for m in MqttSink(cfg, topo).discovery_messages()}


def _components(configs: dict[str, dict]) -> list[dict]:
    return [c for p in configs.values() for c in p["cmps"].values()]


def test_non_ascii_camera_names_keep_every_entity():
    """Cameras that fold alike ('wohnzimmer ü'/'ä', 'küche'/'k_che') lose no component."""
    cams = ["wohnzimmer ü", "wohnzimmer ä", "küche", "k_che", "kuche"]
    configs = _configs(cams)
    per_camera = 2 + 1 + 2 + 2  # counts, occupancy, pose events, fps + latency
    assert len(configs) == 1 + len(cams)
    comps = _components(configs)
    assert len(comps) == 1 + per_camera * len(cams)
    ids = [c["unique_id"] for c in comps]
    assert len(set(ids)) == len(ids)
    assert len({c["state_topic"] for c in comps if c["p"] == "sensor"}) == 3 * len(cams)
    # Stable: the same names give the same ids whatever their order.
    assert sorted(_configs(list(reversed(cams)))) == sorted(configs)
    for topic in configs:
        object_id = topic.split("/")[2]
        assert sanitize_id(object_id) == object_id
    assert ha_id("küche") == "kuche"
    assert ha_ids(["küche", "kuche"])["kuche"] == "kuche"  # the exact one keeps its id
    assert ha_ids(["küche", "kuche"])["küche"].startswith("kuche_")
    assert ha_ids(["客厅", "厨房"])["客厅"] != ha_ids(["客厅", "厨房"])["厨房"]


def test_check_config_warns_about_folded_id_collisions(tmp_path: Path):
    """check-config names the cameras whose Home Assistant ids collide, and the ids used."""
    cfg = {
        "cameras": [
            {"name": "küche", "source": str(DEMO_VIDEO)},
            {"name": "kuche", "source": str(DEMO_VIDEO)},
        ],
        "models": [{"name": "d", "path": str(DET), "task": "detect"}],
        "sinks": {"mqtt": {"url": "mqtt://127.0.0.1:1"}},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    out = run_cli("check-config", "--no-models", str(path))
    assert out.returncode == 0, out.stderr
    assert "warning: cameras 'küche', 'kuche' have the same Home Assistant id 'kuche'" in out.stderr
    assert f"'{ha_ids(['küche', 'kuche'])['küche']}'" in out.stderr
    cfg["sinks"]["mqtt"]["discovery"] = {"enabled": False}  # no discovery: nothing to warn about
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    out = run_cli("check-config", "--no-models", str(path))
    assert out.returncode == 0
    assert "warning" not in out.stderr


def test_one_device_per_camera_linked_to_the_service_device():
    """Each camera is its own device (areas are per device) with via_device the service."""
    configs = _configs(["front door", "garden"])
    service = configs["homeassistant/device/vm/config"]
    assert service["dev"]["identifiers"] == ["edgeyolo_vm"]  # the old single device's id
    assert [c["device_class"] for c in service["cmps"].values()] == ["connectivity"]
    cameras = {t: p for t, p in configs.items() if t != "homeassistant/device/vm/config"}
    assert sorted(cameras) == [
        "homeassistant/device/vm_front_door/config",
        "homeassistant/device/vm_garden/config",
    ]
    names = set()
    for payload in cameras.values():
        dev = payload["dev"]
        assert dev["via_device"] == "edgeyolo_vm"
        assert dev["identifiers"][0].startswith("edgeyolo_vm_")
        names.add(dev["name"])
        assert payload["availability_topic"] == "edgeyolo/vm/availability"
    assert names == {"front door", "garden"}
    # The service device is announced first: via_device must exist when a camera arrives.
    assert next(iter(configs)) == "homeassistant/device/vm/config"


def test_qos_is_set_on_every_component():
    """Each component carries the qos of its message kind (a root qos was ignored)."""
    configs = _configs(
        ["c"], messages={"state": {"qos": 2}, "pose": {"qos": 0}, "stats": {"qos": 1}}
    )
    by_name = {c["name"]: c for c in _components(configs)}
    assert by_name["person count"]["qos"] == 2
    assert by_name["occupancy"]["qos"] == 2
    assert by_name["pose-fp32"]["qos"] == 0
    assert by_name["fps"]["qos"] == 1
    assert by_name["status"]["qos"] == 1
    assert all("qos" in c for c in _components(_configs(["c"])))


def test_ids_names_units_and_device_info():
    """edgeyolo_ id prefix, no doubled names, model != manufacturer, count units."""
    configs = _configs(["demo"])
    comps = _components(configs)
    for c in comps:
        assert c["unique_id"].startswith("edgeyolo_vm_")
        assert "demo" not in c["name"]  # the device name (the camera) is not repeated
        assert c["name"].lower().count("pose") <= 1
    names = sorted(c["name"] for c in comps)
    assert names == [
        "car count",
        "fps",
        "latency",
        "occupancy",
        "person count",
        "pose-fp32",
        "status",
        "yolo11n pose",
    ]
    units = {c["name"]: c.get("unit_of_measurement") for c in comps}
    assert units["person count"] == "persons"
    assert units["car count"] == "objects"
    for payload in configs.values():
        assert payload["dev"]["model"] != payload["dev"]["manufacturer"]
        assert "configuration_url" not in payload["dev"]


def test_configuration_url_only_beyond_loopback():
    """configuration_url points at the HTTP server when another machine can reach it."""
    assert configuration_url("127.0.0.1", 9108, "box") is None
    assert configuration_url("localhost", 9108, "box") is None
    assert configuration_url("::1", 9108, "box") is None
    assert configuration_url(ANY, 0, "box") is None  # port not known before start
    assert configuration_url(ANY, 9108, "box") == "http://box:9108/"
    assert configuration_url("192.168.1.20", 9108, "box") == "http://192.168.1.20:9108/"
    assert configuration_url("fd00::5", 80, "box") == "http://[fd00::5]:80/"


def test_service_passes_configuration_url_from_the_http_section():
    """The app builds the sink with the HTTP url when http listens on all interfaces."""
    import socket

    from edgeyolo.config import parse_config
    from edgeyolo.sinks.setup import mqtt_sink

    raw = {
        "cameras": [{"name": "demo", "source": str(DEMO_VIDEO)}],
        "models": [{"name": "p", "path": str(POSE), "task": "pose"}],
        "sinks": {"mqtt": {"url": "mqtt://127.0.0.1:1", "device_id": "vm"}},
        "http": {"enabled": True, "host": ANY, "port": 9200, "allow_anonymous": True},
    }
    cfg = parse_config(raw, DEMO_VIDEO)
    sink = mqtt_sink(cfg, [])
    assert sink is not None
    devices = [json.loads(m.payload)["dev"] for m in sink.discovery_messages()]
    urls = {d.get("configuration_url") for d in devices}
    assert urls == {f"http://{socket.gethostname()}:9200/"}
    raw["http"]["host"] = "127.0.0.1"
    sink = mqtt_sink(parse_config(raw, DEMO_VIDEO), [])
    assert sink is not None
    assert all(
        "configuration_url" not in json.loads(m.payload)["dev"] for m in sink.discovery_messages()
    )


@pytest.mark.mqtt
def test_remove_discovery_clears_every_camera_device(tmp_path: Path, broker: Mosquitto):
    """remove-discovery clears the service device, each configured camera's device and a
    retained camera device of this service no longer in the config; others' are kept."""
    pfx = f"t{uuid.uuid4().hex[:8]}"
    raw = {
        "cameras": [{"name": "küche", "source": str(DEMO_VIDEO)}],
        "models": [{"name": "d", "path": str(DET), "task": "detect"}],
        "sinks": {
            "mqtt": {
                "url": broker.url,
                "prefix": pfx,
                "device_id": "svc",
                "discovery": {"prefix": f"{pfx}-ha"},
            }
        },
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    ours = [f"{pfx}-ha/device/svc/config", f"{pfx}-ha/device/svc_kuche/config"]
    stale = f"{pfx}-ha/device/svc_attic/config"
    other = f"{pfx}-ha/device/elsewhere_attic/config"

    async def seed() -> None:
        async with aiomqtt.Client(HOST, broker.port) as c:
            for topic in ours:
                await c.publish(topic, b'{"dev": {}}', qos=1, retain=True)
            await c.publish(stale, json.dumps({"dev": {"via_device": "edgeyolo_svc"}}), 1, True)
            await c.publish(other, json.dumps({"dev": {"via_device": "edgeyolo_x"}}), 1, True)

    asyncio.run(seed())
    res = run_cli("mqtt", "remove-discovery", "-c", str(path), timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [w for t in [*ours, stale] for w in ("cleared", t)]

    async def check() -> list[str]:
        async with Collector(broker.port, [f"{pfx}-ha/#"]) as c:
            await asyncio.sleep(0.5)
            return [str(m.topic) for m in c.messages]

    assert asyncio.run(check()) == [other]


def test_documented_discovery_payloads_are_what_the_sink_sends():
    """docs/mqtt.md's discovery examples are the demo's payloads (some components left out)."""
    docs = (DOCS / "mqtt.md").read_text()
    documented = {}
    for part in docs.split("`homeassistant/device/")[1:]:
        topic, rest = part.split("`", 1)
        if rest.startswith(":\n\n```json\n"):
            documented[f"homeassistant/device/{topic}"] = json.loads(
                rest.split("```json\n", 1)[1].split("```", 1)[0]
            )
    cfg = MqttConfig.model_validate({"url": "mqtt://127.0.0.1:1", "device_id": "demo-box"})
    topo = [
        Route("demo", m, t, tuple(COCO))
        for m, t in (("det-fp32", "detect"), ("pose-fp32", "pose"), ("pose-int8", "pose"))
    ]
    sent = {m.topic: json.loads(m.payload) for m in MqttSink(cfg, topo).discovery_messages()}
    assert sorted(documented) == sorted(sent)
    for topic, doc in documented.items():
        cmps = sent[topic].pop("cmps")
        assert {k: v for k, v in doc.items() if k != "cmps"} == sent[topic]
        for cid, comp in doc["cmps"].items():
            assert cmps[cid] == comp
