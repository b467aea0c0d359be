"""Signals and reloads of the real service (issue 10 items 1-3): `edgeyolo run` as a
subprocess on the demo video, JSON logs on stderr, events on stdout."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import urllib.request
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from conftest import DEMO_VIDEO, DET, MODELS, POSE, REPO, edgeyolo_cmd
from helpers import start_cli
from mosquitto import free_port

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
DET_INT8 = MODELS / "edgeyolo-demo-det-int8.onnx"


def _config(path: Path, models: list[dict[str, Any]], **extra: Any) -> Path:
    data = {
        "backend": "onnxruntime",
        "cameras": [{"name": "demo", "source": str(DEMO_VIDEO), "fps": 5}],
        "models": models,
        "logging": {"frame_sample": 0, "summary_interval_s": 60},
        **extra,
    }
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


class Service:
    """`edgeyolo run --loop`; stdout events are counted per model by a reader thread."""

    def __init__(self, config: Path, *extra: str) -> None:
        self.log = config.with_suffix(".log")
        with self.log.open("wb") as err:  # a file: a full pipe would block the service
            self.proc = subprocess.Popen(
                edgeyolo_cmd("run", "-c", str(config), "--loop", "--log-format", "json", *extra),
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                cwd=REPO,
            )
        self.started = time.monotonic()
        self.models: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.models.append(json.loads(line)["model"])

    def wait_events(self, n: int, model: str | None = None, timeout: float = 90) -> None:
        def count() -> int:
            return sum(1 for m in self.models if model is None or m == model)

        target = count() + n
        deadline = time.monotonic() + timeout
        while count() < target:
            assert self.proc.poll() is None, f"the service ended with {self.proc.returncode}"
            assert time.monotonic() < deadline, f"no {n} more events of {model} in {timeout}s"
            time.sleep(0.1)

    def stop(self) -> tuple[int, list[dict[str, Any]]]:
        """SIGTERM; the exit code and every log line (each must be JSON)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        finally:
            self.proc.kill()
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        err = self.log.read_text()
        logs = [json.loads(line) for line in err.splitlines() if line.strip()]
        return self.proc.returncode, logs


def _events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e.get("event") == name]


def test_sighup_during_start_up_does_not_kill(tmp_path: Path):
    """A SIGHUP 0.3 s after start (while models load) is handled; the service runs on."""
    svc = Service(_config(tmp_path / "c.yaml", [{"name": "d", "path": str(DET), "task": "detect"}]))
    time.sleep(0.3)
    svc.proc.send_signal(signal.SIGHUP)
    svc.wait_events(3)
    rc, logs = svc.stop()
    assert rc == 0
    assert _events(logs, "config reload: nothing changed; keeping the running config")
    assert _events(logs, "stopped")


def test_sighups_in_a_row_and_during_a_restart_are_coalesced(tmp_path: Path):
    """Two SIGHUPs 0.3 s apart give one restart; more during the restart do not kill it."""
    path = _config(tmp_path / "c.yaml", [{"name": "a", "path": str(DET_INT8), "task": "detect"}])
    svc = Service(path)
    svc.wait_events(2, "a")
    _config(path, [{"name": "b", "path": str(DET_INT8), "task": "detect"}])
    svc.proc.send_signal(signal.SIGHUP)
    time.sleep(0.3)
    svc.proc.send_signal(signal.SIGHUP)
    svc.wait_events(2, "b")
    _config(path, [{"name": "c", "path": str(DET_INT8), "task": "detect"}])
    for _ in range(6):  # across the validation, the teardown and the start of the new config
        svc.proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)
    svc.wait_events(2, "c")
    rc, logs = svc.stop()
    assert rc == 0, logs[-5:]
    assert len(_events(logs, "config reload accepted; restarting")) == 2
    assert svc.models[-1] == "c"


def test_reload_whose_models_fail_keeps_the_running_config(tmp_path: Path):
    """A config that validates but whose model is the wrong task, or truncated, is rejected
    before anything stops; the old models keep running and the rejections are counted."""
    port = free_port()
    path = _config(tmp_path / "c.yaml", [{"name": "old", "path": str(DET), "task": "detect"}])
    svc = Service(path, "--http", f"127.0.0.1:{port}")
    svc.wait_events(2, "old")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(POSE.read_bytes()[: 1 << 20])
    bad_configs = [
        [{"name": "new", "path": str(DET), "task": "pose"}],  # a detect model as pose
        [{"name": "new", "path": str(truncated), "task": "pose"}],
        None,  # not UTF-8
    ]
    for models in bad_configs:
        if models is None:
            path.write_bytes("cameras: [{name: k\xfcche}]\n".encode("latin-1"))
        else:
            _config(path, models)
        svc.proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        svc.wait_events(2, "old")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        metrics = resp.read().decode()
    assert 'edgeyolo_config_reloads_total{result="rejected"} 3.0' in metrics
    rc, logs = svc.stop()
    assert rc == 0
    assert set(svc.models) == {"old"}
    rejected = _events(logs, "config reload rejected; keeping the running config")
    assert len(rejected) == 3
    assert "a 'detect' model" in rejected[0]["error"] or "detect" in rejected[0]["error"]
    assert "ONNX Runtime cannot load this model" in rejected[1]["error"]
    assert "not UTF-8 text: byte 0xfc" in rejected[2]["error"]
    assert not _events(logs, "config reload accepted; restarting")


def test_stop_does_not_wait_for_a_camera_stuck_in_open(tmp_path: Path):
    """A network camera that accepts the connection and never answers keeps OpenCV's open
    blocked for 10 s; SIGTERM still ends the service within the stop timeout, exit 0."""
    import socket

    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(8)  # connections queue in the kernel; nothing ever answers them
        port = hole.getsockname()[1]
        data = {
            "backend": "onnxruntime",
            "cameras": [{"name": "gate", "source": f"http://127.0.0.1:{port}/video.mjpg"}],
            "models": [{"name": "d", "path": str(DET_INT8), "task": "detect"}],
            "pipeline": {"stop_timeout_s": 2},
            "sinks": {"jsonl": {"enabled": False}},
        }
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(data))
        log = tmp_path / "run.log"
        proc = start_cli("run", "-c", str(path), "--log-format", "json", log=log)
        try:
            deadline = time.monotonic() + 60
            while '"running"' not in log.read_text():
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            time.sleep(1.0)  # the capture thread is inside OpenCV's open now
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            took = time.monotonic() - t0
        finally:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log.read_text()[-2000:]
    assert took < 2 + 2.5, took  # the stop timeout, plus the interpreter's exit
    assert "capture thread did not stop in time" in log.read_text()


def test_reload_that_fails_to_start_goes_back_to_the_old_config(tmp_path: Path):
    """A config that passes every check but whose engine cannot open on this backend (a
    TensorRT .engine with onnxruntime) fails at its start: the old config runs again."""
    port = free_port()
    path = _config(tmp_path / "c.yaml", [{"name": "old", "path": str(DET_INT8), "task": "detect"}])
    svc = Service(path, "--http", f"127.0.0.1:{port}")
    svc.wait_events(2, "old")
    engine = tmp_path / "det.engine"
    engine.write_bytes(b"\0" * 64)
    _config(path, [{"name": "new", "path": str(engine), "task": "detect"}])
    svc.proc.send_signal(signal.SIGHUP)
    time.sleep(2.0)
    svc.wait_events(3, "old")
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                metrics = resp.read().decode()
            break
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.5)
    assert 'edgeyolo_config_reloads_total{result="accepted"} 1.0' in metrics
    assert 'edgeyolo_config_reloads_total{result="failed"} 1.0' in metrics
    rc, logs = svc.stop()
    assert rc == 0
    failed = _events(logs, "reloaded config failed to start; going back to the previous config")
    assert len(failed) == 1
    assert "det.engine is a TensorRT engine" in failed[0]["error"]
    assert "new" not in svc.models
