"""Frames from files, read once and in order: one image, a folder of images, or a video.

The one home of the readers the commands use outside the service (predict, bench, doctor,
quantize and the INT8 calibrator of build, and the ``bench`` tools). Live cameras, paced
playback and looping are ``sources/capture.py``. Every frame comes out as HxWx3 uint8 BGR
(``frames.as_bgr``); errors are ``SourceError`` naming the file.

Videos are decoded sequentially, never by seeking: seeking is unreliable for many codecs
(it can land a frame off), and ``grab()`` skips the colour conversion of frames not kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from edgeyolo.errors import SourceError
from edgeyolo.frames import as_bgr
from edgeyolo.sources.kinds import IMAGE_SUFFIXES  # one list: what sources.kinds calls "image"

if TYPE_CHECKING:
    from collections.abc import Collection, Iterator
    from pathlib import Path

    import numpy.typing as npt

    Image = npt.NDArray[np.uint8]


def is_image_file(path: Path) -> bool:
    """True when ``path``'s suffix is one of the image formats read as a single frame."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def image_files(folder: Path) -> list[Path]:
    """The images of ``folder`` (not recursive), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))


def read_image(path: Path) -> Image:
    """One image file as BGR (grey, BGRA and 16-bit images converted)."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise SourceError(f"{path}: cannot decode image")
    return as_bgr(image)


def video_frame_count(path: Path) -> int:
    """Frames in the video at ``path``: from its header, or counted when it records none."""
    cap = _open_video(path)
    try:
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if total <= 0:
            total = 0
            while cap.grab():
                total += 1
    finally:
        cap.release()
    return total


def video_frames(
    path: Path, *, keep: Collection[int] | None = None, limit: int | None = None
) -> Iterator[tuple[int, Image]]:
    """``(index, frame)`` of the video at ``path``, in order.

    ``keep``: only these frame indices (the others are grabbed, not decoded), ending after
    the last of them. ``limit``: at most this many frames. ``SourceError`` when OpenCV cannot
    open the file or decode its first frame.
    """
    last = max(keep, default=-1) if keep is not None else None
    cap = _open_video(path)
    try:
        index = 0
        kept = 0
        while (last is None or index <= last) and (limit is None or kept < limit):
            if not cap.grab():
                if index == 0:
                    raise SourceError(f"{path}: OpenCV cannot decode this video (codec or format)")
                return
            if keep is None or index in keep:
                ok, frame = cap.retrieve()
                if ok and frame is not None:
                    kept += 1
                    yield index, as_bgr(frame)
            index += 1
    finally:
        cap.release()


def iter_frames(source: Path, limit: int | None = None, *, spread: bool = False) -> Iterator[Image]:
    """BGR frames of an image, a folder of images (in name order) or a video.

    ``limit``: at most this many frames. ``spread``: pick them evenly across the whole source
    (first and last included) rather than taking the first ``limit``, so that, for example,
    a calibration sees a video's variety rather than its first seconds.
    """
    if limit is not None and limit <= 0:
        raise SourceError(f"{source}: the number of frames to read must be positive, got {limit}")
    if not source.exists():
        raise SourceError(f"{source}: no such file or folder")
    if source.is_dir():
        files = image_files(source)
        if not files:
            suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
            raise SourceError(f"{source}: the folder holds no images ({suffixes})")
        picks = range(len(files)) if limit is None else _picks(len(files), limit, spread)
        for i in picks:
            yield read_image(files[i])
    elif is_image_file(source):
        yield read_image(source)
    else:
        keep = None
        if spread and limit is not None:
            keep = set(_picks(video_frame_count(source), limit, spread=True))
        for _, frame in video_frames(source, keep=keep, limit=limit):
            yield frame


def _picks(total: int, count: int, spread: bool) -> list[int]:
    """``count`` indices of ``range(total)``: the first ones, or spread evenly over it."""
    if total <= count:
        return list(range(total))
    if not spread:
        return list(range(count))
    picks = np.unique(np.linspace(0, total - 1, count).round().astype(np.int64))
    return [int(i) for i in picks]


def _open_video(path: Path) -> cv2.VideoCapture:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise SourceError(f"{path}: OpenCV cannot decode this video (codec or format)")
    return cap
