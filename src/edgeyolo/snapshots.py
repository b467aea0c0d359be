"""Snapshots: per camera and label, the best picture of an object as a JPEG.

``SnapshotStage`` is a stage (``edgeyolo.stages``) after the tracker. Per frame it only
compares scores: for each configured label it looks at the best detection of that label.

* With track ids (the tracker ran), a detection is a candidate when it is the best score
  its object (model, track id) has had so far: a new object's first sighting, then each
  better view of it.
* Without track ids, the latest detection of the label is the candidate.

At most one candidate per label is kept (the best since the last snapshot; without tracking,
the latest; a tracked candidate is not displaced by an untracked model's detection), holding
a reference to its frame: no copy. When the label's
``min_interval_s`` has passed and no encode of this camera is running, the candidate is drawn
(``mode: frame``: the whole frame with its box; ``crop``: the object with a margin), scaled to
``max_width``, JPEG-encoded in a worker thread and handed to ``publish(camera, label, jpeg)``
(the MQTT sink, retained). A JPEG over ``max_bytes`` is re-encoded at lower quality and size
and skipped if it still does not fit.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np
import structlog

from edgeyolo.annotate import model_colour

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy.typing as npt

    from edgeyolo.annotate import OutputLike
    from edgeyolo.config import SnapshotConfig
    from edgeyolo.stages import FrameResult

_TRACKS_KEPT = 1024  # best score per tracked object, oldest forgotten first
_CROP_MARGIN = 0.15


@dataclass(slots=True)
class _Candidate:
    model_index: int
    model: str
    label: str
    score: float
    box: tuple[float, float, float, float]
    image: npt.NDArray[np.uint8]
    tracked: bool


class SnapshotStage:
    """Picks and publishes one camera's snapshots (see the module docstring)."""

    def __init__(
        self,
        camera: str,
        config: SnapshotConfig,
        publish: Callable[[str, str, bytes], None],
    ) -> None:
        self.camera = camera
        self.config = config
        self._publish = publish
        self._labels = set(config.labels)
        self._models = None if config.models is None else set(config.models)
        self._pending: dict[str, _Candidate] = {}
        self._last_sent: dict[str, float] = {}
        self._track_best: OrderedDict[tuple[str, int], float] = OrderedDict()
        self._encoding: asyncio.Future[None] | None = None
        self._closed = False
        self.published = 0
        self.skipped_too_big = 0
        self._log = structlog.get_logger("edgeyolo.snapshots").bind(camera=camera)

    def __call__(self, result: FrameResult) -> FrameResult:
        for index, o in enumerate(result.outputs):
            if self._models is not None and o.model not in self._models:
                continue
            self._consider(index, o, result.frame.image)
        if self._pending and (self._encoding is None or self._encoding.done()):
            self._maybe_encode()
        return result

    def _consider(self, index: int, o: OutputLike, image: npt.NDArray[np.uint8]) -> None:
        dets, names, model = o.detections, o.labels, o.model
        if len(dets) == 0:
            return
        scores = dets.scores.tolist()
        class_ids = dets.class_ids.tolist()
        track_ids = getattr(dets, "track_ids", None)
        tracks = None if track_ids is None else np.asarray(track_ids).tolist()
        seen: set[str] = set()
        for i, cid in enumerate(class_ids):  # rows are sorted by score, best first
            label = names[cid] if 0 <= cid < len(names) else str(cid)
            if label not in self._labels or scores[i] < self.config.min_score:
                continue
            if tracks is None:
                if label in seen:
                    continue  # the best of this label in this frame is the latest detection
                seen.add(label)
            else:
                tid = tracks[i]
                if tid is None or tid < 0:
                    continue
                key = (model, int(tid))
                best = self._track_best.get(key)
                if best is not None and scores[i] <= best:
                    continue
                self._track_best[key] = scores[i]
                self._track_best.move_to_end(key)
                while len(self._track_best) > _TRACKS_KEPT:
                    self._track_best.popitem(last=False)
            pending = self._pending.get(label)
            # A tracked object's best view is not displaced by an untracked model's latest
            # detection, nor by a worse tracked one.
            if (
                pending is not None
                and pending.tracked
                and (tracks is None or pending.score >= scores[i])
            ):
                continue
            x1, y1, x2, y2 = dets.boxes[i].tolist()
            self._pending[label] = _Candidate(
                index, model, label, scores[i], (x1, y1, x2, y2), image, tracks is not None
            )

    def _maybe_encode(self) -> None:
        now = time.monotonic()
        for label, cand in self._pending.items():
            if now - self._last_sent.get(label, -1e18) >= self.config.min_interval_s:
                del self._pending[label]
                self._last_sent[label] = now
                loop = asyncio.get_running_loop()
                fut = loop.run_in_executor(None, self._render, cand)
                self._encoding = asyncio.ensure_future(self._finish(cand, fut))
                return

    async def _finish(self, cand: _Candidate, fut: asyncio.Future[bytes | None]) -> None:
        try:
            await self._deliver(cand, fut)
        finally:
            if self._pending and not self._closed:
                self._maybe_encode()  # another label may be due: do not wait for a frame

    async def _deliver(self, cand: _Candidate, fut: asyncio.Future[bytes | None]) -> None:
        try:
            jpeg = await fut
        except Exception as exc:
            self._log.error("snapshot failed", label=cand.label, error=f"{exc}")
            return
        if jpeg is None:
            self.skipped_too_big += 1
            self._log.warning(
                "snapshot skipped: larger than max_bytes even when re-encoded smaller",
                label=cand.label,
                max_bytes=self.config.max_bytes,
            )
            return
        if self._closed:
            return
        self.published += 1
        self._publish(self.camera, cand.label, jpeg)

    def _render(self, cand: _Candidate) -> bytes | None:
        """Draw, scale and encode (runs in a worker thread); None when it cannot fit."""
        text = f"{cand.label} {cand.score:.2f}"
        img = render_snapshot(
            cand.image, cand.box, text, self.config, model_colour(cand.model_index)
        )
        return encode_bounded(img, self.config.quality, self.config.max_bytes)

    def close(self) -> None:
        """Publish nothing more (an encode still running is discarded)."""
        self._closed = True


def render_snapshot(
    image: npt.NDArray[np.uint8],
    box: tuple[float, float, float, float],
    text: str,
    config: SnapshotConfig,
    colour: tuple[int, int, int] = (56, 56, 255),
) -> npt.NDArray[np.uint8]:
    """The picture of one detection: the frame with its box, or a crop around it; scaled."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = box
    if config.mode == "crop":
        mx, my = (x2 - x1) * _CROP_MARGIN, (y2 - y1) * _CROP_MARGIN
        cx1, cy1 = max(0, int(x1 - mx)), max(0, int(y1 - my))
        cx2, cy2 = min(w, int(np.ceil(x2 + mx))), min(h, int(np.ceil(y2 + my)))
        out: npt.NDArray[np.uint8] = image[cy1 : max(cy2, cy1 + 1), cx1 : max(cx2, cx1 + 1)].copy()
    else:
        out = image.copy()
        p1, p2 = (round(x1), round(y1)), (round(x2), round(y2))
        cv2.rectangle(out, p1, p2, colour, 2, cv2.LINE_AA)
        cv2.putText(
            out,
            text,
            (p1[0], max(14, p1[1] - 5)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.5,
            colour,
            1,
            cv2.LINE_AA,
        )
    if out.shape[1] > config.max_width:
        scale = config.max_width / out.shape[1]
        size = (config.max_width, max(1, round(out.shape[0] * scale)))
        out = np.asarray(cv2.resize(out, size, interpolation=cv2.INTER_AREA), np.uint8)
    return out


def encode_bounded(img: npt.NDArray[np.uint8], quality: int, max_bytes: int) -> bytes | None:
    """JPEG of ``img`` within ``max_bytes``: lower quality first, then smaller; None if never."""
    q = quality
    for _ in range(6):
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
        if ok and buf.size <= max_bytes:
            return bytes(buf)
        if q > 40:
            q = max(40, q - 20)
        else:
            img = np.asarray(cv2.resize(img, None, fx=0.7, fy=0.7, interpolation=cv2.INTER_AREA))
    return None
