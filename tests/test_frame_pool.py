"""Frame pools: the capture decodes into lent buffers, which come back only when dropped.

Plain numpy buffers stand in for the pinned memory the TensorRT backend lends (the pool does
not care what the memory is); the video and OpenCV's decoder are real.
"""

from __future__ import annotations

import asyncio
import gc

import cv2
import numpy as np
import pytest

from conftest import DEMO_VIDEO
from edgeyolo.config import CameraConfig
from edgeyolo.sources import CaptureSource
from edgeyolo.sources.pool import FramePool


def buffers(n: int, shape=(540, 960, 3)) -> list[np.ndarray]:
    return [np.zeros(shape, np.uint8) for _ in range(n)]


def owner(view: np.ndarray, pool_buffers: list[np.ndarray]) -> int:
    """Which pool buffer ``view`` lives in (-1: none)."""
    hits = [i for i, b in enumerate(pool_buffers) if np.shares_memory(view, b)]
    return hits[0] if hits else -1


def test_buffers_come_back_only_when_every_view_is_gone():
    bufs = buffers(2, (4, 4, 3))
    pool = FramePool(bufs)
    a, b = pool.take(), pool.take()
    assert a is not None
    assert b is not None
    assert pool.take() is None  # all lent: the caller allocates
    assert pool.misses == 1
    crop = a[1:3]  # a view keeps the buffer lent
    del a
    gc.collect()
    assert pool.free == 0
    del crop
    gc.collect()
    assert pool.free == 1
    again = pool.take()
    assert again is not None
    assert np.shares_memory(again, bufs[0]) or np.shares_memory(again, bufs[1])
    assert not np.shares_memory(again, b)
    assert pool.close() == []  # b and `again` are still out
    assert pool.take() is None  # closed: lends no more
    assert pool.lent == 3
    del b, again


def test_pool_refuses_mixed_shapes():
    with pytest.raises(ValueError, match="one shape"):
        FramePool([np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8)])


async def _read(src: CaptureSource, n: int, keep: int) -> tuple[list[np.ndarray], list[int]]:
    """``n`` frames; keep the images of the first ``keep``, drop the rest at once."""
    await src.start()
    kept, owners = [], []
    try:
        for i in range(n):
            frame = await src.next()
            assert frame is not None
            if src.frame_pool is not None:
                owners.append(owner(frame.image, POOL_BUFFERS))
            if i < keep:
                kept.append(frame.image)
            else:
                kept.append(frame.image.copy())
            del frame
    finally:
        await src.close()
    return kept, owners


POOL_BUFFERS: list[np.ndarray] = []


def test_capture_decodes_into_the_pool_with_the_pixels_of_a_plain_read():
    POOL_BUFFERS[:] = buffers(6)
    pool = FramePool(POOL_BUFFERS)
    src = CaptureSource(CameraConfig(name="c", source=str(DEMO_VIDEO), pace="fast"))
    src.frame_pool = pool
    images, owners = asyncio.run(_read(src, 40, keep=2))
    cap = cv2.VideoCapture(str(DEMO_VIDEO))
    for i, img in enumerate(images):
        ok, ref = cap.read()
        assert ok
        np.testing.assert_array_equal(img, ref, err_msg=f"frame {i + 1}")
    cap.release()
    # Every frame was decoded into a pool buffer (one being read, one pending, one being
    # consumed at a time, besides the two kept), and the two kept frames' buffers were never
    # lent again while they were held.
    assert all(o >= 0 for o in owners), owners
    assert pool.misses == 0
    assert owners[0] != owners[1]
    assert not set(owners[2:]) & set(owners[:2])
    assert pool.lent >= 40
    assert src.frame_pool is pool


def test_pool_of_another_size_is_given_up_and_frames_still_arrive():
    POOL_BUFFERS[:] = buffers(2, (480, 640, 3))
    src = CaptureSource(CameraConfig(name="c", source=str(DEMO_VIDEO), pace="fast"))
    src.frame_pool = FramePool(POOL_BUFFERS)
    images, _ = asyncio.run(_read(src, 5, keep=0))
    assert src.frame_pool is None
    assert all(img.shape == (540, 960, 3) for img in images)
    cap = cv2.VideoCapture(str(DEMO_VIDEO))
    for img in images:
        _ok, ref = cap.read()
        np.testing.assert_array_equal(img, ref)
    cap.release()
