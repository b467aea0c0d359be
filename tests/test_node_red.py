"""deploy/node-red/flow.json in a real Node-RED, fed by real edgeyolo services over a real broker.

Node-RED (a pinned 4.x) is installed with npm under the repository's ignored ``.cache/`` the
first time (reruns reuse it). The test owns a Node-RED user folder and a settings file, and
deploys a copy of the flow through Node-RED's admin API, as an import would. The copy differs
from the shipped flow only in what a user sets (broker address and credentials) and in taps:
each ``mqtt in`` also writes what it receives to a file, and each debug node's input passes
through a 0.5 s delay and is written to a file too. The delay keeps a message in flight while
later ones are processed, so a function that handed out its stored object (issue 14, item 8)
would show the later value.

The broker requires a password (the production set-up of docs/mqtt.md). Node-RED is stopped
while one edgeyolo box publishes, then started again: pose events are not retained, so the only
way it can see them is the persistent session (fixed client id, clean session off, QoS 1).
A second box with the same camera name must not overwrite the first box's counts.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import DET, POSE, REPO, edgeyolo_cmd, require
from helpers import short_clip
from mosquitto import Mosquitto, free_port

pytestmark = [pytest.mark.nodered, pytest.mark.mqtt, pytest.mark.slow]

NODE_RED_VERSION = "4.1.8"
CACHE = REPO / ".cache" / f"node-red-{NODE_RED_VERSION}"
FLOW = REPO / "deploy" / "node-red" / "flow.json"
USER, PASSWORD = "edgeyolo", "node-red-test-pw"
FRAMES = 45


def node_red_script() -> tuple[str, Path]:
    """``node`` and Node-RED's red.js, installing Node-RED under .cache/ once."""
    node, npm = shutil.which("node"), shutil.which("npm")
    require(node is not None and npm is not None, "Node.js and npm are needed (node, npm)")
    assert node is not None
    assert npm is not None
    package = CACHE / "node_modules" / "node-red" / "package.json"
    if not package.is_file() or json.loads(package.read_text())["version"] != NODE_RED_VERSION:
        CACHE.mkdir(parents=True, exist_ok=True)
        install = [npm, "install", "--prefix", str(CACHE), "--no-audit", "--no-fund"]
        subprocess.run(
            [*install, "--loglevel=error", f"node-red@{NODE_RED_VERSION}"],
            check=True,
            timeout=600,
        )
    return node, package.parent / "red.js"


class NodeRed:
    """One Node-RED process on a free loopback port, with its own user folder."""

    def __init__(self, folder: Path) -> None:
        self.node, self.red = node_red_script()
        self.folder = folder
        self.port = free_port()
        self.log = folder / "node-red.log"
        self.settings = folder / "settings.js"
        folder.mkdir(parents=True, exist_ok=True)
        self.settings.write_text(
            "module.exports = {\n"
            f"  uiHost: '127.0.0.1', uiPort: {self.port},\n"
            "  flowFile: 'flows.json', credentialSecret: false,\n"
            "  logging: {console: {level: 'info', metrics: false, audit: false}},\n"
            "  diagnostics: {enabled: false}, telemetry: {enabled: false},\n"
            "  editorTheme: {tours: false, projects: {enabled: false}},\n"
            "};\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.base = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    self.node,
                    str(self.red),
                    "--settings",
                    str(self.settings),
                    "-u",
                    str(self.folder),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.wait_for(lambda: self.get("/settings") is not None, "the admin API")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            finally:
                self.proc.kill()
        self.proc = None

    def get(self, path: str) -> Any:
        try:
            with urllib.request.urlopen(self.base + path, timeout=5) as resp:  # noqa: S310
                return json.loads(resp.read())
        except OSError:
            return None

    def deploy(self, flow: list[dict[str, Any]]) -> None:
        """POST the flow to the admin API (a full deploy, as the editor's Import + Deploy)."""
        req = urllib.request.Request(  # noqa: S310 - loopback only
            self.base + "/flows",
            data=json.dumps(flow).encode(),
            headers={"Content-Type": "application/json", "Node-RED-Deployment-Type": "full"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
            assert resp.status in {200, 204}

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, check: Any, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            assert self.proc is not None
            assert self.proc.poll() is None, f"Node-RED exited:\n{self.log_text()[-3000:]}"
            time.sleep(0.2)
        pytest.fail(f"Node-RED: no {what} within {timeout} s:\n{self.log_text()[-3000:]}")

    def wait_connected(self, times: int) -> None:
        """Until the broker node logged its ``times``-th connection."""
        self.wait_for(
            lambda: self.log_text().count("Connected to broker: edgeyolo-node-red@") >= times,
            "connection to the broker",
        )


def flow_copy(flow: list[dict[str, Any]], broker: Mosquitto, taps: Path) -> list[dict[str, Any]]:
    """The shipped flow with the user's settings (broker, credentials) and file taps."""
    nodes = json.loads(json.dumps(flow))
    by_id = {n["id"]: n for n in nodes}
    conf = by_id["edgeyolo.broker"]
    conf.update(broker="127.0.0.1", port=str(broker.port))
    conf["credentials"] = {"user": USER, "password": PASSWORD}
    extra: list[dict[str, Any]] = []

    def file_tap(name: str) -> str:
        tap = {
            "id": f"tap.file.{name}",
            "type": "file",
            "z": "edgeyolo.tab",
            "filename": str(taps / f"{name}.jsonl"),
            "filenameType": "str",
            "appendNewline": True,
            "createDir": True,
            "overwriteFile": "false",
            "encoding": "none",
            "wires": [[]],
        }
        extra.append(tap)
        return tap["id"]

    for node in nodes:
        if node["type"] == "mqtt in":
            # What the flow's input received, with its topic.
            wrap = {
                "id": f"tap.in.{node['id']}",
                "type": "function",
                "z": "edgeyolo.tab",
                "func": "msg.payload = {topic: msg.topic, payload: msg.payload}; return msg;",
                "outputs": 1,
                "wires": [[file_tap("in-" + node["id"])]],
            }
            extra.append(wrap)
            node["wires"][0].append(wrap["id"])
    for node in [n for n in nodes if n["type"] == "debug"]:
        delay = {
            "id": f"tap.delay.{node['id']}",
            "type": "delay",
            "z": "edgeyolo.tab",
            "pauseType": "delay",
            "timeout": "0.5",
            "timeoutUnits": "seconds",
            "rate": "1",
            "nbRateUnits": "1",
            "rateUnits": "second",
            "randomFirst": "1",
            "randomLast": "5",
            "randomUnits": "seconds",
            "drop": False,
            "allowrate": False,
            "outputs": 1,
            "wires": [[node["id"], file_tap("out-" + node["id"])]],
        }
        extra.append(delay)
        for other in nodes:
            for output in other.get("wires", []):
                if node["id"] in output:
                    output[output.index(node["id"])] = delay["id"]
    return nodes + extra


def lines(path: Path) -> list[Any]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_box(tmp_path: Path, broker: Mosquitto, device: str, video: Path, pose: bool) -> None:
    """One edgeyolo service ("box") publishing to the broker until the clip ends."""
    models = [{"name": "det", "path": str(DET), "task": "detect"}]
    if pose:
        models.append({"name": "pose", "path": str(POSE), "task": "pose"})
    cfg = tmp_path / f"{device}.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                # Same camera name on both boxes.
                "cameras": [{"name": "door", "source": str(video), "pace": "fast"}],
                "models": models,
                "sinks": {
                    "jsonl": {"enabled": False},
                    "mqtt": {
                        "url": broker.url,
                        "username": USER,
                        "password": PASSWORD,
                        "device_id": device,
                        "discovery": {"enabled": False},
                    },
                },
            }
        )
    )
    done = subprocess.run(
        edgeyolo_cmd("run", "-c", str(cfg), "--log-format", "json"),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def fold_counts(received: list[Any]) -> list[dict[str, Any]]:
    """What "latest counts" must have sent after each count message, in order."""
    state: dict[str, Any] = {}
    out = []
    for msg in received:
        device = msg["topic"].split("/")[1]
        p = msg["payload"]
        state.setdefault(device, {}).setdefault(p["camera"], {})[p["label"]] = p["count"]
        out.append(json.loads(json.dumps(state)))
    return out


def test_flow_in_a_real_node_red(tmp_path):
    shipped = json.loads(FLOW.read_text())
    conf = next(n for n in shipped if n["type"] == "mqtt-broker")
    # What the flow promises before any of it runs (docs/deploy.md, "Node-RED").
    assert conf["clientid"] == "edgeyolo-node-red"
    assert conf["cleansession"] is False
    assert conf["autoUnsubscribe"] is False
    assert conf["credentials"] == {"user": "edgeyolo", "password": ""}
    assert next(n for n in shipped if n["id"] == conf["tls"])["type"] == "tls-config"
    assert {n["qos"] for n in shipped if n["type"] == "mqtt in"} == {"1"}

    broker = Mosquitto(tmp_path / "broker", users={USER: PASSWORD})
    broker.start()
    red = NodeRed(tmp_path / "node-red")
    taps = tmp_path / "taps"
    video = short_clip(tmp_path / "clip.avi", FRAMES)
    try:
        red.start()
        red.deploy(flow_copy(shipped, broker, taps))
        red.wait_connected(1)
        deployed = {n["id"] for n in red.get("/flows")}
        assert {n["id"] for n in shipped} <= deployed
        # Node-RED away while box-a publishes: its pose events must wait for it at the broker.
        red.stop()
        run_box(tmp_path, broker, "box-a", video, pose=True)
        red.start()
        red.wait_connected(2)
        run_box(tmp_path, broker, "box-b", video, pose=False)

        def settled() -> bool:
            avail = lines(taps / "out-edgeyolo.avail.debug.jsonl")
            final = {a["device"]: a["status"] for a in avail}
            return final == {"box-a": "offline", "box-b": "offline"}

        red.wait_for(settled, "offline from both boxes on the availability output")
        time.sleep(1.0)  # the 0.5 s delays let their last messages out
    finally:
        red.stop()
        broker.stop()

    # Pose events are not retained: box-a's reached Node-RED only through its persistent
    # session, queued by the broker while Node-RED was stopped.
    poses = lines(taps / "in-edgeyolo.pose.in.jsonl")
    assert poses, "no pose event reached Node-RED after its restart"
    assert {p["topic"] for p in poses} == {"edgeyolo/box-a/door/pose/pose"}
    lying = lines(taps / "out-edgeyolo.pose.debug.jsonl")
    assert [x["seq"] for x in lying] == [
        p["payload"]["seq"] for p in poses if p["payload"]["event_type"] == "lying"
    ]
    assert all(x["device"] == "box-a" for x in lying)

    # Counts: each output is a copy of the state as it was when sent (the delay would show a
    # later state otherwise), keyed by device, so the two "door" cameras stay apart.
    received = lines(taps / "in-edgeyolo.counts.in.jsonl")
    sent = lines(taps / "out-edgeyolo.counts.debug.jsonl")
    assert len(received) >= 4
    assert sent == fold_counts(received)
    assert len({json.dumps(s, sort_keys=True) for s in sent}) > 1
    final = sent[-1]
    assert set(final) == {"box-a", "box-b"}
    assert set(final["box-a"]["door"]) == set(final["box-b"]["door"]) >= {"person"}

    occupancy = lines(taps / "out-edgeyolo.occupancy.debug.jsonl")
    assert occupancy
    assert set(occupancy[-1]) == {"box-a", "box-b"}
    assert {"occupied", "count", "label", "since"} <= set(occupancy[-1]["box-b"]["door"])
    assert "Connected to broker: edgeyolo-node-red@mqtt://127.0.0.1" in red.log_text()
    assert "[error]" not in red.log_text()
    assert PASSWORD not in red.log_text()
