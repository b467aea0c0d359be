"""Letterbox + normalize a BGR frame into a caller-owned NCHW buffer, in place.

The seed script resized, converted and copied the same blob once per model. Here one
``Preprocessor`` serves every model with the same input size: the frame is resized once into
a reused uint8 buffer, split into reused planes, and written as RGB/255 straight into the
caller's (possibly pinned) input array. Padding (114/255) is written only when the geometry
changes, since the image always lands on the same pixels for frames of one size.
"""

from __future__ import annotations

import weakref
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edgeyolo.frames import Letterbox, as_bgr

# as_bgr lives in frames.py now; re-exported for the code that imports it from here.
__all__ = ["PAD_VALUE", "Preprocessor", "as_bgr"]

PAD_VALUE = 114


def _owner(arr: npt.NDArray[Any]) -> Any:
    """The object that owns an array's memory (the root of its ``base`` chain)."""
    while isinstance(arr.base, np.ndarray):
        arr = arr.base
    return arr if arr.base is None else arr.base


def _owner_ref(arr: npt.NDArray[Any]) -> weakref.ref[Any] | None:
    try:
        return weakref.ref(_owner(arr))
    except TypeError:  # an owner without weak references: pad every frame, to be safe
        return None


class Preprocessor:
    """Letterboxes frames into one model input shape; reuses its buffers between frames."""

    def __init__(self, dst_h: int, dst_w: int) -> None:
        self.dst_h = dst_h
        self.dst_w = dst_w
        self._geometry: Letterbox | None = None
        self._resized: npt.NDArray[np.uint8] | None = None
        self._planes: list[npt.NDArray[np.uint8]] = []
        # Output buffers that already hold the padding for the current geometry: data address
        # -> weak reference to the memory's owner. An address reused by a new buffer after the
        # old one was freed has a dead reference, so it gets padded again.
        self._padded: dict[int, weakref.ref[Any] | None] = {}

    def letterbox(self, src_w: int, src_h: int) -> Letterbox:
        """The letterbox for a source of this size (cached: sources rarely change size)."""
        lb = self._geometry
        if lb is None or lb.src_w != src_w or lb.src_h != src_h:
            lb = Letterbox.fit(src_w, src_h, self.dst_w, self.dst_h)
            self._geometry = lb
            self._resized = np.empty((lb.new_h, lb.new_w, 3), np.uint8)
            self._planes = [np.empty((lb.new_h, lb.new_w), np.uint8) for _ in range(3)]
            self._padded.clear()
        return lb

    def _holds_padding(self, out: npt.NDArray[np.floating]) -> bool:
        ref = self._padded.get(out.__array_interface__["data"][0], None)
        return ref is not None and ref() is _owner(out)

    def __call__(self, image: npt.NDArray[np.uint8], out: npt.NDArray[np.floating]) -> Letterbox:
        """Write ``image`` (HxWx3 BGR uint8) letterboxed as 1x3xHxW RGB/255 into ``out``."""
        if out.shape != (1, 3, self.dst_h, self.dst_w):
            raise ValueError(
                f"output buffer shape {out.shape} != (1, 3, {self.dst_h}, {self.dst_w})"
            )
        h, w = image.shape[:2]
        lb = self.letterbox(w, h)
        if not self._holds_padding(out):
            out.fill(PAD_VALUE / 255.0)
            self._padded[out.__array_interface__["data"][0]] = _owner_ref(out)
        if (lb.new_w, lb.new_h) == (w, h):
            resized = image
        else:
            assert self._resized is not None
            resized = cv2.resize(  # type: ignore[assignment]
                image, (lb.new_w, lb.new_h), dst=self._resized, interpolation=cv2.INTER_LINEAR
            )
        cv2.split(resized, self._planes)
        y0, x0 = lb.pad_top, lb.pad_left
        scale = out.dtype.type(255.0)
        for c in range(3):
            # BGR -> RGB by plane order. A true division by 255 (not a multiply by 1/255,
            # which is 1 ulp off for half the byte values) gives Ultralytics' exact tensor.
            region = out[0, c, y0 : y0 + lb.new_h, x0 : x0 + lb.new_w]
            np.divide(self._planes[2 - c], scale, out=region)
        return lb
