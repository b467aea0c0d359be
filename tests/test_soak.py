"""The short soak: the demo service on looped video with a real broker, watched for growth."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from helpers import REPO
from mosquitto import Mosquitto

# CI runs about two minutes; EDGEYOLO_SOAK_S makes a developer's run shorter or longer.
DURATION_S = float(os.environ.get("EDGEYOLO_SOAK_S", "120"))


@pytest.mark.slow
@pytest.mark.mqtt
def test_short_soak_has_no_unbounded_growth(tmp_path: Path) -> None:
    """Four demo models, MQTT on: no fd or thread growth, bounded RSS, clean SIGTERM exit 0."""
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    pfx = f"soak-{uuid.uuid4().hex[:8]}"
    cfg = {
        "cameras": [
            {"name": "demo", "source": str(REPO / "media" / "demo-scene.mp4"), "loop": True}
        ],
        "models": [
            {
                "name": name,
                "path": str(REPO / "models" / f"edgeyolo-demo-{file}.onnx"),
                "task": task,
            }
            for name, file, task in (
                ("det-fp32", "det", "detect"),
                ("det-int8", "det-int8", "detect"),
                ("pose-fp32", "pose", "pose"),
                ("pose-int8", "pose-int8", "pose"),
            )
        ],
        "logging": {"format": "json", "frame_sample": 0, "summary_interval_s": 10},
        "sinks": {
            "jsonl": {"enabled": True, "path": "-"},
            "mqtt": {
                "url": broker.url,
                "prefix": pfx,
                "device_id": "soak",
                "discovery": {"prefix": f"{pfx}-ha", "status_topic": f"{pfx}-ha/status"},
            },
        },
    }
    config = tmp_path / "soak.yaml"
    config.write_text(yaml.safe_dump(cfg))
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "edgeyolo",
                "bench",
                "soak",
                "-c",
                str(config),
                "--duration",
                str(DURATION_S),
                "--interval",
                "3",
                "--warmup",
                str(DURATION_S / 4),
                "--stop-timeout",
                "15",
                "--python",
                sys.executable,
                "--log",
                str(tmp_path / "service.log"),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=DURATION_S + 120,
        )
    finally:
        broker.stop()
    assert result.stdout, result.stderr
    report = json.loads(result.stdout)
    print(json.dumps({k: v for k, v in report.items() if k != "command"}))  # numbers in -s runs
    assert result.returncode == 0, f"{report['failures']}\n{result.stderr}"
    assert report["fds"]["growth_last_half"] == 0
    assert report["threads"]["growth_last_half"] == 0
    assert report["rss_mb"]["growth_last_half"] <= 8
    assert report["shutdown"]["exit_code"] == 0
    assert report["events"] > 0
