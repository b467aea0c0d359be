"""Frame sources on real files: delivery policies, end of file, bad input."""

from __future__ import annotations

import asyncio
import threading

import cv2
import numpy as np
import pytest

from conftest import DEMO_VIDEO, shared_media
from edgeyolo.config import CameraConfig
from edgeyolo.errors import SourceError
from edgeyolo.sources import CaptureSource, source_kind


async def drain(src: CaptureSource, limit: int = 10_000, delay: float = 0.0) -> list:
    frames = []
    await src.start()
    try:
        while len(frames) < limit:
            f = await src.next()
            if f is None:
                break
            frames.append(f)
            if delay:
                await asyncio.sleep(delay)
    finally:
        await src.close()
    return frames


def test_fast_file_delivers_every_frame_then_ends():
    """pace: fast blocks the reader instead of dropping: all 300 frames arrive in order."""
    src = CaptureSource(CameraConfig(name="c", source=str(DEMO_VIDEO), pace="fast"))
    frames = asyncio.run(drain(src))
    assert [f.seq for f in frames] == list(range(1, 301))
    assert src.stats.dropped == 0
    assert frames[0].image.shape == (540, 960, 3)
    assert frames[0].image.dtype == np.uint8


def test_native_pace_with_slow_consumer_drops_and_counts():
    """A consumer slower than 15 fps gets the latest frame; the rest are counted as dropped."""
    src = CaptureSource(CameraConfig(name="c", source=str(DEMO_VIDEO), fps=30.0))
    frames = asyncio.run(drain(src, limit=8, delay=0.25))
    seqs = [f.seq for f in frames]
    assert seqs == sorted(seqs)
    assert seqs[-1] - seqs[0] > len(seqs)  # frames were skipped between deliveries
    assert src.stats.dropped > 0
    assert src.stats.dropped + len(frames) <= src.stats.captured + 1


def test_loop_restarts_file():
    src = CaptureSource(CameraConfig(name="c", source=str(DEMO_VIDEO), pace="fast", loop=True))
    frames = asyncio.run(drain(src, limit=320))
    assert len(frames) == 320
    np.testing.assert_array_equal(frames[0].image, frames[300].image)


def test_image_source_and_grey_conversion(tmp_path):
    grey = cv2.cvtColor(cv2.imread(str(shared_media("bus.jpg"))), cv2.COLOR_BGR2GRAY)
    path = tmp_path / "grey.png"
    cv2.imwrite(str(path), grey)
    src = CaptureSource(CameraConfig(name="c", source=str(path), pace="fast"))
    (frame,) = asyncio.run(drain(src))
    assert frame.image.shape == (1080, 810, 3)


def test_missing_file_is_a_clear_error(tmp_path):
    src = CaptureSource(CameraConfig(name="cam1", source=str(tmp_path / "nope.mp4")))
    with pytest.raises(SourceError, match=r"cameras\[cam1\].source: no such file: .*nope.mp4"):
        asyncio.run(drain(src))


def test_undecodable_video_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    src = CaptureSource(CameraConfig(name="cam1", source=str(bad)))
    with pytest.raises(SourceError, match=r"OpenCV cannot decode video .*broken.mp4"):
        asyncio.run(drain(src))


def test_unopenable_live_source_retries_and_stops(tmp_path):
    """A device that cannot open is retried with backoff until stopped; no exception."""
    cfg = CameraConfig(
        name="cam", source="/dev/video99", reconnect={"initial_s": 0.05, "max_s": 0.1}
    )

    async def main() -> tuple[int, object]:
        src = CaptureSource(cfg)
        await src.start()
        # Each failed open takes a while (OpenCV may try several back-ends): wait for three.
        for _ in range(200):
            if src.stats.reconnects >= 3:
                break
            await asyncio.sleep(0.05)
        src.stop()
        result = await asyncio.wait_for(src.next(), 5)
        await src.close()
        return src.stats.reconnects, result

    reconnects, result = asyncio.run(main())
    assert result is None
    assert reconnects >= 3
    assert not [t for t in threading.enumerate() if t.name.startswith("capture-")]


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        (0, "device"),
        ("2", "device"),
        ("/dev/video0", "device"),
        ("0", "device"),
        ("rtsp://h/s", "rtsp"),
        ("https://cam.local/mjpeg", "http"),
        ("rtmp://h/live", "stream"),
        ("v4l2src ! videoconvert ! appsink", "gstreamer"),
        ("a.jpg", "image"),
        ("a.mp4", "file"),
    ],
)
def test_source_kind(source, kind):
    assert source_kind(source) == kind


def test_real_pedestrian_video_decodes():
    """vtest.avi (MS-MPEG4 in AVI) is readable through the same source."""
    src = CaptureSource(CameraConfig(name="v", source=str(shared_media("vtest.avi")), pace="fast"))
    frames = asyncio.run(drain(src, limit=20))
    assert len(frames) == 20
    assert frames[0].image.shape == (576, 768, 3)
