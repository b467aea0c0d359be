"""The service end to end on the demo video: events out, logs out, clean stops."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from conftest import DEMO_CONFIG, REPO, edgeyolo_cmd
from edgeyolo.app import RunOptions, run_service
from edgeyolo.config import load_config
from edgeyolo.log import configure_logging
from helpers import run_cli

pytestmark = pytest.mark.slow


def demo_config(tmp_path: Path, **changes: object) -> Path:
    """The bundled demo config with changes, written next to the repo's paths."""
    data = yaml.safe_load(DEMO_CONFIG.read_text())
    for cam in data["cameras"]:
        cam["source"] = str((DEMO_CONFIG.parent / cam["source"]).resolve())
    for m in data["models"]:
        m["path"] = str((DEMO_CONFIG.parent / m["path"]).resolve())
    data.update(changes)
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run_looping(config: Path) -> subprocess.Popen[str]:
    """`edgeyolo run --loop` on ``config``: events on a stdout pipe, JSON logs on stderr."""
    return subprocess.Popen(
        edgeyolo_cmd("run", "-c", str(config), "--loop", "--log-format", "json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def test_demo_run_streams_events_and_logs():
    """`edgeyolo run` (no -c: the bundled demo) gives 4 models' events per frame on stdout."""
    res = run_cli(
        "run", "--max-frames", "24", "--fast", "--log-format", "json", timeout=240, cwd=REPO
    )
    assert res.returncode == 0, res.stderr[-2000:]
    everything = [json.loads(line) for line in res.stdout.splitlines()]
    assert all(e["schema_version"] == 2 for e in everything)
    # The demo tracks det-fp32 and pose-fp32: lifecycle, zone and line events come too.
    assert {e["type"] for e in everything} <= {"detections", "track", "zone", "line"}
    events = [e for e in everything if e["type"] == "detections"]
    assert len(events) == 24 * 4
    models = {"det-fp32", "det-int8", "pose-fp32", "pose-int8"}
    assert {e["model"] for e in events} == models
    by_seq: dict[int, set[str]] = {}
    for e in events:
        assert (e["width"], e["height"]) == (960, 540)
        by_seq.setdefault(e["seq"], set()).add(e["model"])
    assert all(v == models for v in by_seq.values())
    for e in events:  # track_id on every detection of a tracked model, and only there
        tracked = e["model"] in {"det-fp32", "pose-fp32"}
        assert all(("track_id" in d) == tracked for d in e["detections"])
    new = [e for e in everything if e["type"] == "track" and e["kind"] == "new"]
    assert {e["model"] for e in new} == {"det-fp32", "pose-fp32"}
    last = events[-1]["seq"]
    ids = {d.get("track_id") for e in events if e["seq"] == last for d in e["detections"]}
    assert {e["track_id"] for e in new} >= ids - {None}
    det = [e for e in events if e["model"] == "det-fp32"]
    with_person = [e for e in det if any(d["label"] == "person" for d in e["detections"])]
    assert len(with_person) >= 0.9 * len(det)
    pose = [e for e in events if e["model"] == "pose-fp32"]
    people = [d for e in pose for d in e["detections"]]
    assert len(people) >= 2 * len(pose)  # 3 to 5 walkers are in view in every frame
    for d in people:
        assert len(d["keypoints"]) == 17
        assert all(0 <= x <= 960 and 0 <= y <= 540 and 0 <= c <= 1 for x, y, c in d["keypoints"])
    logs = [json.loads(line) for line in res.stderr.splitlines() if line.startswith("{")]
    names = [entry["event"] for entry in logs]
    assert "frame" in names
    assert "summary" in names
    frame_line = next(entry for entry in logs if entry["event"] == "frame")
    assert set(frame_line["infer_ms"]) == models
    assert frame_line["e2e_ms"] > 0
    assert names[-1] == "stopped"


def test_sigterm_stops_cleanly_with_exit_0(tmp_path):
    """SIGTERM during a looping run drains, logs 'stopped' and exits 0 in time."""
    proc = run_looping(demo_config(tmp_path))
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # wait for the first event
        assert json.loads(first)["type"] == "detections"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert time.monotonic() - t0 < 12
    last = json.loads(err.strip().splitlines()[-1])
    assert last["event"] == "stopped"
    assert last["exit_code"] == 0
    del out


def test_signal_in_process_leaves_no_threads(tmp_path):
    """A SIGINT handled by the service leaves no capture or inference thread behind."""
    configure_logging("json", "warning")
    cfg = load_config(demo_config(tmp_path))
    before = {t.ident for t in threading.enumerate()}

    async def main() -> int:
        task = asyncio.create_task(run_service(cfg, RunOptions(loop=True, jsonl=False)))
        await asyncio.sleep(3)
        os.kill(os.getpid(), signal.SIGINT)
        return (await asyncio.wait_for(task, 30)).exit_code

    assert asyncio.run(main()) == 0
    leftover = [t for t in threading.enumerate() if t.ident not in before and t.is_alive()]
    assert leftover == []


def test_sighup_reloads_valid_config_and_rejects_invalid(tmp_path):
    """SIGHUP with a broken config is rejected (still running); with a valid one it restarts."""
    cfg_path = demo_config(tmp_path)
    proc = run_looping(cfg_path)
    try:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline())["model"] in {
            "det-fp32",
            "det-int8",
            "pose-fp32",
            "pose-int8",
        }
        good = cfg_path.read_text()
        cfg_path.write_text(good + "\nbogus_key: 1\n")
        proc.send_signal(signal.SIGHUP)
        time.sleep(2)
        assert proc.poll() is None
        data = yaml.safe_load(good)
        data["models"] = [m for m in data["models"] if m["name"] == "det-fp32"]
        cfg_path.write_text(yaml.safe_dump(data))
        proc.send_signal(signal.SIGHUP)
        # After the restart only det-fp32 events arrive.
        deadline = time.monotonic() + 60
        tail: list[str] = []
        while time.monotonic() < deadline:
            ev = json.loads(proc.stdout.readline())
            tail = [*tail[-7:], ev["model"]]
            if len(tail) == 8 and set(tail) == {"det-fp32"}:
                break
        assert set(tail) == {"det-fp32"}
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0
    events = [json.loads(line)["event"] for line in err.splitlines() if line.startswith("{")]
    assert "config reload rejected; keeping the running config" in events
    assert "config reload accepted; restarting" in events


def test_two_cameras_share_engines(tmp_path):
    """Two cameras on one set of engines: each gets its own events, with its own frames."""
    configure_logging("json", "warning")
    data = yaml.safe_load(demo_config(tmp_path).read_text())
    data["cameras"].append({"name": "second", "source": data["cameras"][0]["source"]})
    data["models"] = data["models"][:1] + data["models"][2:3]  # det-fp32, pose-fp32
    data["sinks"] = {"jsonl": {"path": str(tmp_path / "events.jsonl")}}
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(data))
    result = asyncio.run(
        run_service(load_config(path), RunOptions(max_frames=12, pace="fast", handle_signals=False))
    )
    assert result.exit_code == 0
    assert result.frames == {"demo": 12, "second": 12}
    everything = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    events = [e for e in everything if e["type"] == "detections"]
    # The demo tracks its models: each camera has its own tracks, made from the same frames
    # (only the demo camera has zones and lines, so only tracks starting and ending compare).
    tracks = {
        cam: [
            (e["model"], e["seq"], e["kind"], e["track_id"])
            for e in everything
            if e["type"] == "track" and e["kind"] != "update" and e["camera"] == cam
        ]
        for cam in ("demo", "second")
    }
    assert tracks["demo"]
    assert tracks["demo"] == tracks["second"]
    for cam in ("demo", "second"):
        mine = [e for e in events if e["camera"] == cam]
        assert len(mine) == 24
        assert [e["seq"] for e in mine if e["model"] == "det-fp32"] == list(range(1, 13))
    # Same frames through the same engines: the two cameras see the same things.
    first = {(e["camera"], e["model"], e["seq"]): e["detections"] for e in events}
    assert all(first["demo", m, s] == first["second", m, s] for _, m, s in first)


def test_failing_engine_is_isolated(tmp_path):
    """An engine that raises is logged and counted; the other models keep producing events."""
    import structlog

    import edgeyolo.app as app_module
    from edgeyolo.engines.onnxruntime import OnnxRuntimeBackend

    class FaultyBackend(OnnxRuntimeBackend):
        """Real ONNX Runtime engines; pose-int8's fails at the engine boundary."""

        def open_engine(self, model):
            engine = super().open_engine(model)
            if model.name == "pose-int8":

                async def infer(slot):
                    raise RuntimeError("device lost")  # the fault

                engine.infer = infer
            return engine

    def backend(config):
        return FaultyBackend(config.onnxruntime, max_engines=len(config.models))

    seen: list = []

    class Collect:
        async def start(self) -> None: ...

        async def emit(self, event) -> None:
            seen.append(event)

        async def close(self) -> None: ...

    options = RunOptions(
        max_frames=6, pace="fast", jsonl=False, handle_signals=False, backend=backend
    )
    options.extra_sinks.append(Collect())
    service = app_module.Service(load_config(demo_config(tmp_path)), options)
    with structlog.testing.capture_logs() as logs:
        result = asyncio.run(service.run())
    assert result.exit_code == 0
    models = [e.model for e in seen if e.type == "detections"]
    assert models.count("det-fp32") == models.count("pose-fp32") == 6
    assert "pose-int8" not in models
    failures = [x for x in logs if x["event"] == "engine failed"]
    assert failures[0]["model"] == "pose-int8"
    assert "RuntimeError: device lost" in failures[0]["error"]
    metrics = service.metrics.exposition().decode()
    assert 'edgeyolo_engine_failures_total{engine="pose-int8"} 6.0' in metrics


def test_systemd_notifications(tmp_path):
    """Under systemd (NOTIFY_SOCKET set) the service says READY=1, then STOPPING=1."""
    import socket

    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(30)
    env = {**os.environ, "NOTIFY_SOCKET": str(path)}
    try:
        res = run_cli(
            "run",
            "-c",
            str(demo_config(tmp_path)),
            "--max-frames",
            "3",
            "--fast",
            timeout=240,
            cwd=REPO,
            env=env,
        )
        assert res.returncode == 0, res.stderr[-2000:]
        sock.settimeout(0.5)
        messages = []
        with contextlib.suppress(TimeoutError):
            while True:
                messages.append(sock.recv(4096).decode())
    finally:
        sock.close()
    text = "\n".join(messages)
    assert text.index("READY=1") < text.index("STOPPING=1")
    assert "STATUS=running 1 camera(s)" in text
