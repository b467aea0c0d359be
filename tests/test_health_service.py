"""/healthz and /metrics of the running service: cut sources and a stopped broker show up."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from conftest import DEMO_VIDEO, DET, REPO, edgeyolo_cmd
from helpers import short_clip
from mosquitto import Mosquitto, free_port

pytestmark = pytest.mark.slow


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback only
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def wait_for(url: str, want: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    last: tuple[int, bytes] | None = None
    while time.monotonic() < deadline:
        try:
            last = get(url)
        except OSError:
            last = None
        if last is not None and last[0] == want:
            return json.loads(last[1])
        time.sleep(0.2)
    pytest.fail(f"{url} did not answer {want} within {timeout}s; last: {last}")


def start(tmp_path: Path, data: dict) -> tuple[subprocess.Popen[bytes], str]:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(data))
    port = free_port()
    with (tmp_path / "err.log").open("wb") as err:
        proc = subprocess.Popen(
            edgeyolo_cmd(
                "run", "-c", str(cfg), "--http", f"127.0.0.1:{port}", "--log-format", "json"
            ),
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=REPO,
        )
    return proc, f"http://127.0.0.1:{port}"


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.terminate()
    try:
        return proc.wait(30)
    finally:
        proc.kill()


def counter(body: bytes, name: str, **labels: str) -> float:
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    pytest.fail(f"{name}{labels} not in /metrics")


def test_healthz_names_a_camera_that_stopped_and_metrics_move(tmp_path):
    data = {
        "cameras": [
            {"name": "looping", "source": str(DEMO_VIDEO), "loop": True},
            {"name": "short", "source": str(short_clip(tmp_path / "short.avi"))},
        ],
        "models": [{"name": "det", "path": str(DET), "task": "detect"}],
        "http": {"max_age_s": 2.0},
        "sinks": {"jsonl": {"enabled": False}},
    }
    proc, base = start(tmp_path, data)
    try:
        ok = wait_for(f"{base}/healthz", 200)
        assert ok["status"] == "ok"
        assert set(ok["cameras"]) == {"looping", "short"}
        first = get(f"{base}/metrics")[1]
        bad = wait_for(f"{base}/healthz", 503)
        assert bad["unhealthy"] == ["camera:short"]
        assert "no frame for" in bad["cameras"]["short"]["reason"]
        second = get(f"{base}/metrics")[1]
        name = "edgeyolo_frames_captured_total"
        assert counter(second, name, camera="looping") > counter(first, name, camera="looping")
        short = counter(second, name, camera="short")
        # Captured: every frame the camera delivered, processed or dropped.
        assert short == 45
        processed = counter(second, "edgeyolo_e2e_seconds_count", camera="short")
        assert short == processed + counter(second, "edgeyolo_frames_dropped_total", camera="short")
        assert counter(second, "edgeyolo_inference_seconds_count", engine="det") > 0
    finally:
        assert stop(proc) == 0


@pytest.mark.mqtt
def test_healthz_follows_the_broker(tmp_path):
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    data = {
        "cameras": [{"name": "cam", "source": str(DEMO_VIDEO), "loop": True}],
        "models": [{"name": "det", "path": str(DET), "task": "detect"}],
        "http": {"max_age_s": 2.0},
        "sinks": {
            "jsonl": {"enabled": False},
            "mqtt": {
                "url": broker.url,
                "prefix": f"health-{free_port()}",
                "backoff": {"initial_s": 0.2, "max_s": 1.0},
            },
        },
    }
    proc, base = start(tmp_path, data)
    try:
        wait_for(f"{base}/healthz", 200)
        broker.stop()
        bad = wait_for(f"{base}/healthz", 503)
        assert bad["unhealthy"] == ["mqtt"]
        assert bad["mqtt"]["connected"] is False
        broker.start()
        good = wait_for(f"{base}/healthz", 200)
        assert good["mqtt"]["connected"] is True
        assert good["mqtt"]["reconnects"] >= 1
    finally:
        assert stop(proc) == 0
        broker.stop()


def test_network_camera_cut_and_back(tmp_path):
    """An MJPEG camera that goes away: reopened with backoff; /healthz 503 naming it, then 200."""
    from mjpeg import MjpegCamera

    camera = MjpegCamera(DEMO_VIDEO, free_port())
    camera.start()
    data = {
        "cameras": [
            {"name": "ipcam", "source": camera.url, "reconnect": {"initial_s": 0.2, "max_s": 1.0}}
        ],
        "models": [{"name": "det", "path": str(DET), "task": "detect"}],
        "http": {"max_age_s": 2.0},
        "sinks": {"jsonl": {"enabled": False}},
    }
    proc, base = start(tmp_path, data)
    try:
        wait_for(f"{base}/healthz", 200)
        camera.stop()
        bad = wait_for(f"{base}/healthz", 503)
        # The engine goes stale a moment later for want of frames.
        assert bad["unhealthy"][0] == "camera:ipcam"
        assert set(bad["unhealthy"]) <= {"camera:ipcam", "engine:det"}
        camera.start()
        good = wait_for(f"{base}/healthz", 200)
        assert good["cameras"]["ipcam"]["ok"] is True
    finally:
        assert stop(proc) == 0
        camera.stop()
    logs = [
        json.loads(x) for x in (tmp_path / "err.log").read_text().splitlines() if x.startswith("{")
    ]
    events = [x["event"] for x in logs]
    assert "source stopped delivering frames, reopening" in events
    assert events.count("source opened") >= 2
