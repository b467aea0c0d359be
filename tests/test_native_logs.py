"""stderr stays JSON lines when native libraries and Python warnings have something to say."""

from __future__ import annotations

import json
import signal
import time

import pytest
import yaml

from conftest import DET
from helpers import start_cli

pytestmark = pytest.mark.slow


def test_stderr_is_json_lines_with_what_matters_as_events(tmp_path):
    """A camera that is not there (OpenCV's V4L2 back-end) and an execution provider that is
    not installed (ONNX Runtime warns through Python's warnings): every stderr line is a JSON
    object, and both problems are structured events."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "cameras": [
                    {
                        "name": "usb",
                        "source": "/dev/edgeyolo-no-such-camera",
                        "reconnect": {"initial_s": 0.2, "max_s": 0.4},
                    }
                ],
                "models": [{"name": "det", "path": str(DET), "task": "detect"}],
                "onnxruntime": {"providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]},
            }
        )
    )
    err = tmp_path / "err.log"
    proc = start_cli("run", "-c", str(cfg), "--log-format", "json", log=err)
    try:
        deadline = time.monotonic() + 60
        while err.read_text().count("cannot open source, retrying") < 3:
            assert proc.poll() is None, err.read_text()
            assert time.monotonic() < deadline, err.read_text()
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        proc.kill()
    events = []
    for line in err.read_text().splitlines():
        assert line.startswith("{"), f"not a JSON log line: {line!r}"
        events.append(json.loads(line))
    names = [e["event"] for e in events]
    (provider,) = [e for e in events if e["event"] == "execution provider not loaded"]
    assert provider["missing"] == ["CUDAExecutionProvider"]
    assert provider["using"] == ["CPUExecutionProvider"]
    warned = [e for e in events if e.get("logger") == "py.warnings"]
    assert warned
    assert "CUDAExecutionProvider" in warned[0]["event"]
    assert warned[0]["level"] == "warning"
    opening = [e for e in events if e["event"] == "cannot open source, retrying"]
    assert {e["kind"] for e in opening} == {"device"}
    assert "video group" in opening[0]["hint"]
    assert "stopped" in names
