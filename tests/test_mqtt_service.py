"""`edgeyolo run` on the demo video publishing to a real mosquitto, read by real subscribers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from conftest import DEMO_VIDEO, DET, POSE, REPO, edgeyolo_cmd
from helpers import run_async, run_cli
from mosquitto import HOST, Collector, Mosquitto, free_port, validate

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]


def write_config(tmp_path: Path, pfx: str, url: str, **mqtt: Any) -> Path:
    """The demo video with one detection and one pose model, MQTT under a unique prefix."""
    data = {
        "cameras": [{"name": "demo", "source": str(DEMO_VIDEO)}],
        "models": [
            {"name": "det", "path": str(DET), "task": "detect"},
            {"name": "pose", "path": str(POSE), "task": "pose"},
        ],
        "logging": {"frame_sample": 0, "summary_interval_s": 2},
        "sinks": {
            "jsonl": {"enabled": True, "path": "-"},
            "mqtt": {
                "url": url,
                "prefix": pfx,
                "device_id": "svc",
                "discovery": {"prefix": f"{pfx}-ha", "status_topic": f"{pfx}-ha/status"},
                "backoff": {"initial_s": 0.2, "max_s": 1.0},
                **mqtt,
            },
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class Service:
    """`edgeyolo run --loop` as a subprocess; stdout (events) and stderr (logs) to files."""

    def __init__(self, tmp_path: Path, config: Path, *extra: str) -> None:
        self.out = tmp_path / "stdout.jsonl"
        self.err = tmp_path / "stderr.log"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                edgeyolo_cmd("run", "-c", str(config), "--loop", "--log-format", "json", *extra),
                stdout=out,
                stderr=err,
                cwd=REPO,
            )

    def logs(self) -> str:
        return self.err.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"edgeyolo run did not stop within {timeout}s:\n{self.logs()[-3000:]}")


def new_prefix() -> str:
    return f"svc-{uuid.uuid4().hex[:8]}"


def test_service_publishes_state_events_and_offline(tmp_path: Path, broker: Mosquitto):
    """The service (pointed at the broker with --mqtt-url) publishes availability, discovery,
    counts, occupancy, pose events and the stream, all valid; SIGTERM publishes 'offline'."""
    pfx = new_prefix()
    base = f"{pfx}/svc/demo"
    # The configured url is a closed port: --mqtt-url must win.
    config = write_config(tmp_path, pfx, f"mqtt://{HOST}:{free_port()}")

    async def main() -> tuple[Collector, int]:
        async with Collector(broker.port, [f"{pfx}/#", f"{pfx}-ha/#"]) as col:
            svc = Service(tmp_path, config, "--mqtt-url", broker.url)
            try:
                await col.wait_for(
                    lambda c: (
                        len(c.on(f"{base}/det/detections")) >= 30
                        and bool(c.on(f"{base}/count/person"))
                        and bool(c.on(f"{base}/pose/pose"))
                        and bool(c.on(f"{base}/stats"))
                    ),
                    150,
                    "30 frames of events, counts, pose events and stats",
                )
            except BaseException:
                svc.stop(signal.SIGKILL)
                print(svc.logs()[-3000:])
                raise
            code = svc.stop()
            await col.wait_for(
                lambda c: c.last(f"{pfx}/svc/availability").payload == b"offline",
                10,
                "offline after SIGTERM",
            )
            return col, code

    col, code = run_async(main(), 180)
    assert code == 0
    assert [m.payload for m in col.on(f"{pfx}/svc/availability")] == [b"online", b"offline"]
    disc = col.last(f"{pfx}-ha/device/svc/config")
    assert disc is not None
    assert disc.retain is False  # published live; retained on the broker (checked below)
    kinds = {
        "det/detections": "detections",
        "pose/detections": "detections",
        "count/person": "count",
        "occupancy": "occupancy",
        "pose/pose": "pose",
        "stats": "stats",
    }
    for suffix, kind in kinds.items():
        for m in col.on(f"{base}/{suffix}"):
            validate(m.json(), kind)
    assert col.last(f"{base}/occupancy").json()["occupied"] is True  # walkers in every frame
    seqs = [m.json()["seq"] for m in col.on(f"{base}/det/detections")]
    assert seqs == sorted(seqs)
    # Capture to subscriber delivery, on this machine (shared CPU: informative, not a limit).
    stream = col.on(f"{base}/det/detections")
    lat = sorted((m.at - m.json()["timestamp"]) * 1e3 for m in stream)
    # The sink's own share: from the event's creation (capture + latency_ms) to delivery.
    own = sorted((m.at - m.json()["timestamp"]) * 1e3 - m.json()["latency_ms"] for m in stream)

    def p99(v: list[float]) -> float:
        return v[min(len(v) - 1, round(0.99 * (len(v) - 1)))]

    span = col.messages[-1].at - col.messages[0].at
    rates = {suffix: round(len(col.on(f"{base}/{suffix}")) / span, 2) for suffix in kinds}
    print(
        f"\ncapture->subscriber latency ms: median {statistics.median(lat):.1f} "
        f"p99 {p99(lat):.1f}; event->subscriber (MQTT share) median "
        f"{statistics.median(own):.2f} p99 {p99(own):.2f} (n={len(lat)}); "
        f"messages/s over {span:.1f}s: {rates}"
    )

    async def retained() -> None:
        async with Collector(broker.port, [f"{pfx}-ha/device/svc/config", f"{base}/count/+"]) as c:
            await c.wait_for(lambda c: len(c.messages) >= 2, what="retained discovery and counts")
            assert all(m.retain for m in c.messages)

    run_async(retained(), 20)


def test_service_killed_leaves_last_will_offline(tmp_path: Path, broker: Mosquitto):
    """SIGKILL: no goodbye from the service, the broker publishes the last will 'offline'."""
    pfx = new_prefix()
    avail = f"{pfx}/svc/availability"
    config = write_config(tmp_path, pfx, broker.url)

    async def main() -> None:
        async with Collector(broker.port, [avail]) as col:
            svc = Service(tmp_path, config)
            try:
                await col.wait_for(lambda c: bool(c.on(avail)), 120, "online")
            finally:
                svc.stop(signal.SIGKILL)
            await col.wait_for(lambda c: c.last(avail).payload == b"offline", 10, "last will")

    run_async(main(), 180)


def test_service_survives_broker_restart(tmp_path: Path):
    """mosquitto stops for 5 s mid-run: the service keeps running, reconnects, re-publishes
    availability and discovery, and the stream continues the frame sequence.

    The subscriber keeps a persistent session on a broker with persistence, so every stream
    event that reaches the broker while the subscriber is away is queued for it: what it
    finally holds is exactly what the service got through."""
    broker = Mosquitto(tmp_path / "broker", persistent=True)
    broker.start()
    pfx = new_prefix()
    base = f"{pfx}/svc/demo"
    stream = f"{base}/det/detections"
    config = write_config(tmp_path, pfx, broker.url)
    subs = [f"{pfx}/#", f"{pfx}-ha/#"]
    who = f"{pfx}-subscriber"

    def collector() -> Collector:
        return Collector(broker.port, subs, identifier=who, persistent_session=True)

    async def main() -> tuple[list[int], list[int], Service]:
        svc = Service(tmp_path, config)
        try:
            async with collector() as before:
                await before.wait_for(lambda c: len(c.on(stream)) >= 10, 150, "stream")
            broker.stop()
            await asyncio.sleep(5.0)
            assert svc.proc.poll() is None, "the service died with the broker"
            broker.start()
            async with collector() as after:
                await after.wait_for(
                    lambda c: (
                        len(c.on(stream)) >= 20
                        and c.last(f"{pfx}/svc/availability") is not None
                        and c.last(f"{pfx}/svc/availability").payload == b"online"
                        and bool(c.on(f"{pfx}-ha/device/svc/config"))
                        and bool(c.on(f"{base}/count/person"))
                    ),
                    60,
                    "stream, availability, discovery and counts after the restart",
                )
                assert after.last(f"{pfx}/svc/availability").payload == b"online"
            return (
                [m.json()["seq"] for m in before.on(stream)],
                [m.json()["seq"] for m in after.on(stream)],
                svc,
            )
        finally:
            code = svc.stop()
            broker.stop()
            assert code == 0

    before, after, svc = run_async(main(), 180)
    assert after == sorted(after)
    assert after[0] > before[-1] - 2  # continues the sequence, never starts again
    assert '"mqtt connected"' in svc.logs()
    assert svc.logs().count('"mqtt connect failed"') + svc.logs().count('"mqtt reconnecting"')
    # What the service emitted (its JSON-lines sink) against what the subscriber received:
    # the pipeline itself skips frames when it falls behind, so seq gaps alone prove nothing.
    emitted = [
        e["seq"]
        for e in map(json.loads, svc.out.read_text().splitlines())
        if e["model"] == "det" and before[0] <= e["seq"] <= after[-1]
    ]
    lost = sorted(set(emitted) - set(before) - set(after))
    print(f"\n5 s broker outage: {len(emitted)} stream events emitted, lost {len(lost)}: {lost}")
    # QoS 0 (the stream's default) can lose what was in the socket as the broker died.
    assert len(lost) <= 3


def test_service_with_unreachable_broker_keeps_working(tmp_path: Path):
    """No broker: the service runs on (events on stdout), logs each attempt, stops cleanly."""
    pfx = new_prefix()
    config = write_config(tmp_path, pfx, f"mqtt://{HOST}:{free_port()}")
    svc = Service(tmp_path, config)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and svc.out.stat().st_size < 2000:
        time.sleep(0.5)
    time.sleep(1.5)
    assert svc.proc.poll() is None, svc.logs()[-3000:]
    assert svc.stop() == 0
    logs = svc.logs()
    assert logs.count('"mqtt connect failed"') >= 2, logs[-3000:]
    assert "Connection refused" in logs
    assert svc.out.read_text().count('"type":"detections"') >= 4


def test_remove_discovery_command(tmp_path: Path, broker: Mosquitto):
    """`edgeyolo mqtt remove-discovery` empties the retained discovery config (and state)."""
    pfx = new_prefix()
    config = write_config(tmp_path, pfx, broker.url)
    disc = f"{pfx}-ha/device/svc/config"

    async def seed() -> None:
        import aiomqtt

        async with aiomqtt.Client(HOST, broker.port) as c:
            await c.publish(disc, b'{"dev": {}}', qos=1, retain=True)
            await c.publish(f"{pfx}/svc/demo/count/person", b'{"count": 1}', qos=1, retain=True)

    run_async(seed(), 20)
    res = run_cli(
        "mqtt",
        "remove-discovery",
        "-c",
        str(config),
        "--clear-state",
        timeout=60,
        cwd=REPO,
        env={**os.environ},
    )
    assert res.returncode == 0, res.stderr
    assert f"cleared {disc}" in res.stdout
    assert f"cleared {pfx}/svc/demo/count/person" in res.stdout

    async def check() -> None:
        async with Collector(broker.port, [disc, f"{pfx}/#"]) as c:
            await asyncio.sleep(0.5)
            assert c.messages == []  # nothing retained any more

    run_async(check(), 20)
    # An unreachable broker is a clear error, not a traceback.
    url = f"mqtt://u:secret@{HOST}:{free_port()}"
    res = run_cli(
        "mqtt", "remove-discovery", "-c", str(config), "--mqtt-url", url, "--timeout", "2",
        timeout=60, cwd=REPO,
    )  # fmt: skip
    assert res.returncode == 2
    assert "MQTT broker mqtt://u@127.0.0.1" in res.stderr  # the user, never the password
    assert "Connection refused" in res.stderr
    assert "secret" not in res.stderr
    assert "Traceback" not in res.stderr


def test_bad_mqtt_url_is_a_clear_cli_error(tmp_path: Path):
    """`edgeyolo run --mqtt-url` with a bad url exits 2 naming the option, password masked."""
    config = write_config(tmp_path, new_prefix(), "embedded")
    res = run_cli(
        "run", "-c", str(config), "--mqtt-url", "http://me:hunter2@host:1883", timeout=60, cwd=REPO
    )
    assert res.returncode == 2
    assert "--mqtt-url 'http://me:***@host:1883'" in res.stderr
    assert "scheme 'http'" in res.stderr
    assert "hunter2" not in res.stderr
    assert "Traceback" not in res.stderr
