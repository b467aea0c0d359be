"""A real Home Assistant discovers (and removes) the tracking entities; pose events per person.

Run by ``make test-ha`` next to tests/test_ha_real.py (whose Home Assistant fixture it uses);
skipped without ``EDGEYOLO_HASS``. ``edgeyolo run`` on the demo video with the FP32 pose model
tracked and the INT8 one not, a zone and a line: every zone and line entity exists on the
camera's device with a state, and the tracked model's pose event entity changes state (one
recorder row per event) far less often than the untracked one's; ``remove-discovery``
removes them from Home Assistant's registry.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import time
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from conftest import DEMO_VIDEO, MODELS, REPO, edgeyolo_cmd
from helpers import start_cli
from test_ha_real import HASS, HomeAssistant, LoggingMosquitto, _discovered, _wait, hass

if TYPE_CHECKING:
    from pathlib import Path

    from mosquitto import Mosquitto

pytestmark = [
    pytest.mark.ha,
    pytest.mark.mqtt,
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(not HASS, reason="needs a real Home Assistant (EDGEYOLO_HASS)"),
]
__all__ = ["hass"]  # the fixture, imported for pytest
DEVICE = "trk"
RUN_S = 40


def _config(tmp_path: Path, broker: Mosquitto) -> Path:
    data = {
        "backend": "onnxruntime",
        "cameras": [
            {
                "name": "yard",
                "source": str(DEMO_VIDEO),
                "fps": 5,
                "loop": True,
                "zones": [
                    {
                        "name": "lawn",
                        "normalized": True,
                        "points": [[0, 0.45], [0.5, 0.45], [0.5, 1], [0, 1]],
                    }
                ],
                "lines": [{"name": "middle", "normalized": True, "points": [[0.5, 1], [0.5, 0.3]]}],
            }
        ],
        "models": [
            {
                "name": "pose-tracked",
                "path": str(MODELS / "edgeyolo-demo-pose.onnx"),
                "task": "pose",
                "tracking": {"enabled": True},
            },
            {
                "name": "pose-plain",
                "path": str(MODELS / "edgeyolo-demo-pose-int8.onnx"),
                "task": "pose",
            },
        ],
        "logging": {"frame_sample": 0, "summary_interval_s": 2, "format": "json"},
        "sinks": {
            "jsonl": {"enabled": False},
            "mqtt": {"url": broker.url, "device_id": DEVICE, "count_labels": ["person"]},
        },
    }
    path = tmp_path / "edgeyolo.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _state_rows(ha: HomeAssistant, entity_id: str) -> int:
    con = sqlite3.connect(f"file:{ha.db}?mode=ro", uri=True, timeout=5)
    try:
        (n,) = con.execute(
            "SELECT COUNT(*) FROM states s JOIN states_meta m ON s.metadata_id = m.metadata_id "
            "WHERE m.entity_id = ? AND s.state NOT IN ('unknown', 'unavailable')",
            (entity_id,),
        ).fetchone()
    finally:
        con.close()
    return int(n)


def test_home_assistant_has_zone_line_and_per_person_pose_entities(
    tmp_path: Path, hass: tuple[HomeAssistant, LoggingMosquitto]
) -> None:
    """Zone occupancy/count and line in/out entities exist with states; the tracked pose
    event entity records fewer events than the untracked one."""
    ha, broker = hass
    _wait("Home Assistant subscribing to discovery", ha.subscribed(broker), 240, ha.proc)
    config = _config(tmp_path, broker)
    svc = start_cli("run", "-c", str(config), log=tmp_path / "edgeyolo.log")
    try:
        configs = _wait(
            "discovery on the broker", lambda: asyncio.run(_discovered(broker.port)), 60, svc
        )
        cmps: dict[str, Any] = configs[f"homeassistant/device/{DEVICE}_yard/config"]["cmps"]
        ours = {k: c for k, c in cmps.items() if k.startswith(("zone_", "line_", "pose_"))}
        assert set(ours) == {
            "zone_lawn_person_occupancy",
            "zone_lawn_person_count",
            "line_middle_in",
            "line_middle_out",
            "pose_pose-tracked",
            "pose_pose-plain",
        }

        def registered() -> dict[str, str]:
            ents = {
                e["unique_id"]: e["entity_id"]
                for e in ha.registry("core.entity_registry")["entities"]
                if e["platform"] == "mqtt"
            }
            want = {c["unique_id"] for c in ours.values()}
            return ents if want <= set(ents) else {}

        ids = _wait("the tracking entities in HA's registry", registered, 120, ha.proc)
        eid = {k: ids[c["unique_id"]] for k, c in ours.items()}
        zone_line = [eid[k] for k in ours if not k.startswith("pose_")]

        def have_states() -> dict[str, str]:
            st = ha.states()
            ok = all(st.get(e) not in {None, "unknown", "unavailable"} for e in zone_line)
            return st if ok else {}

        states = _wait("states for the zone and line entities", have_states, 120, svc)
        assert states[eid["zone_lawn_person_occupancy"]] in {"on", "off"}
        assert int(states[eid["line_middle_in"]]) >= 0
        t0 = time.monotonic()
        _wait(
            "both pose entities fired",
            lambda: all(_state_rows(ha, eid[k]) for k in ("pose_pose-tracked", "pose_pose-plain")),
            120,
            svc,
        )
        time.sleep(max(0.0, RUN_S - (time.monotonic() - t0)))
        tracked = _state_rows(ha, eid["pose_pose-tracked"])
        plain = _state_rows(ha, eid["pose_pose-plain"])
    finally:
        if svc.poll() is None:
            svc.send_signal(signal.SIGTERM)
        svc.wait(60)
    assert svc.returncode == 0, (tmp_path / "edgeyolo.log").read_text()
    print(f"\npose events recorded by Home Assistant: tracked {tracked}, untracked {plain}")
    assert 1 <= tracked < plain
    # Removal: clearing the camera's device removes the zone and line entities with it.
    res = subprocess.run(
        edgeyolo_cmd("mqtt", "remove-discovery", "-c", str(config)),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert res.returncode == 0, res.stderr
    uids = {c["unique_id"] for c in ours.values()}

    def removed() -> bool:
        left = {e["unique_id"] for e in ha.registry("core.entity_registry")["entities"]}
        return not (left & uids)

    _wait("zone, line and pose entities removed from HA's registry", removed, 120, ha.proc)
