"""Page-locked host memory seen as a numpy array, and plain device memory."""

from __future__ import annotations

import ctypes
import math
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeyolo.closing import Closing
from edgeyolo.gpu.errors import check, driver


class PinnedBuffer(Closing):
    """Page-locked host memory with a numpy view, for truly asynchronous copies.

    Fill ``array`` in place (``np.copyto``, slicing, ``out=``); never rebind it to a new
    array: a copy from pageable memory would silently become synchronous, and the GPU would
    read the old pages. The array must not be used after ``close()``.
    """

    def __init__(self, shape: tuple[int, ...], dtype: npt.DTypeLike, mapped: bool = False) -> None:
        self._drv = driver()
        dt = np.dtype(dtype)
        self.nbytes = max(1, math.prod(shape) * dt.itemsize)
        flags = 0x02 if mapped else 0  # CU_MEMHOSTALLOC_DEVICEMAP
        self.ptr: int = int(check(self._drv.cuMemHostAlloc(self.nbytes, flags), "cuMemHostAlloc"))
        # Mapped memory is read by kernels in place (integrated GPUs: no copy at all).
        self.device_ptr = self.ptr
        if mapped:
            self.device_ptr = int(
                check(self._drv.cuMemHostGetDevicePointer(self.ptr, 0), "cuMemHostGetDevicePointer")
            )
        raw = (ctypes.c_ubyte * self.nbytes).from_address(self.ptr)
        self.array: npt.NDArray[Any] = (
            np.frombuffer(memoryview(raw), dtype=np.uint8, count=math.prod(shape) * dt.itemsize)
            .view(dt)
            .reshape(shape)
        )
        self._closed = False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        check(self._drv.cuMemFreeHost(self.ptr), "cuMemFreeHost")


class DeviceBuffer(Closing):
    """``nbytes`` of device memory; ``ptr`` is what ``set_tensor_address`` takes."""

    def __init__(self, nbytes: int) -> None:
        self._drv = driver()
        self.nbytes = max(1, int(nbytes))
        self.handle: Any = check(self._drv.cuMemAlloc(self.nbytes), "cuMemAlloc")
        self.ptr = int(self.handle)
        self._closed = False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        check(self._drv.cuMemFree(self.handle), "cuMemFree")
