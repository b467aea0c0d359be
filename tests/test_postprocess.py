"""Decode + NMS against Ultralytics' own predictions (tests/data/golden, made by
scripts/make_golden.py with ultralytics 8.4.190) and against a plain reference NMS."""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import DET, GOLDEN, POSE, REPO, shared_media
from edgeyolo.engines.onnxruntime import open_session
from edgeyolo.frames import Letterbox
from edgeyolo.postprocess import Thresholds, decode, nms
from edgeyolo.preprocess import Preprocessor
from helpers import run_cli

GOLDEN_FILES = sorted(GOLDEN.glob("ultralytics-*-conf*.json"))
MODELS = {"detect": DET, "pose": POSE}


@cache
def golden(name: str) -> dict:
    return json.loads((GOLDEN / name).read_text())


_FRAMES: dict[Path, list[np.ndarray]] = {}


def video_frames(path: Path, last: int) -> list[np.ndarray]:
    """Frames 0..last decoded sequentially (as the goldens were: no seeking), cached."""
    frames = _FRAMES.setdefault(path, [])
    if len(frames) > last:
        return frames
    frames.clear()
    cap = cv2.VideoCapture(str(path))
    while len(frames) <= last:
        ok, img = cap.read()
        assert ok, f"{path}: frame {len(frames)} unreadable"
        frames.append(img)
    cap.release()
    return frames


def golden_image(rec: dict) -> np.ndarray:
    shared = rec["root"] == "shared"
    path = shared_media(Path(rec["path"]).name) if shared else REPO / rec["path"]
    if rec["frame"] is None:
        img = cv2.imread(str(path))
    else:
        img = video_frames(path, rec["frame"])[rec["frame"]]
    if rec["crop"]:
        c = rec["crop"]
        img = np.ascontiguousarray(img[c["y"] : c["y"] + c["h"], c["x"] : c["x"] + c["w"]])
    digest = hashlib.sha256(np.ascontiguousarray(img).tobytes()).hexdigest()
    assert digest == rec["image_sha256"], f"{rec['id']}: decoded pixels differ from the golden's"
    return img


@cache
def session(task: str):
    return open_session(MODELS[task], providers=["CPUExecutionProvider"])


@cache
def raw_output(task: str, image_id: str) -> tuple[np.ndarray, Letterbox, str]:
    rec = next(
        r
        for r in golden(f"ultralytics-{'det' if task == 'detect' else 'pose'}-conf0.25.json")[
            "images"
        ]
        if r["id"] == image_id
    )
    img = golden_image(rec)
    blob = np.empty((1, 3, 640, 640), np.float32)
    lb = Preprocessor(640, 640)(img, blob)
    out = session(task).run(None, {"images": blob})[0]
    return out, lb, hashlib.sha256(blob.tobytes()).hexdigest()


def assert_same_detections(ours, theirs: list[dict], task: str, where: str) -> None:
    assert len(ours) == len(theirs), f"{where}: {len(ours)} detections, Ultralytics {len(theirs)}"
    # Near-tied scores may come out in either order: match each golden box to ours.
    unused = set(range(len(ours)))
    for g in theirs:
        gbox = np.array(g["box"], np.float32)
        cands = [i for i in unused if ours.class_ids[i] == g["class_id"]]
        assert cands, f"{where}: no detection of class {g['class_id']} left for {g}"
        i = min(cands, key=lambda j: float(np.abs(ours.boxes[j] - gbox).max()))
        unused.discard(i)
        assert np.abs(ours.boxes[i] - gbox).max() <= 1.0, f"{where}: box {ours.boxes[i]} vs {gbox}"
        assert abs(float(ours.scores[i]) - g["conf"]) <= 1e-3, where
        if task == "pose":
            k = np.array(g["keypoints"], np.float32)
            assert np.abs(ours.keypoints[i][:, :2] - k[:, :2]).max() <= 1.5, where
            assert np.abs(ours.keypoints[i][:, 2] - k[:, 2]).max() <= 1e-3, where


@pytest.mark.parametrize("name", [p.name for p in GOLDEN_FILES])
def test_matches_ultralytics_predict(name):
    """Same boxes (1 px), classes, confidences (1e-3), keypoints (1.5 px) as Ultralytics."""
    g = golden(name)
    task = g["model"]["task"]
    s = g["settings"]
    nc = 80 if task == "detect" else 1
    kpt = (17, 3) if task == "pose" else None
    assert len(g["images"]) >= 14
    for rec in g["images"]:
        raw, lb, input_sha = raw_output(task, rec["id"])
        assert (lb.new_w, lb.new_h, lb.pad_left, lb.pad_top) == (
            rec["letterbox"]["new_w"],
            rec["letterbox"]["new_h"],
            rec["letterbox"]["pad_left"],
            rec["letterbox"]["pad_top"],
        )
        assert input_sha == rec["input_sha256"], f"{rec['id']}: input tensor differs"
        dets = decode(raw, lb, Thresholds(s["conf"], s["iou"], s["max_det"]), nc, kpt)
        assert_same_detections(dets, rec["detections"], task, f"{name}:{rec['id']}")


@pytest.mark.parametrize("frame", ["f000", "f120"])
@pytest.mark.parametrize("model", ["det", "pose"])
def test_decode_recorded_raw_output_bit_exact(model, frame):
    """On Ultralytics' recorded raw tensors (no ONNX Runtime involved) decode is exact."""
    task = "detect" if model == "det" else "pose"
    z = np.load(GOLDEN / f"ultralytics-raw-{model}-demo-scene-{frame}.npz")
    if "output0" in z.files:
        raw = z["output0"]
    else:
        raw = np.zeros(tuple(z["shape"]), np.float32)
        raw[0][:, z["anchors"]] = z["columns"]
    image_id = f"demo-scene#{int(frame[1:])}"
    for conf in ("0.25", "0.05", "0.001"):
        g = golden(f"ultralytics-{model}-conf{conf}.json")
        rec = next(r for r in g["images"] if r["id"] == image_id)
        lb = Letterbox.fit(rec["width"], rec["height"], 640, 640)
        dets = decode(
            raw,
            lb,
            Thresholds(float(conf), 0.7, 300),
            80 if task == "detect" else 1,
            (17, 3) if task == "pose" else None,
        )
        theirs = rec["detections"]
        assert len(dets) == len(theirs)
        np.testing.assert_array_equal(dets.class_ids, [d["class_id"] for d in theirs])
        np.testing.assert_array_equal(
            dets.scores, np.array([d["conf"] for d in theirs], np.float32)
        )
        np.testing.assert_array_equal(dets.boxes, np.array([d["box"] for d in theirs], np.float32))
        if task == "pose":
            np.testing.assert_array_equal(
                dets.keypoints, np.array([d["keypoints"] for d in theirs], np.float32)
            )


def reference_nms(boxes: np.ndarray, scores: np.ndarray, thr: float) -> list[int]:
    """Greedy NMS in plain Python, the textbook way."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep: list[int] = []
    for i in order:
        ok = True
        for k in keep:
            xx1, yy1 = max(boxes[i][0], boxes[k][0]), max(boxes[i][1], boxes[k][1])
            xx2, yy2 = min(boxes[i][2], boxes[k][2]), min(boxes[i][3], boxes[k][3])
            inter = max(0.0, xx2 - xx1) * max(0.0, yy2 - yy1)
            a = (boxes[i][2] - boxes[i][0]) * (boxes[i][3] - boxes[i][1])
            b = (boxes[k][2] - boxes[k][0]) * (boxes[k][3] - boxes[k][1])
            if inter / (a + b - inter) > thr:
                ok = False
                break
        if ok:
            keep.append(i)
    return keep


@pytest.mark.parametrize("n", [1, 5, 60, 100, 300, 1500])
@pytest.mark.parametrize("thr", [0.1, 0.45, 0.7])
@pytest.mark.parametrize("ties", [False, True])
def test_nms_matches_reference(n, thr, ties):
    """Every NMS path (one-integer and per-row greedy scans over the pairwise matrix, per-row
    IoU beyond 1024 boxes) equals the textbook one, with distinct or heavily tied scores."""
    rng = np.random.default_rng(n * 100 + int(thr * 10))
    xy = rng.uniform(0, 600, (n, 2))
    wh = rng.uniform(5, 120, (n, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    scores = rng.permutation(n).astype(np.float32) / n + 0.001  # distinct scores
    if ties:  # ten score levels: ties keep the earlier index first
        scores = (np.floor(scores * 10) / 10 + 0.05).astype(np.float32)
    got = nms(boxes, scores, thr).tolist()
    assert got == reference_nms(boxes.astype(np.float64), scores, thr)
    assert nms(boxes, scores, thr, max_keep=3).tolist() == got[:3]


def test_class_filter_and_max_det(demo_frame):
    raw, lb, _ = raw_output("detect", "demo-scene#0")
    everything = decode(raw, lb, Thresholds(0.001, 0.7, 300), 80)
    assert {0, 2, 32} <= set(everything.class_ids.tolist())
    cars = decode(raw, lb, Thresholds(0.001, 0.7, 300, np.array([2])), 80)
    assert len(cars) > 0
    assert set(cars.class_ids.tolist()) == {2}
    np.testing.assert_array_equal(cars.boxes, everything.boxes[everything.class_ids == 2])
    top3 = decode(raw, lb, Thresholds(0.001, 0.7, 3), 80)
    np.testing.assert_array_equal(top3.scores, everything.scores[:3])


def test_predict_cli_matches_ultralytics():
    """`edgeyolo predict` on bus.jpg prints Ultralytics' detections (rounded to 0.01 px)."""
    bus = shared_media("bus.jpg")
    res = run_cli(
        "predict",
        "--model",
        str(DET),
        "--task",
        "detect",
        str(bus),
        str(REPO / "media" / "demo-scene.mp4"),
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(lines) == 1 + 300
    first = lines[0]
    assert (first["source"], first["frame"], first["width"], first["height"]) == (
        str(bus),
        0,
        810,
        1080,
    )
    rec = next(r for r in golden("ultralytics-det-conf0.25.json")["images"] if r["id"] == "bus")
    assert len(first["detections"]) == len(rec["detections"]) == 3
    for ours, theirs in zip(first["detections"], rec["detections"], strict=True):
        assert ours["label"] == "person"
        assert ours["class_id"] == theirs["class_id"]
        np.testing.assert_allclose(ours["box"], theirs["box"], atol=0.011)
        assert abs(ours["conf"] - theirs["conf"]) <= 1e-4
    frame120 = lines[1 + 120]
    rec = next(
        r for r in golden("ultralytics-det-conf0.25.json")["images"] if r["id"] == "demo-scene#120"
    )
    assert len(frame120["detections"]) == len(rec["detections"])


def test_predict_cli_errors(tmp_path):
    missing = tmp_path / "none.jpg"
    res = run_cli("predict", "--model", str(DET), str(missing), timeout=120)
    assert res.returncode == 2
    assert f"{missing}: no such file" in res.stderr
    res = run_cli("predict", "--model", str(POSE), "--task", "detect", str(missing), timeout=120)
    assert res.returncode == 2
    assert "is a 'pose' model; use --task pose" in res.stderr
