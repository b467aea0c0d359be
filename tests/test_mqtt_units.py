"""MQTT pieces that need no broker: config and url override, topics, outbox, postures, discovery."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from edgeyolo.config import parse_config
from edgeyolo.config.broker import parse_url
from edgeyolo.config.mqtt import MqttConfig, with_broker_url
from edgeyolo.config.names import check_prefix, sanitize_id
from edgeyolo.errors import ConfigError
from edgeyolo.events import Detection, DetectionEvent
from edgeyolo.sinks.derive import pose_summary, posture
from edgeyolo.sinks.mqtt import MqttSink
from edgeyolo.sinks.outbox import Message, Outbox
from edgeyolo.sinks.topics import Route, Topics, sanitize_segment, unique_segments
from helpers import DOCS, REPO

WILDCARDS = ("+", "#", "\x00")


def test_sanitize_segment_removes_wildcards_separators_and_nul():
    """No '+', '#', '/', NUL or leading '$' survives into a topic level."""
    for raw in ["front/door", "a+b", "c#", "x\x00y", "$SYS", "  ", "", "sports ball"]:
        seg = sanitize_segment(raw)
        assert seg
        assert not any(c in seg for c in ("/", *WILDCARDS, " "))
        assert not seg.startswith("$")
    assert sanitize_segment("Küche") == "Küche"
    assert sanitize_segment("front/door#1") == "front_door_1"


def test_unique_segments_disambiguates_collisions_and_reserved():
    """Names that sanitize alike, or collide with reserved levels, get distinct segments."""
    segs = unique_segments(["a/b", "a+b", "a_b", "stats"], frozenset({"stats"}))
    assert len(set(segs.values())) == 4
    assert segs["a/b"] == "a_b"
    assert segs["stats"] != "stats"


def test_sanitize_id_and_prefix_rules():
    """Ids keep [A-Za-z0-9_-]; prefixes reject wildcards, empty levels and '$'."""
    assert sanitize_id("my-host.local") == "my-host_local"
    check_prefix("home/edgeyolo")
    for bad in ["a/#", "a+", "/a", "a/", "a//b", "$SYS/x", "a\x00"]:
        with pytest.raises(ValueError):
            check_prefix(bad)


def test_config_defaults_and_validation_messages(tmp_path):
    """Defaults are usable, unknown keys and bad urls are rejected naming the key."""
    cfg = MqttConfig.model_validate({})
    assert cfg.is_embedded
    assert cfg.resolved_device_id() == sanitize_id(cfg.resolved_device_id())
    assert cfg.resolved_client_id().startswith("edgeyolo-")
    with pytest.raises(ValidationError, match="extra"):
        MqttConfig.model_validate({"urll": "mqtt://x"})
    with pytest.raises(ValidationError, match="scheme 'http'"):
        MqttConfig.model_validate({"url": "http://x"})
    with pytest.raises(ValidationError, match="mqtts"):
        MqttConfig.model_validate({"url": "mqtt://x", "tls": {"insecure": True}})
    with pytest.raises(ValidationError, match="device_id"):
        MqttConfig.model_validate({"device_id": "a/b"})
    with pytest.raises(ValidationError, match="prefix"):
        MqttConfig.model_validate({"prefix": "a/#"})
    # Every field documents itself (config reference and check-config rely on it).
    for name, field in MqttConfig.model_fields.items():
        assert field.description, name


def test_config_in_a_config_file(tmp_path):
    """sinks.mqtt in a config file is parsed, and its errors name the full key."""
    from mosquitto import TlsFiles

    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    ca = TlsFiles.make(tmp_path / "tls").ca  # a real CA: check-config loads TLS files
    raw = {
        "cameras": [{"name": "c", "source": 0}],
        "models": [{"name": "m", "path": str(model), "task": "detect"}],
        "sinks": {"mqtt": {"url": "mqtts://broker:8883", "tls": {"ca": str(ca)}}},
    }
    cfg = parse_config(raw, tmp_path / "c.yaml")
    assert cfg.sinks.mqtt is not None
    assert cfg.sinks.mqtt.is_tls
    raw["sinks"] = {"mqtt": {"url": "mqtt://broker", "qos": 3}}
    with pytest.raises(ConfigError, match=r"sinks\.mqtt\.qos"):
        parse_config(raw, tmp_path / "c.yaml")


def test_parse_url_and_override_keep_password_secret():
    """--mqtt-url sets host, port, TLS and credentials; the password never shows in repr/url."""
    u = parse_url("mqtts://alice:s%40cret@ha.local")
    assert (u.host, u.port, u.tls, u.username) == ("ha.local", 8883, True, "alice")
    assert u.password is not None
    assert u.password.get_secret_value() == "s@cret"
    assert parse_url("mqtt://[::1]:1884").display() == "mqtt://[::1]:1884"
    cfg = with_broker_url(None, "mqtt://bob:hunter2@10.0.0.2:1884")
    assert cfg.url == "mqtt://10.0.0.2:1884"
    assert cfg.username == "bob"
    assert cfg.password is not None
    assert cfg.password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(cfg)
    assert "hunter2" not in str(cfg.model_dump())
    base = MqttConfig.model_validate({"prefix": "p", "url": "mqtts://a:8883", "tls": {}})
    plain = with_broker_url(base, "mqtt://b")
    assert plain.prefix == "p"
    assert plain.tls is None
    assert with_broker_url(base, "embedded").is_embedded
    with pytest.raises(ConfigError, match=r"--mqtt-url 'ftp://u:\*\*\*@h'") as err:
        with_broker_url(None, "ftp://u:pw@h")
    assert "pw@" not in str(err.value)


def _msg(topic: str, *, state: bool) -> Message:
    return Message(topic, topic.encode(), 1, state, state=state)


def test_outbox_latest_state_keeps_newest_state_and_drops_oldest_events():
    """Under 'latest_state' state never drops while events drop oldest first."""

    async def run() -> None:
        box = Outbox(10, "latest_state")
        for i in range(5):
            box.put(_msg(f"state/{i}", state=True))
        for _ in range(3):
            box.put(Message("state/0", b"newer", 1, True, state=True))
        for i in range(20):
            box.put(_msg(f"event/{i}", state=False))
        items = [m for _, m in box.peek(100)]
        assert len(items) == 10
        assert box.dropped == 15
        assert [m.topic for m in items if not m.state] == [f"event/{i}" for i in range(15, 20)]
        state0 = [m for m in items if m.topic == "state/0"]
        assert [m.payload for m in state0] == [b"newer"]
        # Acknowledging a replaced state message keeps the newer one queued.
        key, old = next((k, m) for k, m in box.peek(100) if m.topic == "state/1")
        box.put(Message("state/1", b"v2", 1, True, state=True))
        box.ack(key, old)
        assert any(m.payload == b"v2" for _, m in box.peek(100))

    asyncio.run(run())


def test_outbox_drop_oldest_is_one_fifo():
    """'drop_oldest' keeps every message in order and drops the oldest, state or not."""

    async def run() -> None:
        box = Outbox(10, "drop_oldest")
        for i in range(25):
            box.put(_msg("state/x" if i % 2 else f"e/{i}", state=bool(i % 2)))
        assert len(box) == 10
        assert box.dropped == 15
        assert [m.topic for _, m in box.peek(2)] == ["state/x", "e/16"]

    asyncio.run(run())


def _kpts(points: dict[int, tuple[float, float]]) -> tuple[tuple[float, float, float], ...]:
    return tuple((*points[i], 0.9) if i in points else (0.0, 0.0, 0.0) for i in range(17))


def test_posture_from_keypoints():
    """Upright torso and legs: standing; horizontal thighs: sitting; horizontal torso: lying."""
    box = (0.0, 0.0, 100.0, 300.0)
    standing = _kpts({5: (40, 50), 6: (60, 50), 11: (42, 150), 12: (58, 150), 13: (42, 220)})
    sitting = _kpts({5: (40, 50), 6: (60, 50), 11: (42, 150), 12: (58, 150), 13: (120, 155)})
    lying = _kpts({5: (40, 250), 6: (40, 260), 11: (160, 255), 12: (160, 265)})
    assert posture(standing, box) == "standing"
    assert posture(sitting, box) == "sitting"
    assert posture(lying, (0, 200, 300, 300)) == "lying"
    assert posture(_kpts({}), box) == "unknown"
    assert posture(None, (0, 0, 300, 100)) == "lying"


def test_pose_summary_picks_the_most_notable_posture():
    """The event type is the most notable posture present (lying before standing)."""
    upright = _kpts({5: (40, 50), 6: (60, 50), 11: (42, 150), 12: (58, 150), 13: (42, 220)})
    flat = _kpts({5: (40, 250), 6: (40, 260), 11: (160, 255), 12: (160, 265)})
    ev = DetectionEvent(
        "c", "pose", "pose", 7, 1.0, 640, 480,
        (Detection((0, 0, 100, 300), 0.9, 0, "person", upright),
         Detection((0, 200, 300, 300), 0.8, 0, "person", flat)),
    )  # fmt: skip
    s = pose_summary(ev, with_posture=True, label="person")
    assert s.event_type == "lying"
    assert s.postures == {"standing": 1, "lying": 1}
    assert s.payload["seq"] == 7
    empty = DetectionEvent("c", "pose", "pose", 8, 1.0, 640, 480, ())
    assert pose_summary(empty, with_posture=False, label="person").event_type == "none"


def test_sink_topology_decides_counts_occupancy_and_pose(tmp_path: Path):
    """Counts come from a detection model; pose models get a pose entity; names sanitized."""
    cfg = MqttConfig.model_validate(
        {"url": "mqtt://127.0.0.1:1", "device_id": "dev", "count_labels": ["person", "a/b"]}
    )
    topo = [
        Route("cam#1", "pose+", "pose", ("person",)),
        Route("cam#1", "det", "detect", ("person", "a/b", "car")),
        Route("cam/2", "pose+", "pose", ("person",)),
    ]
    sink = MqttSink(cfg, topo)
    payloads = [json.loads(m.payload) for m in sink.discovery_messages()]
    topics = [c["state_topic"] for p in payloads[1:] for c in p["cmps"].values()]
    assert "edgeyolo/dev/cam_1/count/person" in topics
    assert "edgeyolo/dev/cam_1/count/a_b" in topics
    assert "edgeyolo/dev/cam_2/count/person" in topics  # the pose model counts people there
    assert "edgeyolo/dev/cam_1/pose_/pose" in topics
    for t in topics:
        assert not any(c in t for c in WILDCARDS)
    assert sink.stats().connected is False


MQTT_DOC = DOCS / "mqtt.md"
FLOW = REPO / "deploy" / "node-red" / "flow.json"


def test_documented_payloads_follow_the_schema():
    """Every example payload in docs/mqtt.md validates against docs/mqtt-schema.json."""
    from mosquitto import validate

    text = MQTT_DOC.read_text()
    blocks = text.split("```json\n")[1:]
    checked = set()
    for block in blocks:
        payload = json.loads(block.split("```", 1)[0])
        if "type" in payload:
            validate(payload, payload["type"])
            checked.add(payload["type"])
    assert checked == {
        *("count", "occupancy", "pose", "detections", "stats"),
        *("track", "zone", "line", "zone_occupancy", "line_count"),
    }


def test_node_red_flow_is_valid_and_matches_the_topics():
    """flow.json is a Node-RED flow whose wires resolve and whose topics match ours."""
    import aiomqtt

    nodes = json.loads(FLOW.read_text())
    ids = {n["id"] for n in nodes}
    assert len(ids) == len(nodes)
    for n in nodes:
        for outputs in n.get("wires", []):
            assert set(outputs) <= ids, n["id"]
        if "z" in n:
            assert n["z"] in ids
        if n["type"] == "mqtt in":
            assert n["broker"] in ids
    filters = {n["name"]: n["topic"] for n in nodes if n["type"] == "mqtt in"}
    t = Topics("edgeyolo", "box")
    assert aiomqtt.Topic(t.count("demo", "person")).matches(filters["counts"])
    assert aiomqtt.Topic(t.availability).matches(filters["availability"])
    assert aiomqtt.Topic(t.pose("demo", "pose-fp32")).matches(filters["pose events"])
