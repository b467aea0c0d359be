"""The seed script's CPU pre/post-processing, re-written as a benchmark baseline.

Only ``edgeyolo bench --cpu-stages`` uses this: it times the way the blog script did the
work (see docs SEED.md) on the same frames and raw outputs as our pipeline, so the printed
speed-up is measured in the same run on the same machine. Its known defects (x1y1x2y2 boxes
fed to NMSBoxes, class-agnostic IoU 0.1) are kept on purpose: it is the baseline's cost we
want, not its results.
"""

from __future__ import annotations

import time
from typing import Any

import cv2
import numpy as np


def _seed_letterbox(img: Any, h: int, w: int) -> tuple[Any, float]:
    ih, iw = img.shape[:2]
    scale = min(w / iw, h / ih)
    nw, nh = int(iw * scale), int(ih * scale)
    canvas = np.full((h, w, 3), 114, np.uint8)
    canvas[:nh, :nw] = cv2.resize(img, (nw, nh))
    return canvas, scale


def _seed_xyxy(b: Any, scale: float) -> Any:
    half_w, half_h = b[:, 2] / 2, b[:, 3] / 2
    return (
        np.stack([b[:, 0] - half_w, b[:, 1] - half_h, b[:, 0] + half_w, b[:, 1] + half_h], 1)
        / scale
    )


def _seed_nms(boxes: Any, scores: Any, thr: float) -> list[int]:
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(int(i))
        xx1 = np.maximum(boxes[i, 0], boxes[order[1:], 0])
        yy1 = np.maximum(boxes[i, 1], boxes[order[1:], 1])
        xx2 = np.minimum(boxes[i, 2], boxes[order[1:], 2])
        yy2 = np.minimum(boxes[i, 3], boxes[order[1:], 3])
        inter = np.maximum(0, xx2 - xx1) * np.maximum(0, yy2 - yy1)
        area_i = (boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])
        areas = (boxes[order[1:], 2] - boxes[order[1:], 0]) * (
            boxes[order[1:], 3] - boxes[order[1:], 1]
        )
        iou = inter / (area_i + areas - inter + 1e-9)
        order = order[1:][iou <= thr]
    return keep


class SeedPipeline:
    """Per frame: one letterbox + blob, copied into a host buffer per model; then a full
    transpose, argmax and threshold per model output, and NMS."""

    def __init__(self, models: list[tuple[str, tuple[int, int]]]) -> None:
        self.models = models
        self.hosts = [np.empty((1, 3, h, w), np.float32) for _, (h, w) in models]

    def run(self, img: Any, raws: list[Any]) -> tuple[float, float]:
        t0 = time.perf_counter_ns()
        # One letterbox and blob (all models share 640x640), copied into every model's buffer.
        _, (h, w) = self.models[0]
        canvas, scale = _seed_letterbox(img, h, w)
        blob = cv2.dnn.blobFromImage(canvas, 1 / 255.0, (w, h), swapRB=True, crop=False)
        for host in self.hosts:
            np.copyto(host, blob)
        scales = [scale] * len(self.models)
        t1 = time.perf_counter_ns()
        for (task, _), raw, scale in zip(self.models, raws, scales, strict=True):
            out = raw.reshape(raw.shape[-2], raw.shape[-1]).T
            if task == "detect":
                scores = out[:, 4:]
                ids = np.argmax(scores, axis=1)
                conf = scores[np.arange(len(ids)), ids]
                m = conf > 0.3
                xyxy = _seed_xyxy(out[m, :4], scale)
                cv2.dnn.NMSBoxes(xyxy.astype(int).tolist(), conf[m].tolist(), 0.3, 0.1)
            else:
                conf = out[:, 4]
                m = conf > 0.1
                keep = _seed_nms(_seed_xyxy(out[m, :4], scale), conf[m], 0.45)
                kpts = out[m][keep, 5:].reshape(-1, 17, 3)
                kpts[..., :2] /= scale
                _ = kpts[..., 2] >= 0.2
        t2 = time.perf_counter_ns()
        return (t1 - t0) / 1e6, (t2 - t1) / 1e6
