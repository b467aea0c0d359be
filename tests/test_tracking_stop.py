"""A clean stop or reload ends every live track: `end` events reach a real subscriber first.

`edgeyolo run --loop` on the demo video with a tracked detection model and a zone, publishing
to a real mosquitto; a real subscriber reads the objects and zone topics and availability.
A SIGHUP (changed config) restarts the service, a SIGTERM stops it: each time every track
that started ends (its zone `leave`, then its `end`), before the service says `offline`.
"""

from __future__ import annotations

import json
import signal
import uuid
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from conftest import DEMO_VIDEO, DET
from helpers import run_async
from mosquitto import Collector, Mosquitto, validate
from test_mqtt_service import Service

if TYPE_CHECKING:
    from pathlib import Path

    from mosquitto import Received

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]


def write_config(tmp_path: Path, pfx: str, url: str, summary_s: int) -> Path:
    data = {
        "cameras": [
            {
                "name": "demo",
                "source": str(DEMO_VIDEO),
                "zones": [
                    {
                        "name": "ground",
                        "normalized": True,
                        "labels": ["person"],
                        "points": [[0, 0.3], [1, 0.3], [1, 1], [0, 1]],
                    }
                ],
            }
        ],
        "models": [
            {"name": "det", "path": str(DET), "task": "detect", "tracking": {"enabled": True}}
        ],
        "logging": {"frame_sample": 0, "summary_interval_s": summary_s},
        "sinks": {
            "jsonl": {"enabled": True, "path": "-"},
            "mqtt": {
                "url": url,
                "prefix": pfx,
                "device_id": "svc",
                "discovery": {"enabled": False},
                "state_min_interval_s": 0.0,
            },
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def check_lifecycles(events: list[dict[str, Any]], cuts: list[int]) -> int:
    """Every ``new`` is of a track not live and every ``end`` of a live one, and no track is
    live at any of the ``cuts`` (indices into ``events``: where the service went away).
    Returns how many tracks started."""
    live: set[int] = set()
    started = 0
    for i, ev in enumerate(events):
        if i in cuts:
            assert live == set(), f"tracks {sorted(live)} still live when the service went away"
        if ev["type"] != "track":
            continue
        if ev["kind"] == "new":
            assert ev["track_id"] not in live
            live.add(ev["track_id"])
            started += 1
        elif ev["kind"] == "end":
            live.remove(ev["track_id"])
        else:
            assert ev["track_id"] in live
    assert live == set(), f"tracks {sorted(live)} never ended"
    return started


def test_stop_and_reload_end_every_live_track(tmp_path: Path, broker: Mosquitto) -> None:
    pfx = f"stop-{uuid.uuid4().hex[:8]}"
    base = f"{pfx}/svc/demo"
    avail = f"{pfx}/svc/availability"
    config = write_config(tmp_path, pfx, broker.url, 60)

    def news(c: Collector) -> int:
        return sum(m.json().get("kind") == "new" for m in c.on(f"{base}/objects"))

    def occupied(c: Collector) -> bool:
        last = c.last(f"{base}/zone/ground/person")
        return last is not None and last.json()["count"] > 0

    async def main() -> list[Received]:
        async with Collector(broker.port, [f"{base}/objects", f"{base}/zone/#", avail]) as col:
            svc = Service(tmp_path, config)
            try:
                await col.wait_for(
                    lambda c: news(c) >= 3 and occupied(c), 150, "3 tracks, people on the ground"
                )
                write_config(tmp_path, pfx, broker.url, 61)  # a change: SIGHUP restarts
                svc.proc.send_signal(signal.SIGHUP)
                await col.wait_for(
                    lambda c: (
                        [m.payload for m in c.on(avail)] == [b"online", b"offline", b"online"]
                    ),
                    90,
                    "the restart (offline, then online again)",
                )
                before = news(col)
                await col.wait_for(
                    lambda c: news(c) >= before + 3 and occupied(c), 150, "tracks after the restart"
                )
            except BaseException:
                svc.stop(signal.SIGKILL)
                print(svc.logs()[-3000:])
                raise
            assert svc.stop() == 0
            await col.wait_for(lambda c: len(c.on(avail)) == 4, 20, "offline after SIGTERM")
            return list(col.messages)

    messages = run_async(main(), 420)
    assert [m.payload for m in messages if m.topic == avail] == [
        b"online",
        b"offline",
        b"online",
        b"offline",
    ]
    # In arrival order: the objects stream, and where the service said offline.
    stream: list[dict[str, Any]] = []
    cuts = []
    for m in messages:
        if m.topic == avail and m.payload == b"offline":
            cuts.append(len(stream))
        elif m.topic == f"{base}/objects":
            ev = m.json()
            validate(ev, ev["type"])
            stream.append(ev)
    assert check_lifecycles(stream, cuts) >= 6
    # The stop's ends are the last events, stamped with the last frame the tracker saw.
    assert (stream[-1]["type"], stream[-1]["kind"]) == ("track", "end")
    ends = [e for e in stream if e["type"] == "track" and e["kind"] == "end"]
    assert all(e["after"]["last_seen"] <= e["timestamp"] for e in ends)
    # The zone empties at each stop: the last occupancy before each offline is 0.
    count = None
    for m in messages:
        if m.topic == f"{base}/zone/ground/person":
            count = m.json()["count"]
        elif m.topic == avail and m.payload == b"offline":
            assert count == 0
    # The JSON lines on stdout tell the same story (the restart: one process, two runs).
    lines = [json.loads(x) for x in (tmp_path / "stdout.jsonl").read_text().splitlines()]
    objects = [e for e in lines if e["type"] in {"track", "zone", "line"}]
    assert check_lifecycles(objects, []) >= 6
    assert [(e["type"], e.get("kind")) for e in objects[-1:]] == [("track", "end")]
