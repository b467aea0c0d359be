"""The MQTT sink against a real mosquitto when things go wrong (issue 10 items 7-10):
a message the client refuses, two services with one device id, a stale last will, a paused
process, mqtts:// on a plain port, missing TLS files."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest
import structlog
import yaml

from conftest import DEMO_VIDEO, MODELS
from edgeyolo.config import parse_config
from edgeyolo.config.load import ConfigValidationError
from edgeyolo.config.mqtt import MqttConfig
from edgeyolo.events import Detection, DetectionEvent
from edgeyolo.sinks.mqtt import MqttSink
from edgeyolo.sinks.topics import Route
from helpers import run_async, run_cli, start_cli
from mosquitto import HOST, Collector, Mosquitto

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.mqtt


def _config(url: str, pfx: str, **kw: Any) -> MqttConfig:
    return MqttConfig.model_validate(
        {
            "url": url,
            "prefix": pfx,
            "device_id": "box",
            "discovery": {"prefix": f"{pfx}-ha", "status_topic": f"{pfx}-ha/status"},
            "state_min_interval_s": 0.1,
            "backoff": {"initial_s": 0.1, "max_s": 0.5},
            **kw,
        }
    )


def _det(camera: str, seq: int, persons: int) -> DetectionEvent:
    people = tuple(
        Detection((10.0 + i, 20.0, 110.0, 220.0), 0.9, 0, "person") for i in range(persons)
    )
    return DetectionEvent(camera, "det", "detect", seq, time.time(), 640, 480, people, 10.0)


def _pfx() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


def test_topic_too_long_is_a_config_error(tmp_path: Path):
    """A camera name that makes a topic longer than 65,535 bytes is refused at config time,
    naming the camera (shortened) and the limit."""
    raw = {
        "cameras": [{"name": "x" * 70000, "source": str(DEMO_VIDEO)}],
        "models": [{"name": "d", "path": str(MODELS / "edgeyolo-demo-det.onnx"), "task": "detect"}],
        "sinks": {"mqtt": {"url": "mqtt://127.0.0.1:1"}},
    }
    with pytest.raises(ConfigValidationError) as err:
        parse_config(raw, tmp_path / "c.yaml")
    text = str(err.value)
    assert "cameras[0].name = 'xxxxxxxx" in text
    assert "65,535" in text
    assert len(text) < 600  # the 70,000 characters are not echoed
    raw["cameras"][0]["name"] = "x" * 60000
    assert parse_config(raw, tmp_path / "c.yaml").cameras[0].name == "x" * 60000


def test_refused_message_is_dropped_and_counted_not_retried(broker: Mosquitto):
    """A camera whose topics the client refuses blocks nothing behind it: the other camera's
    state arrives, the refused messages are counted as dropped, no reconnect happens."""
    pfx = _pfx()
    huge = "y" * 66000
    routes = [Route(huge, "det", "detect", ("person",)), Route("ok", "det", "detect", ("person",))]

    async def main() -> None:
        sink = MqttSink(_config(broker.url, pfx), routes)
        async with Collector(broker.port, [f"{pfx}/box/ok/count/person"]) as col:
            await sink.start()
            for seq in range(5):
                await sink.emit(_det(huge, seq, 1))
                await sink.emit(_det("ok", seq, 2))
                await asyncio.sleep(0.05)
            await col.wait_for(lambda c: bool(c.messages), what="the good camera's count")
            assert col.messages[-1].json()["count"] == 2
            stats = sink.stats()
            await sink.close()
        assert stats.dropped >= 2  # its discovery and its count at least
        assert stats.reconnects == 0
        assert stats.connected

    run_async(main(), 30)


def test_stale_offline_of_this_service_is_corrected(broker: Mosquitto):
    """An 'offline' on the service's availability topic while it is connected (the will of a
    connection the broker dropped after a reconnect took the client id over) is followed at
    once by a new retained 'online'."""
    pfx = _pfx()
    topic = f"{pfx}/box/availability"

    async def main() -> None:
        sink = MqttSink(_config(broker.url, pfx), [Route("c", "det", "detect", ("person",))])
        async with Collector(broker.port, [topic]) as col:
            await sink.start()
            await col.wait_for(lambda c: bool(c.messages), what="online")
            async with Collector(broker.port, [], identifier="stale-will") as other:
                assert other._client is not None
                await other._client.publish(topic, b"offline", qos=1, retain=True)
            await col.wait_for(
                lambda c: [m.payload for m in c.messages][-2:] == [b"offline", b"online"],
                what="online again after the stale offline",
            )
            await sink.close()
        async with Collector(broker.port, [topic]) as late:
            await late.wait_for(lambda c: bool(c.messages), what="retained availability")
            assert late.messages[-1].payload == b"offline"  # the clean stop's, not stale

    run_async(main(), 30)


def test_two_services_with_one_device_id_are_named(broker: Mosquitto):
    """Two sinks with the same device id kick each other off: each logs a clear error naming
    the device id and the fix, and backs off instead of flapping at full speed."""
    pfx = _pfx()
    routes = [Route("c", "det", "detect", ("person",))]

    async def main() -> list[dict[str, Any]]:
        with structlog.testing.capture_logs() as logs:
            a = MqttSink(_config(broker.url, pfx), routes)
            b = MqttSink(_config(broker.url, pfx), routes)
            await a.start()
            await asyncio.sleep(0.5)
            await b.start()
            deadline = time.monotonic() + 25
            while time.monotonic() < deadline:
                if len([e for e in logs if "same client id" in e["event"]]) >= 1:
                    break
                await asyncio.sleep(0.2)
            reconnects = a.stats().reconnects + b.stats().reconnects
            await a.close()
            await b.close()
        assert reconnects < 30
        return logs

    logs = run_async(main(), 60)
    kicked = [e for e in logs if "same client id" in e["event"]]
    assert kicked, [e["event"] for e in logs]
    assert kicked[0]["device_id"] == "box"
    assert kicked[0]["client_id"] == "edgeyolo-box"
    assert "device_id" in kicked[0]["fix"]


# paho leaves the socket of a failed TLS handshake to the garbage collector (not ours to fix).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_mqtts_on_a_plain_port_says_so(broker: Mosquitto):
    """mqtts:// against a listener without TLS: the hint says the port may not speak TLS."""
    pfx = _pfx()

    async def main() -> list[dict[str, Any]]:
        with structlog.testing.capture_logs() as logs:
            cfg = _config(f"mqtts://{HOST}:{broker.port}", pfx, tls={"insecure": True})
            sink = MqttSink(cfg, [])
            await sink.start()
            deadline = time.monotonic() + 15
            while not any(e["event"] == "mqtt connect failed" for e in logs):
                assert time.monotonic() < deadline, logs
                await asyncio.sleep(0.1)
            await sink.close()
        return logs

    failed = [e for e in run_async(main(), 30) if e["event"] == "mqtt connect failed"]
    assert "may not speak TLS on this port" in failed[0]["hint"]


def test_missing_tls_files_fail_check_config(tmp_path: Path):
    """check-config names a missing tls.ca (and an unloadable one)."""
    raw = {
        "cameras": [{"name": "c", "source": str(DEMO_VIDEO)}],
        "models": [{"name": "d", "path": str(MODELS / "edgeyolo-demo-det.onnx"), "task": "detect"}],
        "sinks": {
            "mqtt": {"url": "mqtts://127.0.0.1:8883", "tls": {"ca": str(tmp_path / "ca.pem")}}
        },
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    res = run_cli("check-config", "--no-models", str(path))
    assert res.returncode == 1
    assert f"sinks.mqtt.tls.ca = '{tmp_path / 'ca.pem'}': no such file" in res.stderr
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    res = run_cli("check-config", "--no-models", str(path))
    assert res.returncode == 1
    assert "sinks.mqtt.tls: cannot load the TLS files" in res.stderr


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_paused_process_reconnects_cleanly(tmp_path: Path, broker: Mosquitto):
    """SIGSTOP past the keepalive, then SIGCONT: the service reconnects with no traceback,
    no 'is the broker running?' hint, and ends 'online'."""
    pfx = _pfx()
    raw = {
        "backend": "onnxruntime",
        "cameras": [{"name": "c", "source": str(DEMO_VIDEO), "fps": 3, "loop": True}],
        "models": [
            {"name": "d", "path": str(MODELS / "edgeyolo-demo-det-int8.onnx"), "task": "detect"}
        ],
        "logging": {"format": "json", "frame_sample": 0},
        "sinks": {
            "jsonl": {"enabled": False},
            "mqtt": {
                "url": broker.url,
                "prefix": pfx,
                "device_id": "box",
                "keepalive_s": 5,
                "backoff": {"initial_s": 0.2, "max_s": 1.0},
                "discovery": {"enabled": False},
            },
        },
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    log = tmp_path / "run.log"
    proc = start_cli("run", "-c", str(path), log=log)

    def connected() -> int:
        return log.read_text().count('"mqtt connected"')

    try:
        deadline = time.monotonic() + 60
        while connected() < 1:
            assert time.monotonic() < deadline, log.read_text()
            assert proc.poll() is None, log.read_text()
            time.sleep(0.2)
        proc.send_signal(signal.SIGSTOP)
        time.sleep(12)  # mosquitto drops a client silent for 1.5 x keepalive
        proc.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 60
        while connected() < 2:
            assert time.monotonic() < deadline, log.read_text()
            assert proc.poll() is None, log.read_text()
            time.sleep(0.2)
        time.sleep(2)

        async def availability() -> bytes:
            async with Collector(broker.port, [f"{pfx}/box/availability"]) as c:
                await c.wait_for(lambda c: bool(c.messages))
                return c.messages[-1].payload

        assert run_async(availability(), 20) == b"online"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    text = log.read_text()
    assert proc.returncode == 0
    assert "Traceback" not in text
    assert "Exception in callback" not in text
    assert "is the broker running" not in text
    for line in text.splitlines():
        json.loads(line)  # every line is a structured log line
