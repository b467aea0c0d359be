"""No configured secret is ever printed (issue 10 item 6): check-config, run and
mqtt remove-discovery, valid and broken configs, at every log level, against a real
mosquitto that requires the (numeric) password."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from conftest import DEMO_VIDEO, MODELS, REPO, edgeyolo_cmd
from mosquitto import Collector, Mosquitto, free_port

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]

# Secrets of this test, which looks for them in every output.
PASSWORD = 918273645  # YAML reads it as a number
CAMERA_PASSWORD = "Sup3rS3cretCam"  # noqa: S105
TOKEN = "T0kenV4lue77"  # noqa: S105
TYPO_SECRET = "Pasw0rdTypo!"  # noqa: S105
HTTP_TOKEN = "HttpT0kenXyz"  # noqa: S105
SECRETS = [str(PASSWORD), CAMERA_PASSWORD, TOKEN, TYPO_SECRET, HTTP_TOKEN]


def _config(broker: Mosquitto, level: str, pfx: str) -> dict[str, Any]:
    return {
        "backend": "onnxruntime",
        "cameras": [
            {"name": "demo", "source": str(DEMO_VIDEO), "loop": True},
            {  # a network camera that is not there: its url is logged while it retries
                "name": "gate",
                "source": f"rtsp://admin:{CAMERA_PASSWORD}@127.0.0.1:{free_port()}/live"
                f"?channel=1&token={TOKEN}",
                "reconnect": {"initial_s": 0.2, "max_s": 0.5},
            },
        ],
        "models": [
            {"name": "det", "path": str(MODELS / "edgeyolo-demo-det-int8.onnx"), "task": "detect"}
        ],
        "logging": {"level": level, "format": "json", "frame_sample": 1, "summary_interval_s": 1},
        "http": {"enabled": True, "host": "127.0.0.1", "port": free_port(), "token": HTTP_TOKEN},
        "sinks": {
            "mqtt": {
                "url": broker.url,
                "username": "edgeyolo",
                "password": PASSWORD,
                "prefix": pfx,
                "device_id": "box",
                "discovery": {"prefix": f"{pfx}-ha"},
            }
        },
    }


def _assert_clean(what: str, *outputs: str | bytes) -> None:
    for out in outputs:
        text = out.decode(errors="replace") if isinstance(out, bytes) else out
        for secret in SECRETS:
            assert secret not in text, f"{what} printed a secret ({secret[:3]}...):\n{text}"


def _write(tmp_path: Path, name: str, data: dict[str, Any]) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


async def _count_published(port: int, topic: str) -> None:
    async with Collector(port, [topic], username="edgeyolo", password=str(PASSWORD)) as c:
        await c.wait_for(lambda c: len(c.messages) >= 1, timeout=90, what=topic)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("level", ["debug", "info", "warning", "error"])
def test_no_secret_in_any_output(tmp_path: Path, level: str):
    """The numeric password works, and neither it, the camera's url password, its token nor
    the value of a misspelled password key appears in any output."""
    broker = Mosquitto(tmp_path / "broker", users={"edgeyolo": str(PASSWORD)})
    broker.start()
    try:
        pfx = f"t{uuid.uuid4().hex[:8]}"
        data = _config(broker, level, pfx)
        good = _write(tmp_path, "good.yaml", data)
        res = subprocess.run(edgeyolo_cmd("check-config", str(good)), capture_output=True)
        assert res.returncode == 0, res.stderr
        _assert_clean("check-config", res.stdout, res.stderr)

        err = tmp_path / "run.log"
        with err.open("wb") as errf:
            svc = subprocess.Popen(
                edgeyolo_cmd("run", "-c", str(good)), stdout=subprocess.PIPE, stderr=errf, cwd=REPO
            )
            try:
                # Published with the numeric password: the broker accepted it.
                asyncio.run(_count_published(broker.port, f"{pfx}/box/demo/count/person"))
            finally:
                svc.send_signal(signal.SIGTERM)
                out, _ = svc.communicate(timeout=60)
        _assert_clean("run", out, err.read_bytes())
        if level == "debug":
            assert b"source" in err.read_bytes()  # the camera url was logged, masked

        res = subprocess.run(
            edgeyolo_cmd("mqtt", "remove-discovery", "-c", str(good), "--clear-state"),
            capture_output=True,
            timeout=60,
        )
        assert res.returncode == 0, res.stderr
        _assert_clean("remove-discovery", res.stdout, res.stderr)

        # Broken configs: every message names the key, none shows the secret.
        mqtt = data["sinks"]["mqtt"]
        broken = [
            {**mqtt, "url": f"ftp://u:{CAMERA_PASSWORD}@host:1883"},
            {**mqtt, "url": f"mqtt://u:{CAMERA_PASSWORD}@host:99999"},
            {**mqtt, "pasword": TYPO_SECRET},
            {**mqtt, "password": [PASSWORD]},
        ]
        for i, bad in enumerate(broken):
            path = _write(tmp_path, f"bad{i}.yaml", {**data, "sinks": {"mqtt": bad}})
            for cmd in (
                ("check-config", "--no-models", str(path)),
                ("run", "-c", str(path)),
                ("mqtt", "remove-discovery", "-c", str(path)),
            ):
                res = subprocess.run(edgeyolo_cmd(*cmd), capture_output=True, timeout=60)
                assert res.returncode != 0, (cmd, res.stdout)
                assert b"sinks.mqtt." in res.stderr, res.stderr
                _assert_clean(" ".join(cmd[:2]), res.stdout, res.stderr)
        # Broken YAML quoting the line with the password.
        path = tmp_path / "bad.yaml"
        path.write_text(f"sinks: {{mqtt: {{url: x}}}}\n  password: {TYPO_SECRET}\n")
        res = subprocess.run(edgeyolo_cmd("check-config", str(path)), capture_output=True)
        assert res.returncode == 1
        assert b"not valid YAML" in res.stderr
        _assert_clean("check-config (bad YAML)", res.stdout, res.stderr)
    finally:
        broker.stop()
