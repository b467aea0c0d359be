"""edgeyolo_frames_captured_total counts what the camera delivered: processed + dropped.

A real service run (two demo models on a real clip at its native 15 fps, slower than the
models on this CPU, so frames are dropped), its real Prometheus exposition parsed back, and the
series the Grafana dashboard's "captured" and "processed" lines query.
"""

from __future__ import annotations

import asyncio
import json
import re

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from conftest import DET, POSE, REPO
from edgeyolo import app as app_module
from edgeyolo.app import RunOptions
from edgeyolo.config import load_config
from helpers import short_clip

pytestmark = pytest.mark.slow

FRAMES = 45


def counters(text: str) -> dict[str, float]:
    """Samples of camera "cam" by metric name."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.labels.get("camera") == "cam":
                out[s.name] = s.value
    return out


def test_captured_is_processed_plus_dropped(tmp_path):
    cfg = tmp_path / "c.yaml"
    video = short_clip(tmp_path / "clip.avi", FRAMES)
    cfg.write_text(
        yaml.safe_dump(
            {
                "cameras": [{"name": "cam", "source": str(video)}],
                "models": [
                    {"name": "det", "path": str(DET), "task": "detect"},
                    {"name": "pose", "path": str(POSE), "task": "pose"},
                ],
            }
        )
    )
    options = RunOptions(jsonl=False, handle_signals=False)
    service = app_module.Service(load_config(cfg), options)
    result = asyncio.run(service.run())
    assert result.exit_code == 0
    values = counters(service.metrics.exposition().decode())
    captured = values["edgeyolo_frames_captured_total"]
    dropped = values["edgeyolo_frames_dropped_total"]
    processed = values["edgeyolo_e2e_seconds_count"]
    assert captured == FRAMES  # every frame of the clip came out of the camera
    assert dropped > 0, "the models kept up with 15 fps: no drops to count"
    assert processed == result.frames["cam"]
    assert captured == processed + dropped

    # The dashboard's throughput panel draws exactly these series as "captured" and
    # "processed", and the drops panel the dropped one: captured - processed = dropped.
    dashboard = json.loads((REPO / "deploy/grafana/edgeyolo-dashboard.json").read_text())
    legends = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            metric = re.search(r"rate\((edgeyolo_\w+)\{", target["expr"])
            if metric:
                legends[target["legendFormat"]] = metric.group(1)
    assert legends["{{camera}} captured"] == "edgeyolo_frames_captured_total"
    assert legends["{{camera}} processed"] == "edgeyolo_e2e_seconds_count"
    assert legends["{{camera}} dropped"] == "edgeyolo_frames_dropped_total"
