"""GStreamer sources through the OpenCV in use: finite pipelines end, live ones reconnect.

These run for real only with an OpenCV built with GStreamer (Debian's python3-opencv here,
JetPack's on a Jetson): ``make test-system-opencv`` runs them in a venv that uses the system's
OpenCV and numpy < 2, and sets EDGEYOLO_TEST_GSTREAMER=1 so that in CI a missing GStreamer or
plugin fails them instead of skipping. With PyPI's OpenCV (no GStreamer) they skip, and the
documented "no GStreamer" error of ``check-config`` and ``run`` is tested instead.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import itertools
import json
import os
import signal
import time
from functools import cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import structlog
import yaml

from conftest import DEMO_VIDEO, DET, require
from edgeyolo.config import CameraConfig, load_config
from edgeyolo.sources import CaptureSource
from edgeyolo.sources.opencv import opencv_info
from helpers import run_cli, start_cli

pytestmark = pytest.mark.gstreamer

GST = opencv_info().gstreamer
SYSTEM_RUN = bool(os.environ.get("EDGEYOLO_TEST_GSTREAMER"))
BGR = "videoconvert ! video/x-raw,format=BGR ! appsink"
TEST_SRC = "videotestsrc num-buffers={n} ! video/x-raw,width=320,height=240 ! " + BGR


@cache
def _opens(pipeline: str) -> bool:
    cap = cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)
    try:
        return bool(cap.isOpened())
    finally:
        cap.release()


def need_gstreamer(probe: str | None = None, what: str = "") -> None:
    """This OpenCV has GStreamer (and, with ``probe``, that pipeline opens)."""
    require(
        GST is not None,
        f"{opencv_info().describe()} has no GStreamer; `make test-system-opencv` runs this",
        in_ci=SYSTEM_RUN,
    )
    if probe is not None:
        require(_opens(probe), f"GStreamer cannot run {probe!r}: {what}", in_ci=SYSTEM_RUN)


def need_element_plugin(library: str, package: str) -> None:
    found = [*Path("/usr/lib").glob(f"*/gstreamer-1.0/{library}")]
    found += Path("/usr/lib/gstreamer-1.0").glob(library)
    reason = f"GStreamer plugin {library} missing (apt install {package})"
    require(bool(found), reason, in_ci=SYSTEM_RUN)


async def drain(src: CaptureSource, limit: int = 10_000) -> list[Any]:
    frames = []
    await src.start()
    try:
        while len(frames) < limit:
            f = await asyncio.wait_for(src.next(), 30)
            if f is None:
                break
            frames.append(f)
    finally:
        await src.close()
    return frames


def test_the_system_opencv_install_path_keeps_the_system_cv2_and_numpy_1():
    """What `make test-system-opencv` installs: the distribution's cv2 (with GStreamer), no
    OpenCV from PyPI shadowing it, numpy < 2 (the system cv2 is built for 1.x)."""
    require(SYSTEM_RUN, "only in the system-OpenCV venv (make test-system-opencv)", in_ci=False)
    assert opencv_info().origin == "system", opencv_info().describe()
    assert GST is not None
    assert int(np.__version__.split(".")[0]) < 2, np.__version__
    for dist in ("opencv-python", "opencv-python-headless", "opencv-contrib-python"):
        with pytest.raises(importlib.metadata.PackageNotFoundError):
            importlib.metadata.distribution(dist)


def test_videotestsrc_with_num_buffers_ends_by_itself():
    """A finite pipeline ends after its N frames: no "reopening", next() returns None."""
    need_gstreamer()
    src = CaptureSource(CameraConfig(name="t", source=TEST_SRC.format(n=12), pace="fast"))
    assert not src.live
    t0 = time.monotonic()
    frames = asyncio.run(drain(src))
    assert [f.seq for f in frames] == list(range(1, 13))
    assert frames[0].image.shape == (240, 320, 3)
    assert src.stats.reconnects == 0
    assert time.monotonic() - t0 < 20


def test_finite_pipeline_loops_by_opening_it_again():
    """loop: true plays a finite pipeline again from the start (5 frames per round)."""
    need_gstreamer()
    cfg = CameraConfig(name="t", source=TEST_SRC.format(n=5), pace="fast", loop=True)
    src = CaptureSource(cfg)
    frames = asyncio.run(drain(src, limit=13))
    assert [f.seq for f in frames] == list(range(1, 14))
    assert src.stats.reconnects == 0


def test_live_override_reconnects_and_resets_the_backoff():
    """live: true makes an ending pipeline a camera: each end is followed by a reopen after
    reconnect.initial_s (it delivered frames, so the backoff starts afresh each time)."""
    need_gstreamer()
    cfg = CameraConfig(
        name="t",
        source=TEST_SRC.format(n=3),
        live=True,
        reconnect={"initial_s": 0.05, "max_s": 1.0},
    )
    src = CaptureSource(cfg)
    assert src.live
    with structlog.testing.capture_logs() as logs:
        frames = asyncio.run(drain(src, limit=10))
    assert len(frames) == 10
    stopped = [e for e in logs if e["event"] == "source stopped delivering frames, reopening"]
    assert len(stopped) >= 3
    assert {e["retry_in_s"] for e in stopped} == {0.05}
    assert {e["frames"] for e in stopped} <= {1, 2, 3}
    opened = [e for e in logs if e["event"] == "source opened"]
    assert opened[0]["kind"] == "gstreamer"
    assert opened[0]["live"] is True


def _events(stderr: Path) -> list[dict[str, Any]]:
    out = []
    for line in stderr.read_text().splitlines():
        assert line.startswith("{"), f"not a JSON log line: {line!r}"
        out.append(json.loads(line))
    return out


def _ts(event: dict[str, Any]) -> float:
    from datetime import datetime

    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


@pytest.mark.slow
def test_live_pipeline_that_fails_reconnects_with_the_documented_backoff(tmp_path):
    """A v4l2src camera that is not there: each attempt logs the wait that follows, and the
    waits double from reconnect.initial_s up to reconnect.max_s. stderr stays JSON lines."""
    need_gstreamer()
    need_element_plugin("libgstvideo4linux2.so", "gstreamer1.0-plugins-good")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "cameras": [
                    {
                        "name": "csi",
                        "source": f"v4l2src device=/dev/edgeyolo-no-such-camera ! {BGR}",
                        "reconnect": {"initial_s": 0.2, "max_s": 0.8},
                    }
                ],
                "models": [{"name": "det", "path": str(DET), "task": "detect"}],
            }
        )
    )
    err = tmp_path / "err.log"
    proc = start_cli("run", "-c", str(cfg), "--log-format", "json", log=err)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if err.read_text().count("cannot open source, retrying") >= 6:
                break
            assert proc.poll() is None, err.read_text()
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        proc.kill()
    attempts = [e for e in _events(err) if e["event"] == "cannot open source, retrying"]
    assert len(attempts) >= 6
    assert [e["retry_in_s"] for e in attempts[:6]] == [0.2, 0.4, 0.8, 0.8, 0.8, 0.8]
    assert [e["attempt"] for e in attempts[:6]] == [1, 2, 3, 4, 5, 6]
    assert {e["kind"] for e in attempts} == {"gstreamer"}
    for before, after in itertools.pairwise(attempts[:6]):
        gap = _ts(after) - _ts(before)
        assert before["retry_in_s"] <= gap < before["retry_in_s"] + 0.5, (before, after, gap)


def _run_detections(config: Path, cwd: Path, frames: int) -> dict[int, list[dict[str, Any]]]:
    proc = run_cli(
        "run",
        "-c",
        str(config),
        "--max-frames",
        str(frames),
        "--log-format",
        "json",
        cwd=cwd,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    by_seq = {}
    for line in proc.stdout.splitlines():
        event = json.loads(line)
        if event["type"] == "detections":
            by_seq[event["seq"]] = event["detections"]
    return by_seq


def _iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@pytest.mark.slow
def test_filesrc_pipeline_gives_the_detections_of_the_file_source(tmp_path):
    """The demo video through `filesrc ! decodebin` finds what the file source finds, frame
    by frame. The relative location= is resolved against the config's folder (the run's
    working directory is elsewhere). GStreamer's colour conversion differs from FFmpeg's by a
    few levels, so boxes and scores are compared with a tolerance."""
    pipeline = (
        f"filesrc location=media/{DEMO_VIDEO.name} ! decodebin ! videoconvert ! "
        "video/x-raw,format=BGR ! appsink sync=false"
    )
    need_gstreamer(
        pipeline.replace("media/", f"{DEMO_VIDEO.parent}/"),
        "no H.264 decoder (apt install gstreamer1.0-libav)",
    )
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "media").symlink_to(DEMO_VIDEO.parent)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    model = {"name": "det", "path": str(DET), "task": "detect"}
    configs = {}
    for name, source in (("file", f"media/{DEMO_VIDEO.name}"), ("gst", pipeline)):
        configs[name] = conf / f"{name}.yaml"
        configs[name].write_text(
            yaml.safe_dump(
                {
                    "cameras": [{"name": "cam", "source": source, "pace": "fast"}],
                    "models": [model],
                }
            )
        )
    loaded = load_config(configs["gst"]).cameras[0].source
    assert f"location={DEMO_VIDEO.resolve()}" in str(loaded)
    frames = 24
    ref = _run_detections(configs["file"], elsewhere, frames)
    got = _run_detections(configs["gst"], elsewhere, frames)
    assert sorted(ref) == sorted(got) == list(range(1, frames + 1))
    matched = total = 0
    for seq, want in ref.items():
        have = got[seq]
        for d in want:
            if d["conf"] < 0.35:  # near the 0.25 threshold a level of colour may flip it
                continue
            total += 1
            best = max(
                (h for h in have if h["label"] == d["label"]),
                key=lambda h, d=d: _iou(h["box"], d["box"]),
                default=None,
            )
            if best is not None and _iou(best["box"], d["box"]) > 0.9:
                assert abs(best["conf"] - d["conf"]) < 0.05, (seq, d, best)
                matched += 1
    assert total > frames  # the demo has people in every frame
    assert matched == total


@pytest.mark.slow
def test_opencv_without_gstreamer_gives_the_documented_error(tmp_path):
    """PyPI's OpenCV has no GStreamer: check-config and run both say so and what to do,
    instead of "ok" and retrying forever."""
    require(
        GST is None,
        f"{opencv_info().describe()} has GStreamer; this tests PyPI's OpenCV",
        in_ci=not SYSTEM_RUN,
    )
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "cameras": [{"name": "csi", "source": f"nvarguscamerasrc ! {BGR}"}],
                "models": [{"name": "det", "path": str(DET), "task": "detect"}],
            }
        )
    )
    check = run_cli("check-config", str(cfg))
    assert check.returncode == 1
    assert "cameras[0].source: this OpenCV has no GStreamer support" in check.stderr
    assert "--system-site-packages" in check.stderr
    t0 = time.monotonic()
    run = run_cli("run", "-c", str(cfg), "--log-format", "json", timeout=120)
    assert run.returncode == 2
    assert "cameras[csi].source: this OpenCV has no GStreamer support" in run.stderr
    assert "cannot open source, retrying" not in run.stderr
    assert time.monotonic() - t0 < 60
