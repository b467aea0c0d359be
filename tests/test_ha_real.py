"""A real Home Assistant (``hass``, its MQTT integration and recorder) discovers the service.

Run by ``make test-ha`` (after ``make test``): it installs Home Assistant 2025.4 into a
Python 3.13 venv under ``.cache/`` and points ``EDGEYOLO_HASS`` at its ``hass``. Without that
variable this module is skipped. Everything is real: mosquitto, ``hass`` with an MQTT config
entry seeded in its ``.storage``, ``edgeyolo run`` on the demo video, ``edgeyolo mqtt
remove-discovery``. What Home Assistant made of it is read from its own files: the entity and
device registries (``.storage/core.entity_registry``, ``core.device_registry``) and the
recorder's SQLite database; which QoS it subscribed with, from mosquitto's log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from conftest import DEMO_VIDEO, MODELS, REPO, edgeyolo_cmd
from helpers import start_cli
from mosquitto import HOST, Collector, Mosquitto, free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

HASS = os.environ.get("EDGEYOLO_HASS", "")
pytestmark = [
    pytest.mark.ha,
    pytest.mark.mqtt,
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        not HASS,
        reason="needs a real Home Assistant: `make test-ha` installs one (Python 3.13) and "
        "sets EDGEYOLO_HASS",
    ),
]
CAMERAS = ["wohnzimmer ü", "küche"]
DEVICE = "vm"


class LoggingMosquitto(Mosquitto):
    """mosquitto that also logs every SUBSCRIBE (client id, QoS, filter)."""

    def _config(self) -> Path:
        conf = super()._config()
        conf.write_text(conf.read_text() + "log_type subscribe\nlog_type unsubscribe\n")
        return conf

    def subscriptions(self) -> list[tuple[str, int, str]]:
        log = (self.folder / "mosquitto.log").read_text(errors="replace")
        return [
            (m[1], int(m[2]), m[3])
            for m in re.finditer(r"^\d+: (\S+) (\d) (\S+)$", log, flags=re.MULTILINE)
        ]


def _wait(what: str, check: Callable[[], Any], timeout: float, proc: Any = None) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: the process exited with {proc.returncode}")
        with contextlib.suppress(FileNotFoundError, ValueError, sqlite3.Error, KeyError):
            last = check()
            if last:
                return last
        time.sleep(1.0)
    pytest.fail(f"{what}: not within {timeout}s (last: {last!r})")


class HomeAssistant:
    """``hass -c DIR`` with the MQTT integration configured for ``broker``."""

    def __init__(self, folder: Path, broker: Mosquitto) -> None:
        self.folder = folder
        storage = folder / ".storage"
        storage.mkdir(parents=True)
        (folder / "configuration.yaml").write_text(
            yaml.safe_dump(
                {
                    "homeassistant": {
                        "name": "edgeyolo test",
                        "latitude": 0,
                        "longitude": 0,
                        "elevation": 0,
                        "unit_system": "metric",
                        "time_zone": "UTC",
                    },
                    "http": {"server_host": HOST, "server_port": free_port()},
                    "recorder": {"commit_interval": 1, "db_url": f"sqlite:///{self.db}"},
                    "logger": {"default": "warning"},
                }
            )
        )
        entry = {
            "entry_id": "01JEDGEYOLOTESTMQTT0000000",
            "version": 1,
            "minor_version": 2,
            "domain": "mqtt",
            "title": f"{HOST}:{broker.port}",
            "data": {"broker": HOST, "port": broker.port},
            "options": {"discovery": True, "discovery_prefix": "homeassistant"},
            "source": "user",
            "unique_id": None,
            "disabled_by": None,
            "pref_disable_new_entities": False,
            "pref_disable_polling": False,
        }
        (storage / "core.config_entries").write_text(
            json.dumps(
                {
                    "version": 1,
                    "minor_version": 1,  # HA migrates the rest of the entry's keys
                    "key": "core.config_entries",
                    "data": {"entries": [entry]},
                }
            )
        )
        self.log = (folder / "hass.log").open("wb")
        self.proc = subprocess.Popen(
            [HASS, "-c", str(folder), "--skip-pip", "--log-file", str(folder / "ha.log")],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    @property
    def db(self) -> Path:
        return self.folder / "home-assistant_v2.db"

    def registry(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.folder / ".storage" / name).read_text())["data"]
        return data

    def states(self) -> dict[str, str]:
        """entity_id -> its latest state in the recorder database."""
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)
        try:
            rows = con.execute(
                "SELECT m.entity_id, s.state FROM states s JOIN states_meta m "
                "ON s.metadata_id = m.metadata_id WHERE s.state_id IN "
                "(SELECT MAX(state_id) FROM states GROUP BY metadata_id)"
            ).fetchall()
        finally:
            con.close()
        return dict(rows)

    def subscribed(self, broker: LoggingMosquitto) -> Callable[[], bool]:
        """A check: HA's MQTT integration subscribed to discovery (fails on recovery mode)."""

        def check() -> bool:
            log = (self.folder / "hass.log").read_text(errors="replace")
            if "Activating recovery mode" in log:
                pytest.fail(f"Home Assistant started in recovery mode:\n{log[-3000:]}")
            return any(f.startswith("homeassistant/") for _c, _q, f in broker.subscriptions())

        return check

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


@pytest.fixture
def hass(tmp_path: Path) -> Iterator[tuple[HomeAssistant, LoggingMosquitto]]:
    broker = LoggingMosquitto(tmp_path / "broker")
    broker.start()
    ha = HomeAssistant(tmp_path / "ha", broker)
    try:
        yield ha, broker
    finally:
        ha.stop()
        broker.stop()


def _config(tmp_path: Path, broker: Mosquitto) -> Path:
    data = {
        "backend": "onnxruntime",
        "cameras": [
            {"name": n, "source": str(DEMO_VIDEO), "fps": 3, "loop": True} for n in CAMERAS
        ],
        "models": [
            {
                "name": "det-int8",
                "path": str(MODELS / "edgeyolo-demo-det-int8.onnx"),
                "task": "detect",
            },
            {
                "name": "pose-int8",
                "path": str(MODELS / "edgeyolo-demo-pose-int8.onnx"),
                "task": "pose",
            },
        ],
        "logging": {"frame_sample": 0, "summary_interval_s": 2, "format": "json"},
        "sinks": {
            "jsonl": {"enabled": False},
            "mqtt": {
                "url": broker.url,
                "device_id": DEVICE,
                "count_labels": ["person", "car"],
                "messages": {"stats": {"qos": 1}},
            },
        },
    }
    path = tmp_path / "edgeyolo.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


async def _discovered(port: int) -> dict[str, dict[str, Any]]:
    async with Collector(port, ["homeassistant/device/+/config"]) as c:
        await asyncio.sleep(1.0)
        return {m.topic: m.json() for m in c.messages if m.payload}


def test_home_assistant_discovers_every_entity_on_its_device(
    tmp_path: Path, hass: tuple[HomeAssistant, LoggingMosquitto]
):
    """Every announced entity exists on the right device with a state, goes unavailable when
    the service stops, and is removed with its device by remove-discovery."""
    ha, broker = hass
    # HA is up with MQTT when it subscribed to the discovery topics.
    _wait("Home Assistant subscribing to discovery", ha.subscribed(broker), 240, ha.proc)
    config = _config(tmp_path, broker)
    svc = start_cli("run", "-c", str(config), log=tmp_path / "edgeyolo.log")
    try:
        configs = _wait(
            "discovery on the broker", lambda: asyncio.run(_discovered(broker.port)), 60, svc
        )
        assert len(configs) == 1 + len(CAMERAS)
        wanted = {  # unique_id -> (device identifier, component)
            comp["unique_id"]: (p["dev"]["identifiers"][0], comp)
            for p in configs.values()
            for comp in p["cmps"].values()
        }

        def registered() -> dict[str, dict[str, Any]]:
            ents = {
                e["unique_id"]: e
                for e in ha.registry("core.entity_registry")["entities"]
                if e["platform"] == "mqtt"
            }
            return ents if set(wanted) <= set(ents) else {}

        entities = _wait("every entity in HA's entity registry", registered, 120, ha.proc)
        devices = {
            ident[1]: d
            for d in ha.registry("core.device_registry")["devices"]
            for ident in d["identifiers"]
            if ident[0] == "mqtt"
        }
        service = devices[f"edgeyolo_{DEVICE}"]
        assert service["via_device_id"] is None
        assert service["model"] != service["manufacturer"]
        for uid, (ident, comp) in wanted.items():
            device = devices[ident]
            assert entities[uid]["device_id"] == device["id"], uid
            if ident != f"edgeyolo_{DEVICE}":
                assert device["via_device_id"] == service["id"]
                assert device["name"] in CAMERAS
                assert comp["name"] not in device["name"]
        assert sorted(d["name"] for d in devices.values() if d["via_device_id"]) == sorted(CAMERAS)
        ids = {uid: entities[uid]["entity_id"] for uid in wanted}
        status = ids[f"edgeyolo_{DEVICE}_status"]
        cameras = [e for uid, e in ids.items() if e != status]

        def all_have_states() -> dict[str, str]:
            st = ha.states()
            ok = all(st.get(e) not in {None, "unknown", "unavailable"} for e in ids.values())
            return st if ok else {}

        states = _wait("a state for every entity in the recorder", all_have_states, 120, svc)
        assert states[status] == "on"
        # HA subscribed to every state topic with the component's qos (a root qos was ignored).
        subs = {f: q for c, q, f in broker.subscriptions() if not c.startswith("edgeyolo")}
        for _ident, comp in wanted.values():
            assert subs.get(comp["state_topic"]) == comp["qos"], comp["state_topic"]
        assert any(q == 1 and f.endswith("/stats") for f, q in subs.items())
    finally:
        if svc.poll() is None:
            svc.send_signal(signal.SIGTERM)
        svc.wait(60)
    assert svc.returncode == 0, (tmp_path / "edgeyolo.log").read_text()

    def all_unavailable() -> dict[str, str]:
        st = ha.states()
        ok = all(st.get(e) == "unavailable" for e in cameras) and st.get(status) == "off"
        return st if ok else {}

    _wait("camera entities unavailable, status off", all_unavailable, 60, ha.proc)

    res = subprocess.run(
        edgeyolo_cmd("mqtt", "remove-discovery", "-c", str(config)),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("cleared ") == 1 + len(CAMERAS)

    def removed() -> bool:
        left = {e["unique_id"] for e in ha.registry("core.entity_registry")["entities"]}
        devs = [
            i[1] for d in ha.registry("core.device_registry")["devices"] for i in d["identifiers"]
        ]
        return not (left & set(wanted)) and not any(i.startswith("edgeyolo_") for i in devs)

    _wait("entities and devices removed from HA's registries", removed, 120, ha.proc)
