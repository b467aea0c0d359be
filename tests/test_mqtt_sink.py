"""MqttSink against a real mosquitto, with real MQTT subscribers (aiomqtt) reading the topics."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from edgeyolo.config.mqtt import MqttConfig
from edgeyolo.events import Detection, DetectionEvent, StatsEvent
from edgeyolo.metrics import Metrics
from edgeyolo.sinks.mqtt import MqttSink
from edgeyolo.sinks.topics import Route
from helpers import run_async
from mosquitto import HOST, Collector, Mosquitto, TlsFiles, free_port, validate

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.mqtt

TOPOLOGY = [
    Route("front", "det", "detect", ("person", "car", "sports ball")),
    Route("front", "pose", "pose", ("person",)),
]
KPTS_STANDING = tuple(
    (50.0 + (i % 2) * 10, 40.0 + (i // 2) * 15, 0.9) for i in range(17)
)  # shoulders above hips above knees: upright


def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def config(url: str, pfx: str, **kw: Any) -> MqttConfig:
    data: dict[str, Any] = {
        "url": url,
        "prefix": pfx,
        "device_id": "box",
        "discovery": {"prefix": f"{pfx}-ha", "status_topic": f"{pfx}-ha/status"},
        "state_min_interval_s": 0.2,
        "backoff": {"initial_s": 0.2, "max_s": 1.0},
    }
    data.update(kw)
    return MqttConfig.model_validate(data)


def det_event(seq: int, persons: int, camera: str = "front", model: str = "det") -> DetectionEvent:
    people = [Detection((10.0 + i, 20.0, 110.0, 220.0), 0.9, 0, "person") for i in range(persons)]
    dets = (*people, Detection((300.0, 200.0, 400.0, 260.0), 0.8, 2, "car"))
    return DetectionEvent(camera, model, "detect", seq, time.time(), 640, 480, dets, 12.5)


def pose_event(seq: int, persons: int, camera: str = "front") -> DetectionEvent:
    dets = tuple(
        Detection((40.0, 30.0, 80.0, 200.0), 0.9, 0, "person", KPTS_STANDING)
        for _ in range(persons)
    )
    return DetectionEvent(camera, "pose", "pose", seq, time.time(), 640, 480, dets, 20.0)


async def feed(sink: MqttSink, seqs: range, persons: int, period: float = 1 / 15) -> None:
    for seq in seqs:
        await sink.emit(det_event(seq, persons))
        await sink.emit(pose_event(seq, persons))
        await asyncio.sleep(period)


def test_publishes_availability_discovery_state_and_events(broker: Mosquitto):
    """Availability online (retained), discovery, counts, occupancy, pose, stream, stats."""
    pfx = prefix()
    base = f"{pfx}/box"

    async def main() -> None:
        sink = MqttSink(config(broker.url, pfx), TOPOLOGY)
        async with Collector(broker.port, [f"{pfx}/#", f"{pfx}-ha/#"]) as col:
            await sink.start()
            assert sink.subscriber_url == broker.url
            await feed(sink, range(10), persons=2)
            await sink.emit(StatsEvent("front", time.time(), 14.8, 10, 0, {"e2e": {"p50": 30.0}}))
            await col.wait_for(
                lambda c: (
                    c.last(f"{base}/front/count/person") is not None
                    and c.last(f"{base}/front/count/person").json()["count"] == 2
                    and c.last(f"{base}/front/stats") is not None
                ),
                what="count 2 and stats",
            )
            await sink.close()
            await col.wait_for(lambda c: c.last(f"{base}/availability").payload == b"offline")
        avail = [m.payload for m in col.on(f"{base}/availability")]
        assert avail == [b"online", b"offline"]
        assert all(m.retain is False for m in col.on(f"{base}/availability"))  # live, not replay
        assert col.last(f"{pfx}-ha/device/box/config") is not None  # the service device
        disc = col.last(f"{pfx}-ha/device/box_front/config")  # the camera's device
        assert disc is not None
        cmps = disc.json()["cmps"]
        assert {c["p"] for c in cmps.values()} == {"sensor", "binary_sensor", "event"}
        for topic, kind in [
            (f"{base}/front/count/person", "count"),
            (f"{base}/front/count/car", "count"),
            (f"{base}/front/occupancy", "occupancy"),
            (f"{base}/front/pose/pose", "pose"),
            (f"{base}/front/det/detections", "detections"),
            (f"{base}/front/pose/detections", "detections"),
            (f"{base}/front/stats", "stats"),
        ]:
            got = col.on(topic)
            assert got, topic
            for m in got:
                validate(m.json(), kind)
        assert [m.json()["seq"] for m in col.on(f"{base}/front/det/detections")] == list(range(10))
        assert col.last(f"{base}/front/occupancy").json()["occupied"] is True
        assert col.last(f"{base}/front/pose/pose").json()["event_type"] == "standing"
        # No 'sports ball' count: only the configured count labels get topics.
        assert not col.on(f"{base}/front/count/sports_ball")
        # State is retained: a late subscriber gets it at once.
        async with Collector(broker.port, [f"{base}/front/count/+"]) as late:
            await late.wait_for(lambda c: len(c.messages) >= 2, what="retained counts")
            assert all(m.retain for m in late.messages)
        # Every state topic points at an existing state topic of the discovery config.
        for c in cmps.values():
            if c["p"] != "event":
                assert col.on(c["state_topic"]), c["state_topic"]

    run_async(main())


def test_counts_are_published_on_change_not_per_frame(broker: Mosquitto):
    """A steady count is sent once (plus heartbeats); a change is sent; flicker is damped."""
    pfx = prefix()
    topic = f"{pfx}/box/front/count/person"

    async def main() -> None:
        sink = MqttSink(config(broker.url, pfx, state_min_interval_s=0.5, heartbeat_s=60), TOPOLOGY)
        async with Collector(broker.port, [topic]) as col:
            await sink.start()
            await feed(sink, range(30), persons=1, period=0.02)  # 30 frames, same count
            await feed(sink, range(30, 60), persons=3, period=0.02)  # a real change
            for seq in range(60, 80):  # flicker 3/4/3/4... ending on 3
                await sink.emit(det_event(seq, 3 if seq % 2 else 4))
                await asyncio.sleep(0.01)
            await asyncio.sleep(1.0)
            await sink.close()
        counts = [m.json()["count"] for m in col.on(topic)]
        assert counts[0] == 1
        assert counts[-1] == 3
        assert len(counts) <= 4, counts  # not one message per frame (80 frames)

    run_async(main())


def test_clean_close_publishes_offline_and_killed_process_gets_last_will(broker: Mosquitto):
    """close() publishes 'offline'; SIGKILL leaves it to the broker's last will."""
    pfx = prefix()
    topic = f"{pfx}/k/availability"
    script = (
        "import asyncio, sys\n"
        "from edgeyolo.sinks.mqtt import MqttSink\n"
        "from edgeyolo.config.mqtt import MqttConfig\n"
        "async def main():\n"
        "    cfg = MqttConfig.model_validate({'url': sys.argv[1], 'prefix': sys.argv[2],\n"
        "                                     'device_id': 'k', 'discovery': {'enabled': False}})\n"
        "    sink = MqttSink(cfg, [])\n"
        "    await sink.start()\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )

    async def main() -> None:
        async with Collector(broker.port, [topic]) as col:
            proc = subprocess.Popen(  # noqa: ASYNC220 - starting it is instant
                [sys.executable, "-c", script, broker.url, pfx],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                await col.wait_for(lambda c: bool(c.on(topic)), 30, "online")
                assert col.last(topic).payload == b"online"
                os.kill(proc.pid, signal.SIGKILL)
                await col.wait_for(
                    lambda c: c.last(topic).payload == b"offline", 10, "last will 'offline'"
                )
            finally:
                proc.kill()
                proc.wait()
        async with Collector(broker.port, [topic]) as late:
            await late.wait_for(lambda c: bool(c.messages), what="retained will")
            assert late.messages[0].payload == b"offline"
            assert late.messages[0].retain

    run_async(main())


def test_broker_restart_reconnects_republishes_and_continues_sequence(tmp_path: Path):
    """Stop mosquitto for 5 s mid-run: the sink keeps going, reconnects, re-announces, and
    the events after reconnect continue the frame sequence; the latest state arrives.

    The subscriber keeps a persistent session on a persistent broker, so nothing the sink got
    through is missed because the subscriber reconnected after the sink did."""
    broker = Mosquitto(tmp_path / "b", persistent=True)
    broker.start()
    pfx = prefix()
    base = f"{pfx}/box"
    stream = f"{base}/front/det/detections"
    outage_s = 5.0

    async def main() -> dict[str, Any]:
        # The defaults (backoff, interval, outbox): the outage numbers in the note are theirs.
        defaults = {"backoff": {"initial_s": 0.5, "max_s": 30.0}, "state_min_interval_s": 1.0}
        sink = MqttSink(config(broker.url, pfx, **defaults), TOPOLOGY)
        subs = [f"{pfx}/#", f"{pfx}-ha/#"]
        who = f"{pfx}-subscriber"
        async with Collector(broker.port, subs, identifier=who, persistent_session=True) as before:
            await sink.start()
            await feed(sink, range(30), persons=1)
            await before.wait_for(lambda c: len(c.on(stream)) >= 25, what="stream before outage")
        broker.stop()
        stopped_at = time.monotonic()
        # Keep producing through the outage: 15 fps, the count changes in the middle.
        outage = asyncio.create_task(feed(sink, range(30, 30 + int(outage_s * 15)), persons=2))
        await asyncio.sleep(outage_s - (time.monotonic() - stopped_at))
        broker.start()
        async with Collector(broker.port, subs, identifier=who, persistent_session=True) as after:
            await outage
            last_seq = 30 + int(outage_s * 15) + 15
            await feed(sink, range(30 + int(outage_s * 15), last_seq), persons=2)
            await after.wait_for(
                lambda c: any(m.json()["seq"] == last_seq - 1 for m in c.on(stream)),
                20,
                "the last frame after reconnect",
            )
            await after.wait_for(
                lambda c: (
                    c.last(f"{base}/front/count/person") is not None
                    and c.last(f"{base}/front/count/person").json()["count"] == 2
                ),
                what="latest count state",
            )
            stats = sink.stats()
            await sink.close()
        assert stats.reconnects >= 1
        assert stats.connected
        # The broker's shutdown fires the sink's last will ("offline", queued for the subscriber);
        # after reconnecting the sink says "online" again; close() ends with "offline".
        availability = [m.payload for m in after.on(f"{base}/availability")]
        assert b"online" in availability[:-1], availability
        assert after.on(f"{pfx}-ha/device/box/config"), "discovery re-published"
        seq_before = [m.json()["seq"] for m in before.on(stream)]
        seq_after = [m.json()["seq"] for m in after.on(stream)]
        assert seq_after == sorted(seq_after), "order kept"
        assert seq_after[0] > seq_before[-1] - 1
        received = set(seq_before) | set(seq_after)
        lost = sorted(set(range(last_seq)) - received)
        return {"lost": lost, "reconnects": stats.reconnects}

    try:
        result = run_async(main(), timeout=90)
    finally:
        broker.stop()
    # With the defaults (outbox 1000) nothing buffered during the outage is dropped; what can
    # be lost is QoS 0 stream messages written into the socket as the broker went down.
    print(f"\nbroker outage {outage_s}s: stream messages lost {len(result['lost'])}: {result}")
    assert len(result["lost"]) <= 5


def test_outbox_bound_holds_and_drops_are_counted_and_logged(tmp_path: Path):
    """With the broker away the outbox never exceeds its size; drops show in stats and logs;
    the latest state still arrives once the broker is back."""
    port = free_port()
    broker = Mosquitto(tmp_path / "b", port=port)
    pfx = prefix()
    url = f"mqtt://{HOST}:{port}"

    async def main() -> None:
        sink = MqttSink(config(url, pfx, outbox={"size": 50}), TOPOLOGY)
        with structlog.testing.capture_logs() as logs:
            await sink.start()
            for seq in range(400):
                await sink.emit(det_event(seq, seq % 3))
                assert len(sink._outbox) <= 50
                if seq % 50 == 0:
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            stats = sink.stats()
            assert not stats.connected
            assert stats.outbox <= 50
            assert stats.dropped >= 400 - 50
            assert any(e["event"] == "mqtt outbox full, messages dropped" for e in logs)
            broker.start()
            async with Collector(port, [f"{pfx}/box/front/count/person"]) as col:
                await col.wait_for(
                    lambda c: (
                        c.last(f"{pfx}/box/front/count/person") is not None
                        and c.last(f"{pfx}/box/front/count/person").json()["seq"] == 399
                    ),
                    20,
                    "the latest state after the broker came up",
                )
            await sink.close()

    try:
        run_async(main())
    finally:
        broker.stop()


def test_wrong_credentials_and_unreachable_broker_retry_with_clear_logs(tmp_path: Path):
    """Refused credentials and a closed port are logged per attempt and retried, not fatal;
    the password never appears in any log line."""
    broker = Mosquitto(tmp_path / "b", users={"edge": "right-pw"})
    broker.start()
    closed = free_port()

    async def attempts(cfg: MqttConfig) -> list[dict[str, Any]]:
        sink = MqttSink(cfg, TOPOLOGY)
        with structlog.testing.capture_logs() as logs:
            await sink.start()
            await sink.emit(det_event(0, 1))
            await asyncio.sleep(1.5)
            assert not sink.stats().connected
            await sink.close()
        return logs

    async def main() -> None:
        wrong = config(broker.url, prefix(), username="edge", password="wrong-pw-123")  # noqa: S106
        logs = await attempts(wrong)
        failed = [e for e in logs if e["event"] == "mqtt connect failed"]
        assert len(failed) >= 2, logs
        assert "credentials" in failed[0]["hint"]
        assert "wrong-pw-123" not in repr(logs)
        logs = await attempts(config(f"mqtt://{HOST}:{closed}", prefix()))
        failed = [e for e in logs if e["event"] == "mqtt connect failed"]
        assert len(failed) >= 2, logs
        assert [e["attempt"] for e in failed[:2]] == [1, 2]
        assert "reachable" in failed[0]["hint"]
        # The right password in the url works.
        right = config(f"mqtt://edge:right-pw@{HOST}:{broker.port}", pfx := prefix())
        sink = MqttSink(right, TOPOLOGY)
        async with Collector(
            broker.port,
            [f"{pfx}/#"],
            username="edge",
            password="right-pw",  # noqa: S106
        ) as col:
            await sink.start()
            assert "right-pw" not in sink.subscriber_url
            await col.wait_for(lambda c: bool(c.on(f"{pfx}/box/availability")), what="online")
            await sink.close()

    try:
        run_async(main())
    finally:
        broker.stop()


def test_names_with_wildcards_are_sanitized_on_the_wire(broker: Mosquitto):
    """Camera, model and label names with '#', '+', '/' become safe topic levels."""
    pfx = prefix()
    topo = [Route("front/door #1", "det+v2", "detect", ("person", "a/b+c#"))]

    async def main() -> None:
        sink = MqttSink(config(broker.url, pfx, count_labels=["person", "a/b+c#"]), topo)
        async with Collector(broker.port, [f"{pfx}/#", f"{pfx}-ha/#"]) as col:
            await sink.start()
            ev = DetectionEvent(
                "front/door #1", "det+v2", "detect", 1, time.time(), 64, 48,
                (Detection((1, 1, 5, 5), 0.9, 1, "a/b+c#"),),
            )  # fmt: skip
            await sink.emit(ev)
            await col.wait_for(lambda c: len(c.messages) >= 5, what="messages")
            await sink.close()
        topics = {m.topic for m in col.messages}
        assert f"{pfx}/box/front_door_1/det_v2/detections" in topics
        assert f"{pfx}/box/front_door_1/count/a_b_c_" in topics
        for t in topics:
            assert "+" not in t
            assert "#" not in t
            assert "\x00" not in t
        # The payload keeps the real names.
        m = next(m for m in col.messages if m.topic.endswith("/count/a_b_c_"))
        assert m.json()["label"] == "a/b+c#"
        assert m.json()["camera"] == "front/door #1"

    run_async(main())


# paho-mqtt 2.2 leaves the socket of a failed TLS handshake for the garbage collector (its
# _ssl_wrap_socket does not close it); the sink retries such failures, so each leaves one.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore:Exception ignored in. <ssl.SSLSocket")
def test_tls_with_a_test_ca(tmp_path: Path):
    """mqtts:// to a mosquitto with a test CA: verified connection, publishes arrive."""
    tls = TlsFiles.make(tmp_path / "tls")
    broker = Mosquitto(tmp_path / "b", tls=tls)
    broker.start()
    pfx = prefix()

    async def main() -> None:
        cfg = config(broker.url, pfx, tls={"ca": str(tls.ca)})
        sink = MqttSink(cfg, TOPOLOGY)
        async with Collector(broker.port, [f"{pfx}/#"], tls=tls) as col:
            await sink.start()
            await feed(sink, range(3), persons=1)
            await col.wait_for(
                lambda c: len(c.on(f"{pfx}/box/front/det/detections")) == 3, what="over TLS"
            )
            await sink.close()
        # Without the CA the broker is not trusted: a clear TLS error, retried.
        sink = MqttSink(config(broker.url, prefix()), TOPOLOGY)
        with structlog.testing.capture_logs() as logs:
            await sink.start()
            await asyncio.sleep(0.8)
            await sink.close()
        failed = [e for e in logs if e["event"] == "mqtt connect failed"]
        assert failed
        assert "certificate" in failed[0]["error"].lower()
        # insecure: encrypted without verifying (self-signed brokers).
        sink = MqttSink(config(broker.url, pfx2 := prefix(), tls={"insecure": True}), TOPOLOGY)
        async with Collector(broker.port, [f"{pfx2}/#"], tls=tls) as col:
            await sink.start()
            await col.wait_for(lambda c: bool(c.on(f"{pfx2}/box/availability")), what="online")
            await sink.close()

    try:
        run_async(main())
    finally:
        gc.collect()  # let the leaked sockets' warnings fire under this test's filters
        broker.stop()


def test_home_assistant_birth_resends_discovery(broker: Mosquitto):
    """'online' on Home Assistant's status topic makes the sink publish discovery again."""
    pfx = prefix()
    disc = f"{pfx}-ha/device/box/config"

    async def main() -> None:
        sink = MqttSink(config(broker.url, pfx), TOPOLOGY)
        async with Collector(broker.port, [disc]) as col:
            await sink.start()
            await col.wait_for(lambda c: len(c.on(disc)) == 1, what="first discovery")
            import aiomqtt

            async with aiomqtt.Client(HOST, broker.port) as ha:
                await ha.publish(f"{pfx}-ha/status", b"online", qos=1)
            await col.wait_for(lambda c: len(c.on(disc)) == 2, what="discovery re-sent")
            await sink.close()
        assert json.loads(col.on(disc)[1].payload) == json.loads(col.on(disc)[0].payload)

    run_async(main())


def test_embedded_broker_serves_subscribers(tmp_path: Path):
    """url 'embedded' starts an in-process broker; subscriber_url reaches it; closing the
    sink stops the broker within its time limit even with a subscriber still connected."""
    pfx = prefix()

    async def main() -> None:
        sink = MqttSink(config("embedded", pfx, embedded_port=0), TOPOLOGY)
        await sink.start()
        url = sink.subscriber_url
        assert url.startswith(f"mqtt://{HOST}:")
        port = int(url.rsplit(":", 1)[1])
        async with Collector(port, [f"{pfx}/#"]) as col:
            await col.wait_for(
                lambda c: bool(c.on(f"{pfx}/box/availability")), what="retained online"
            )
            await feed(sink, range(5), persons=1)
            await col.wait_for(
                lambda c: len(c.on(f"{pfx}/box/front/det/detections")) == 5, what="stream"
            )
            await col.wait_for(lambda c: bool(c.on(f"{pfx}/box/front/count/person")), what="count")
            t = time.monotonic()
            await sink.close()
            assert time.monotonic() - t < 6.0
        # Nothing listens on the port any more.
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((HOST, port))

    run_async(main())


def mqtt_samples(m: Metrics) -> dict[str, float]:
    text = m.exposition().decode()
    return {
        s.name: s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name.startswith("edgeyolo_mqtt_")
    }


def test_metrics_read_the_sink_when_scraped(broker: Mosquitto):
    """A scrape and the health judgement read the sink's live stats (no task copies them);
    the time since the link went down comes from the link."""
    pfx = prefix()

    async def main() -> None:
        sink = MqttSink(config(broker.url, pfx), TOPOLOGY)
        m = Metrics(process=False)
        m.watch_mqtt(sink)
        assert mqtt_samples(m)["edgeyolo_mqtt_connected"] == 0
        await sink.start()
        await feed(sink, range(5), persons=1)
        deadline = time.monotonic() + 10
        while not (sink.stats().connected and sink.stats().outbox == 0):
            assert time.monotonic() < deadline, sink.stats()
            await asyncio.sleep(0.05)
        live = mqtt_samples(m)
        assert live["edgeyolo_mqtt_connected"] == 1
        assert live["edgeyolo_mqtt_outbox_messages"] == 0
        assert live["edgeyolo_mqtt_published_total"] == sink.stats().published >= 10
        assert m.mqtt_ok(time.monotonic() + 3600, 10, 1000)  # connected: no time limit
        await sink.close()
        after = mqtt_samples(m)
        assert after["edgeyolo_mqtt_connected"] == 0
        assert after["edgeyolo_mqtt_published_total"] == sink.stats().published
        down = sink.down_since
        assert down is not None
        assert m.mqtt_ok(down + 9, 10, 1000)
        ok, detail = m.health(down + 11, 10, [], [], m.mqtt_ok(down + 11, 10, 1000))
        assert not ok
        assert detail["mqtt"]["down_s"] == 11.0
        assert detail["mqtt"]["connected"] is False

    run_async(main())
