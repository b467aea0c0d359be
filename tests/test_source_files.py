"""sources/files.py: frames of images, folders and videos, as OpenCV decodes them, in order."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeyolo.errors import SourceError
from edgeyolo.sources.files import iter_frames, read_image, video_frame_count, video_frames
from helpers import DEMO_VIDEO, shared_media


def decoded(video: Path, count: int) -> list[np.ndarray]:
    """The first ``count`` frames by plain sequential cv2 reads (the reference)."""
    cap = cv2.VideoCapture(str(video))
    out = []
    while len(out) < count:
        ok, img = cap.read()
        assert ok
        out.append(img)
    cap.release()
    return out


def test_first_frames_of_a_video_are_the_decoders_frames():
    """iter_frames with a limit gives the first N frames, pixel for pixel, as BGR uint8."""
    ref = decoded(DEMO_VIDEO, 3)
    got = list(iter_frames(DEMO_VIDEO, 3))
    assert len(got) == 3
    for a, b in zip(got, ref, strict=True):
        assert a.dtype == np.uint8
        assert a.shape == (540, 960, 3)
        np.testing.assert_array_equal(a, b)


def test_keep_yields_only_the_wanted_indices():
    """video_frames(keep=...) yields exactly those indices, each the frame at that position."""
    ref = decoded(DEMO_VIDEO, 6)
    got = list(video_frames(DEMO_VIDEO, keep={2, 5}))
    assert [i for i, _ in got] == [2, 5]
    np.testing.assert_array_equal(got[0][1], ref[2])
    np.testing.assert_array_equal(got[1][1], ref[5])


def test_spread_reaches_the_end_of_the_video():
    """spread=True picks the first and the last frame and ones between, not the first N."""
    total = video_frame_count(DEMO_VIDEO)
    assert total > 10
    spread = list(iter_frames(DEMO_VIDEO, 3, spread=True))
    (last,) = (f for i, f in video_frames(DEMO_VIDEO, keep={total - 1}))
    np.testing.assert_array_equal(spread[0], decoded(DEMO_VIDEO, 1)[0])
    np.testing.assert_array_equal(spread[-1], last)
    assert not np.array_equal(spread[1], spread[0])


def test_folder_is_read_in_name_order_with_grey_converted(tmp_path):
    """A folder's images come in name order, other files skipped; grey becomes 3-channel BGR."""
    bus = cv2.imread(str(shared_media("bus.jpg")))
    cv2.imwrite(str(tmp_path / "b.png"), cv2.cvtColor(bus, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(tmp_path / "a.png"), bus)
    (tmp_path / "notes.txt").write_text("not an image")
    a, b = iter_frames(tmp_path)
    np.testing.assert_array_equal(a, bus)
    assert b.shape == bus.shape
    assert (b[..., 0] == b[..., 2]).all()  # grey copied to every channel
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), bus)


@pytest.mark.parametrize("kind", ["missing", "empty folder", "not an image", "not a video"])
def test_errors_name_the_file(tmp_path, kind):
    """Every unreadable source is a SourceError naming the path."""
    path = tmp_path / "x"
    if kind == "empty folder":
        path.mkdir()
    elif kind == "not an image":
        path = tmp_path / "x.jpg"
        path.write_bytes(b"\x00not a jpeg")
    elif kind == "not a video":
        path = tmp_path / "x.mp4"
        path.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(SourceError, match=str(path)):
        list(iter_frames(path))
