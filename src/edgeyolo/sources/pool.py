"""Reusable frame buffers the capture thread decodes into, e.g. page-locked (pinned) memory.

The TensorRT backend hands a camera a pool of pinned HxWx3 buffers of its frame size
(``Backend.frame_pool``); the capture thread reads each frame straight into a free one
(``cv2.VideoCapture.read(buffer)``), so the GPU path uploads the captured frame as it is,
without first copying it into its own staging buffer.

A buffer goes back to the pool when the last reference to the frame's array (or any view of
it) is gone, never earlier: whatever still holds a frame (a stage, the live view, a snapshot)
keeps its pixels. When every buffer is in use the capture allocates as before (counted in
``misses``); nothing waits for a buffer.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy.typing as npt


class FramePool:
    """Equal HxWx3 uint8 buffers, lent out one per frame and returned when it is dropped."""

    def __init__(self, buffers: Sequence[npt.NDArray[np.uint8]]) -> None:
        if not buffers:
            raise ValueError("a frame pool needs at least one buffer")
        self.shape: tuple[int, ...] = tuple(buffers[0].shape)
        if any(tuple(b.shape) != self.shape for b in buffers):
            raise ValueError("the buffers of a frame pool must have one shape")
        self.size = len(buffers)
        self._free = list(buffers)
        self._lock = threading.Lock()
        self._closed = False
        self.lent = 0  # buffers handed out so far
        self.misses = 0  # frames read into a fresh array because none was free

    @property
    def free(self) -> int:
        with self._lock:
            return len(self._free)

    def take(self) -> npt.NDArray[np.uint8] | None:
        """A free buffer (a view whose death returns it), or None when all are in use."""
        with self._lock:
            if self._closed:
                return None
            if not self._free:
                self.misses += 1
                return None
            buf = self._free.pop()
            self.lent += 1
        # Every numpy view of what is lent keeps ``token`` alive (numpy collapses the bases of
        # views of views only down to an array whose base is not an array, here the lease),
        # so the buffer comes back once the frame and all its crops are gone.
        token = _Lease(buf)
        lent: npt.NDArray[np.uint8] = np.asarray(token)
        weakref.finalize(token, self._give_back, buf)
        return lent

    def _give_back(self, buf: npt.NDArray[np.uint8]) -> None:
        # Runs in whichever thread dropped the last reference.
        with self._lock:
            self._free.append(buf)

    def close(self) -> list[npt.NDArray[np.uint8]]:
        """Lend no more; the buffers not in use now (the caller may free those only)."""
        with self._lock:
            self._closed = True
            free, self._free = self._free, []
            return free


class _Lease:
    """The base object of a lent array: alive exactly as long as some view of it is."""

    def __init__(self, buf: npt.NDArray[np.uint8]) -> None:
        self._buf = buf

    @property
    def __array_interface__(self) -> dict[str, object]:
        return self._buf.__array_interface__
