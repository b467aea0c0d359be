"""``edgeyolo bench mqtt``: MQTT delivery latency, messages per second per topic, outage loss.

Runs ``python -m edgeyolo run --loop`` on a config (default: the bundled demo; JSON lines to a
file as the ground truth of what was emitted) publishing to a mosquitto it starts on a free port
on loopback (or to the embedded broker with --broker embedded), subscribes to everything,
and prints:

- capture -> subscriber latency of the per-frame stream (median, p99), and the MQTT share of
  it: event creation (capture + the event's latency_ms) -> subscriber;
- messages per second per topic with the default MQTT settings, over the steady part;
- with --outage S (mosquitto only): the broker is stopped for S seconds mid-run and started
  again; stream events emitted vs received across it, and whether the latest count state
  and availability/discovery came back.

Example: edgeyolo bench mqtt --seconds 30 --outage 5
Needs mosquitto (apt-get install mosquitto) unless --broker embedded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from edgeyolo.benchmarks.common import free_port, percentile
from edgeyolo.errors import EdgeYoloError

# (arrival time, topic, payload, retained)
Message = tuple[float, str, bytes, bool]


def start_mosquitto(folder: Path, port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    conf = folder / "mosquitto.conf"
    lines = [f"listener {port} 127.0.0.1", "allow_anonymous true", "persistence false"]
    conf.write_text("\n".join([*lines, "user root"]) + "\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc


def wait_port(port: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
        except OSError:
            time.sleep(0.1)
        else:
            return
    raise EdgeYoloError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class Recorder:
    """Every message on '#' with its arrival time; survives a broker restart by reconnecting."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.messages: list[Message] = []
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        import aiomqtt  # noqa: PLC0415 - keeps `edgeyolo --help` fast

        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", self.port) as c:
                    await c.subscribe("#", qos=1)
                    async for m in c.messages:
                        payload = m.payload if isinstance(m.payload, bytes) else b""
                        self.messages.append((time.time(), str(m.topic), payload, m.retain))
            except aiomqtt.MqttError:
                await asyncio.sleep(0.05)


def main(args: argparse.Namespace) -> int:
    """Run the measurement and print its JSON report."""
    tmp = Path(tempfile.mkdtemp(prefix="mqtt-bench-"))
    port = free_port()
    embedded = args.broker != "mosquitto"
    cfg, events = bench_config(args.config, tmp, port, embedded=embedded)
    broker = None if embedded else start_mosquitto(tmp, port)
    report, messages, t_end_steady = asyncio.run(measure(args, tmp, port, broker, cfg))
    summarize(report, messages, t_end_steady, args.warmup, events)
    print(json.dumps(report, indent=2))
    return 0


def bench_config(config: Path, tmp: Path, port: int, *, embedded: bool) -> tuple[Path, Path]:
    """A copy of ``config`` in ``tmp`` with absolute paths, events to a file, MQTT on ``port``."""
    data = yaml.safe_load(config.read_text())
    base = config.resolve().parent
    for cam in data["cameras"]:
        if isinstance(cam["source"], str) and not Path(cam["source"]).is_absolute():
            cam["source"] = str((base / cam["source"]).resolve())
    for m in data["models"]:
        m["path"] = str((base / m["path"]).resolve())
    events = tmp / "events.jsonl"
    data.setdefault("sinks", {})["jsonl"] = {"enabled": True, "path": str(events)}
    mqtt: dict[str, Any] = {"device_id": "bench"}
    mqtt.update(
        {"url": "embedded", "embedded_port": port}
        if embedded
        else {"url": f"mqtt://127.0.0.1:{port}"}
    )
    data["sinks"]["mqtt"] = mqtt
    cfg = tmp / "config.yaml"
    cfg.write_text(yaml.safe_dump(data))
    return cfg, events


async def measure(
    args: argparse.Namespace,
    tmp: Path,
    port: int,
    broker: subprocess.Popen[bytes] | None,
    cfg: Path,
) -> tuple[dict[str, Any], list[Message], float]:
    """Run the service and a subscriber: the report so far, every message, end of steady."""
    log = (tmp / "service.log").open("wb")
    cmd = [
        sys.executable,
        "-m",
        "edgeyolo",
        "run",
        "-c",
        str(cfg),
        "--loop",
        "--log-format",
        "json",
    ]
    svc = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block
        cmd, stdout=subprocess.DEVNULL, stderr=log
    )
    report: dict[str, Any] = {"broker": args.broker, "folder": str(tmp)}
    rec = Recorder(port)
    try:
        wait_port(port)
        rec.task = asyncio.create_task(rec.run())
        await asyncio.sleep(args.warmup + args.seconds)
        t_end_steady = time.time()
        if args.outage and broker:
            broker.send_signal(signal.SIGTERM)
            broker.wait(10)
            t_down = time.time()
            await asyncio.sleep(args.outage)
            broker = start_mosquitto(tmp, port)
            t_up = time.time()
            await asyncio.sleep(10.0)
            report["outage"] = {"down_at": t_down, "up_at": t_up}
    finally:
        svc.send_signal(signal.SIGTERM)
        svc.wait(60)
        await asyncio.sleep(0.5)
        if rec.task:
            rec.task.cancel()
        if broker:
            broker.send_signal(signal.SIGTERM)
            broker.wait(10)

    return report, rec.messages, t_end_steady


def summarize(
    report: dict[str, Any],
    messages: list[Message],
    t_end_steady: float,
    warmup: float,
    events: Path,
) -> None:
    """Add rates, latencies and (after an outage) losses to ``report``."""
    live = [(t, topic, p) for t, topic, p, retained in messages if not retained]
    t0 = live[0][0] + warmup
    steady = [m for m in live if t0 <= m[0] <= t_end_steady]
    span = steady[-1][0] - steady[0][0]
    per_topic: dict[str, int] = {}
    for _, topic, _ in steady:
        per_topic[topic] = per_topic.get(topic, 0) + 1
    report["steady_s"] = round(span, 1)
    report["messages_per_s"] = {k: round(v / span, 2) for k, v in sorted(per_topic.items())}
    report["messages_per_s_total"] = round(len(steady) / span, 2)
    stream = [(t, json.loads(p)) for t, topic, p in steady if topic.endswith("/detections")]
    lat = [(t - e["timestamp"]) * 1e3 for t, e in stream]
    own = [(t - e["timestamp"]) * 1e3 - e["latency_ms"] for t, e in stream]
    report["capture_to_subscriber_ms"] = {
        "median": round(statistics.median(lat), 1),
        "p99": round(percentile(lat, 0.99), 1),
        "n": len(lat),
    }
    report["event_to_subscriber_ms"] = {
        "median": round(statistics.median(own), 2),
        "p99": round(percentile(own, 0.99), 2),
    }
    if "outage" in report:
        down, up = report["outage"]["down_at"], report["outage"]["up_at"]
        emitted = [json.loads(line) for line in events.read_text().splitlines()]
        emitted = [e for e in emitted if e["type"] == "detections"]
        window = {
            (e["model"], e["seq"]) for e in emitted if down - 2.0 <= e["timestamp"] <= up + 2.0
        }
        got = {
            (e["model"], e["seq"])
            for _, topic, p in live
            if topic.endswith("/detections")
            for e in [json.loads(p)]
        }
        lost = sorted(window - got)
        after = [(t, topic, p) for t, topic, p, _r in messages if t >= up]
        report["outage"].update(
            {
                "seconds": round(up - down, 2),
                "stream_events_emitted": len(window),
                "stream_events_lost": len(lost),
                "lost": lost[:20],
                "availability_after": next(
                    (p.decode() for _, t, p in after if t.endswith("/availability")), None
                ),
                "discovery_after": any(t.startswith("homeassistant/") for _, t, _ in after),
                "count_state_after": any("/count/" in t for _, t, _ in after),
            }
        )
