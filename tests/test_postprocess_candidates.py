"""The candidates' decode (NMS + mapping back, the GPU path's host part) against a textbook one.

Candidates come from real model outputs (ONNX Runtime on demo frames, bus.jpg, zidane.jpg)
through the GPU decode kernel's numpy model, shuffled as its atomic counter leaves them. The
reference below does the same arithmetic one float32 scalar at a time in plain Python: sort by
score with the anchor index as tie-break, class shift, greedy IoU against every kept box,
unpad/unscale/clip per coordinate. The fast path must give exactly the same arrays, including
on tied scores, on classes reshuffled so that boxes of different classes overlap, on empty and
inverted boxes, and beyond the pairwise-matrix size.
"""

from __future__ import annotations

from functools import cache

import cv2
import numpy as np
import pytest

from conftest import DEMO_VIDEO, DET, POSE, shared_media
from edgeyolo.engines.onnxruntime import open_session
from edgeyolo.frames import Letterbox
from edgeyolo.gpu.decode import reference_records, to_candidates
from edgeyolo.postprocess import Candidates, Detections, Thresholds, decode
from edgeyolo.postprocess.nms import threshold_f32
from edgeyolo.postprocess.yolo import MAX_NMS, MAX_WH, decode_candidates
from edgeyolo.preprocess import Preprocessor

f32 = np.float32
SPEC = {"det": (DET, 80, None), "pose": (POSE, 1, (17, 3))}
IMAGES = ["demo#0", "demo#60", "demo#140", "bus.jpg", "zidane.jpg"]


@cache
def image(name: str) -> np.ndarray:
    if not name.startswith("demo#"):
        img = cv2.imread(str(shared_media(name)))
        assert img is not None, name
        return img
    cap = cv2.VideoCapture(str(DEMO_VIDEO))
    for _ in range(int(name[5:]) + 1):
        ok, img = cap.read()
        assert ok, f"{DEMO_VIDEO}: {name} unreadable"
    cap.release()
    return img


@cache
def raw_output(model: str, name: str) -> tuple[np.ndarray, Letterbox]:
    path, _, _ = SPEC[model]
    blob = np.empty((1, 3, 640, 640), np.float32)
    lb = Preprocessor(640, 640)(image(name), blob)
    session = open_session(path, providers=["CPUExecutionProvider"])
    return session.run(None, {"images": blob})[0], lb


def candidates(model: str, name: str, conf: float) -> tuple[Candidates, Letterbox]:
    raw, lb = raw_output(model, name)
    _, nc, kpt = SPEC[model]
    nk = 0 if kpt is None else kpt[0] * kpt[1]
    rec = reference_records(raw, conf, nc, nk)
    return to_candidates(np.random.default_rng(1).permutation(rec), nk), lb


def iou_over(a: tuple, b: tuple, thr: float) -> bool:
    """torchvision's IoU of two xyxy float32 boxes, compared with ``thr`` as a double."""
    w = max(min(a[2], b[2]) - max(a[0], b[0]), f32(0))
    h = max(min(a[3], b[3]) - max(a[1], b[1]), f32(0))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) > thr  # 0/0 is NaN: suppresses nothing


def to_source(v: np.float32, pad: int, gain: float, side: int) -> np.float32:
    v = (v - f32(pad)) / f32(gain)
    return min(max(v, f32(0)), f32(side))


def reference(c: Candidates, lb: Letterbox, th: Thresholds, kpt: tuple | None) -> Detections:
    """Ultralytics' non_max_suppression on candidates, the slow and obvious way."""
    with np.errstate(all="ignore"):
        order = sorted(range(len(c)), key=lambda i: (-float(c.scores[i]), int(c.anchors[i])))
        order = order[:MAX_NMS]
        plain, shifted = {}, {}
        for i in order:
            cx, cy, w, h = (f32(v) for v in c.box[:, i])
            box = (cx - w / f32(2), cy - h / f32(2), cx + w / f32(2), cy + h / f32(2))
            off = f32(c.class_ids[i]) * f32(MAX_WH)
            plain[i], shifted[i] = box, tuple(v + off for v in box)
        kept: list[int] = []
        for i in order:
            if not any(iou_over(shifted[k], shifted[i], th.iou) for k in kept):
                kept.append(i)
                if len(kept) == th.max_det:
                    break
        boxes = [
            [
                to_source(x1, lb.pad_left, lb.gain_x, lb.src_w),
                to_source(y1, lb.pad_top, lb.gain_y, lb.src_h),
                to_source(x2, lb.pad_left, lb.gain_x, lb.src_w),
                to_source(y2, lb.pad_top, lb.gain_y, lb.src_h),
            ]
            for x1, y1, x2, y2 in (plain[i] for i in kept)
        ]
        kpts = None
        if kpt is not None:
            kpts = np.zeros((len(kept), *kpt), np.float32)
            for row, i in enumerate(kept):
                for j, (x, y, *rest) in enumerate(c.kpt_rows[:, i].reshape(kpt)):
                    kx = to_source(f32(x), lb.pad_left, lb.gain_x, lb.src_w)
                    ky = to_source(f32(y), lb.pad_top, lb.gain_y, lb.src_h)
                    kpts[row, j] = [kx, ky, *rest]
    return Detections(
        np.array(boxes, np.float32).reshape(-1, 4),
        c.scores[kept].astype(np.float32),
        c.class_ids[kept].astype(np.int32),
        kpts,
    )


def assert_same(ours: Detections, ref: Detections) -> None:
    assert len(ours) == len(ref)
    np.testing.assert_array_equal(ours.boxes, ref.boxes)
    np.testing.assert_array_equal(ours.scores, ref.scores)
    np.testing.assert_array_equal(ours.class_ids, ref.class_ids)
    assert ours.boxes.flags.c_contiguous
    assert ours.boxes.dtype == np.float32
    assert ours.class_ids.dtype == np.int32
    if ref.keypoints is None:
        assert ours.keypoints is None
    else:
        assert ours.keypoints is not None
        assert ours.keypoints.flags.c_contiguous
        np.testing.assert_array_equal(ours.keypoints, ref.keypoints)


def replace(c: Candidates, **fields: np.ndarray) -> Candidates:
    parts = {k: getattr(c, k) for k in ("anchors", "box", "scores", "class_ids", "kpt_rows")}
    return Candidates(**{**parts, **fields})


@pytest.mark.parametrize("name", IMAGES)
@pytest.mark.parametrize("model", ["det", "pose"])
@pytest.mark.parametrize(
    ("conf", "iou", "max_det"), [(0.25, 0.7, 300), (0.001, 0.45, 300), (0.05, 0.7, 5)]
)
def test_decode_of_real_candidates_equals_the_reference(model, name, conf, iou, max_det):
    """Real candidates at three settings (tens to hundreds of candidates): identical arrays."""
    c, lb = candidates(model, name, conf)
    _, nc, kpt = SPEC[model]
    if conf == 0.001:
        assert len(c) > 40, f"{model} {name}: only {len(c)} candidates"
    th = Thresholds(conf, iou, max_det)
    ours = decode(c, lb, th, nc, kpt)
    assert_same(ours, reference(c, lb, th, kpt))
    assert (0 < len(ours) <= max_det) or len(c) == 0  # zidane.jpg: none above 0.25


@pytest.mark.parametrize("name", ["demo#0", "bus.jpg"])
@pytest.mark.parametrize("model", ["det", "pose"])
def test_tied_scores_resolve_by_anchor_index(model, name):
    """Scores rounded to 1/16 (dozens of exact ties among overlapping boxes): anchor order wins."""
    c, lb = candidates(model, name, 0.01)
    tied = replace(c, scores=(np.round(c.scores * 16) / 16).astype(np.float32) + f32(0.01))
    assert len(np.unique(tied.scores)) < len(tied) / 4
    _, nc, kpt = SPEC[model]
    for iou in (0.3, 0.7):
        th = Thresholds(0.01, iou, 300)
        ours = decode(tied, lb, th, nc, kpt)
        assert_same(ours, reference(tied, lb, th, kpt))
        assert np.all(np.diff(ours.scores) <= 0)


@pytest.mark.parametrize("name", ["demo#0", "zidane.jpg"])
def test_class_aware_nms_keeps_overlapping_boxes_of_other_classes(name):
    """Classes reshuffled over the same boxes: each class suppresses only its own."""
    c, lb = candidates("det", name, 0.05)
    mixed = replace(c, class_ids=(c.anchors % 3).astype(np.int32))
    th = Thresholds(0.05, 0.7, 300)
    ours = decode(mixed, lb, th, 80)
    assert_same(ours, reference(mixed, lb, th, None))
    single = decode(replace(c, class_ids=np.zeros(len(c), np.int32)), lb, th, 80)
    assert len(ours) > len(single)  # overlapping boxes survive when their classes differ
    # A single-class model skips the class shift: the same result as with it.
    pc, plb = candidates("pose", name, 0.05)
    args = (pc.box, pc.scores, pc.class_ids, pc.kpt_rows, plb, th, (17, 3))
    assert_same(decode_candidates(*args, num_classes=1), decode_candidates(*args))


def test_empty_and_inverted_boxes_suppress_like_torchvision():
    """Zero-width and inverted boxes (0/0 IoU: NaN, suppresses nothing) take the careful path."""
    c, lb = candidates("det", "demo#0", 0.05)
    box = c.box.copy()
    box[2, ::5] = 0  # zero width
    box[3, 1::7] = -box[3, 1::7]  # inverted height
    odd = replace(c, box=box)
    th = Thresholds(0.05, 0.7, 300)
    assert_same(decode(odd, lb, th, 80), reference(odd, lb, th, None))


def test_beyond_the_pairwise_matrix():
    """Over 1024 candidates (a very low threshold): the row-per-kept-box path, same result."""
    raw, lb = raw_output("det", "demo#0")
    best = raw[0, 4:].max(axis=0)
    conf = float(np.sort(best)[-1300])
    c = to_candidates(reference_records(raw, conf, 80, 0), 0)
    assert 1100 < len(c) < 1400
    th = Thresholds(conf, 0.7, 300)
    assert_same(decode(c, lb, th, 80), reference(c, lb, th, None))


@pytest.mark.parametrize("thr", [0.1, 0.45, 0.5, 0.7, 0.7000001, 1 / 3, 1.0])
def test_float32_threshold_answers_like_the_double(thr):
    """x > threshold_f32(t) <=> float(x) > t for the float32 values around t."""
    t32 = threshold_f32(thr)
    around = np.float32(thr) + np.arange(-50, 51, dtype=np.float32) * np.spacing(np.float32(thr))
    xs = np.concatenate([around, np.nextafter(around, f32(2)), [np.nan, 0, 1]]).astype(f32)
    np.testing.assert_array_equal(xs > t32, xs.astype(np.float64) > thr)
