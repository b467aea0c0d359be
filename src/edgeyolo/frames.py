"""Small frozen data that travels with every frame: the frame itself and its letterbox.

Also ``as_bgr``, the one place that turns whatever a decoder returned into the HxWx3 uint8
BGR image a ``Frame`` holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeyolo.errors import SourceError

MIN_SIDE = 8
MAX_SIDE = 16384


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured image.

    ``image`` is HxWx3 uint8 BGR (sources convert grey and BGRA). ``timestamp`` is wall-clock
    seconds (for events), ``captured_ns`` is ``time.monotonic_ns()`` at capture (for latency).
    """

    camera: str
    seq: int
    image: npt.NDArray[np.uint8]
    timestamp: float
    captured_ns: int

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How an image of ``src_w`` x ``src_h`` was placed into a ``dst_w`` x ``dst_h`` input.

    Ultralytics' geometry for a static input: scale by ``gain = min(dst_h/src_h, dst_w/src_w)``,
    resized side rounded, centred padding with the odd pixel going to the bottom/right.
    The inverse divides by the resize ratio actually applied on each axis
    (``new_w/src_w``, ``new_h/src_h``: they differ from ``gain`` when a side was rounded), as
    Ultralytics' ``scale_boxes`` does.
    """

    src_w: int
    src_h: int
    dst_w: int
    dst_h: int
    gain: float
    new_w: int
    new_h: int
    pad_left: int
    pad_top: int

    @classmethod
    def fit(cls, src_w: int, src_h: int, dst_w: int, dst_h: int) -> Letterbox:
        """Compute the letterbox of a ``src_w`` x ``src_h`` image into ``dst_w`` x ``dst_h``."""
        if src_w <= 0 or src_h <= 0:
            raise ValueError(f"image size must be positive, got {src_w}x{src_h}")
        gain = min(dst_h / src_h, dst_w / src_w)
        new_w = min(dst_w, max(1, round(src_w * gain)))
        new_h = min(dst_h, max(1, round(src_h * gain)))
        dw = (dst_w - new_w) / 2
        dh = (dst_h - new_h) / 2
        # Ultralytics: top/left = round(d - 0.1), so the odd pixel goes to bottom/right.
        pad_left = round(dw - 0.1)
        pad_top = round(dh - 0.1)
        return cls(src_w, src_h, dst_w, dst_h, gain, new_w, new_h, pad_left, pad_top)

    @property
    def gain_x(self) -> float:
        """Horizontal resize ratio actually applied."""
        return self.new_w / self.src_w

    @property
    def gain_y(self) -> float:
        """Vertical resize ratio actually applied."""
        return self.new_h / self.src_h

    def boxes_to_source(self, boxes: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Map Nx4 xyxy boxes in input pixels back to source pixels, clipped, in place."""
        if boxes.flags.c_contiguous:
            self.points_to_source(boxes.reshape(-1, 2))  # a view: (x1, y1), (x2, y2) pairs
        else:
            boxes[...] = self.points_to_source(boxes.reshape(-1, 2)).reshape(boxes.shape)
        return boxes

    def points_to_source(self, xy: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Map ...x2 points in input pixels back to source pixels, clipped, in place.

        Unpad, scale, clip, in float32: the same operations, in the same order, as
        Ultralytics' ``scale_boxes``/``scale_coords``.
        """
        xy -= np.array([self.pad_left, self.pad_top], np.float32)
        xy /= np.array([self.gain_x, self.gain_y], np.float32)
        np.clip(xy, 0, np.array([self.src_w, self.src_h], np.float32), out=xy)
        return xy


def as_bgr(image: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """Return ``image`` as HxWx3 uint8 BGR, converting grey, BGRA and 16-bit images.

    Raises ``SourceError`` for shapes that are not images at all, or absurdly small/large ones.
    """
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3:
        raise SourceError(
            f"frame has {image.ndim} dimensions (shape {image.shape}); expected HxWxC"
        )
    h, w, c = image.shape
    if not (MIN_SIDE <= h <= MAX_SIDE and MIN_SIDE <= w <= MAX_SIDE):
        raise SourceError(f"frame of {w}x{h} pixels is outside {MIN_SIDE}..{MAX_SIDE} per side")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise SourceError(f"frame has element type {image.dtype}; expected uint8 or uint16")
    # Plain numpy, the same pixels as cv2's GRAY2BGR / BGRA2BGR: frames.py imports no OpenCV.
    if c == 3:
        out = image
    elif c == 1:
        out = np.repeat(image, 3, axis=2)
    elif c == 4:
        out = image[:, :, :3]
    else:
        raise SourceError(f"frame has {c} channels; expected 1 (grey), 3 (BGR) or 4 (BGRA)")
    return np.ascontiguousarray(out)
