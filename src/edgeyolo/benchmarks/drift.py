"""``edgeyolo bench drift``: how far INT8 variants of a YOLO model drift from FP32, how fast.

    edgeyolo bench drift FP32.onnx INT8.onnx [INT8.onnx ...] [--video media/demo-scene.mp4]
        [--step 5] [--conf 0.25] [--iou 0.7] [--speed-runs 20] [--rounds 3] [--threads 1 2]

Drift: on every ``--step``-th frame of the video, the FP32 model's detections are the
reference; an INT8 detection matches a reference one of the same class at IoU >= 0.5 (greedy,
highest IoU first). Reported: precision and recall of INT8 against FP32, mean IoU and mean
|confidence difference| of matches, and for pose the mean pixel error of keypoints visible
(conf >= 0.5) in both. Speed: median milliseconds of one ``session.run`` on ONNX Runtime's CPU
provider, per intra-op thread count, repeated ``--rounds`` times (the spread shows how much
the machine's other load moved it). One JSON object per line on stdout.

Decode/NMS is ``edgeyolo.postprocess.decode``, or with ``--reference-decode`` a
straightforward reference implementation below with Ultralytics' semantics: scores strictly
above conf, class-aware NMS by class offsets, max_det 300.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgeyolo.errors import ModelError, SourceError
from edgeyolo.frames import Letterbox
from edgeyolo.postprocess import Thresholds, decode
from edgeyolo.preprocess import Preprocessor
from edgeyolo.sources.files import video_frame_count, video_frames

MAX_WH = 7680.0
MAX_DET = 300
MATCH_IOU = 0.5
KPT_VISIBLE = 0.5


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of xyxy boxes a (N,4) and b (M,4)."""
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(br - tl, 0, None).prod(axis=2)
    area_a = (a[:, 2:] - a[:, :2]).prod(axis=1)
    area_b = (b[:, 2:] - b[:, :2]).prod(axis=1)
    iou: np.ndarray = inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)
    return iou


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        if order.size == 1:
            break
        ious = box_iou(boxes[i : i + 1], boxes[order[1:]])[0]
        order = order[1:][ious <= iou]
    return np.asarray(keep, dtype=np.int64)


def reference_decode(
    out: np.ndarray, lb: Letterbox, conf: float, iou: float, nkpt: int
) -> dict[str, np.ndarray]:
    """Raw (1, 4+nc[+3K], N) output -> boxes/scores/class_ids[/keypoints] in source pixels."""
    pred = out[0]
    nc = pred.shape[0] - 4 - 3 * nkpt
    cls_scores = pred[4 : 4 + nc]
    scores = cls_scores.max(axis=0)
    cand = np.flatnonzero(scores > conf)
    cls_ids = cls_scores[:, cand].argmax(axis=0)
    scores = scores[cand]
    xywh = pred[:4, cand].T
    boxes = np.empty_like(xywh)
    boxes[:, :2] = xywh[:, :2] - xywh[:, 2:] / 2
    boxes[:, 2:] = xywh[:, :2] + xywh[:, 2:] / 2
    keep = nms(boxes + (cls_ids * MAX_WH)[:, None], scores, iou)[:MAX_DET]
    result = {
        "boxes": lb.boxes_to_source(boxes[keep].astype(np.float32)),
        "scores": scores[keep],
        "class_ids": cls_ids[keep],
    }
    if nkpt:
        kpts = pred[4 + nc :, cand[keep]].T.reshape(-1, nkpt, 3).astype(np.float32)
        lb.points_to_source(kpts[..., :2])
        result["keypoints"] = kpts
    return result


Decoder = Callable[[np.ndarray, Letterbox], dict[str, np.ndarray]]


def project_decode(nc: int, nkpt: int, conf: float, iou: float) -> Decoder:
    """``edgeyolo.postprocess.decode`` bound to this model's layout."""
    thresholds = Thresholds(conf=conf, iou=iou)
    kpt_shape = (nkpt, 3) if nkpt else None

    def run(raw: np.ndarray, lb: Letterbox) -> dict[str, np.ndarray]:
        det = decode(raw, lb, thresholds, nc, kpt_shape)
        out = {"boxes": det.boxes, "scores": det.scores, "class_ids": det.class_ids}
        if det.keypoints is not None:
            out["keypoints"] = det.keypoints
        return out

    return run


def metadata(path: Path) -> dict[str, str]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(sess.get_modelmeta().custom_metadata_map)


def kpt_count(meta: dict[str, str]) -> int:
    if meta.get("task") != "pose":
        return 0
    return int(meta.get("kpt_shape", "[17, 3]").strip("[]").split(",")[0])


def session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def match(ref: dict[str, np.ndarray], test: dict[str, np.ndarray]) -> list[tuple[int, int, float]]:
    """Greedy same-class matching at IoU >= 0.5, highest IoU first: (ref_i, test_j, iou)."""
    if not len(ref["boxes"]) or not len(test["boxes"]):
        return []
    ious = box_iou(ref["boxes"], test["boxes"])
    ious[ref["class_ids"][:, None] != test["class_ids"][None, :]] = 0
    pairs = []
    used_r: set[int] = set()
    used_t: set[int] = set()
    for flat in np.argsort(-ious, axis=None, kind="stable"):
        r, t = np.unravel_index(flat, ious.shape)
        if ious[r, t] < MATCH_IOU:
            break
        if r in used_r or t in used_t:
            continue
        used_r.add(int(r))
        used_t.add(int(t))
        pairs.append((int(r), int(t), float(ious[r, t])))
    return pairs


def every_nth_frame(path: Path, step: int) -> list[np.ndarray]:
    """Frames 0, step, 2*step, ... of the video (the others are grabbed, not decoded)."""
    keep = range(0, video_frame_count(path), step)
    return [frame for _, frame in video_frames(path, keep=keep)]


def drift(args: argparse.Namespace, fp32: Path, int8: Path, nkpt: int, frames: list) -> dict:  # type: ignore[type-arg]
    ref_sess = session(fp32, 2)
    test_sess = session(int8, 2)
    inp = ref_sess.get_inputs()[0]
    h, w = inp.shape[2], inp.shape[3]
    pre = Preprocessor(h, w)
    blob = np.empty((1, 3, h, w), np.float32)
    nc = ref_sess.get_outputs()[0].shape[1] - 4 - 3 * nkpt
    pp = None if args.reference_decode else project_decode(nc, nkpt, args.conf, args.iou)
    n_ref = n_test = 0
    ious: list[float] = []
    dconf: list[float] = []
    kerr: list[float] = []
    for image in frames:
        lb = pre(image, blob)
        outs = []
        for sess in (ref_sess, test_sess):
            raw = sess.run(None, {inp.name: blob})[0]
            if pp is not None:
                outs.append(pp(raw, lb))
            else:
                outs.append(reference_decode(raw, lb, args.conf, args.iou, nkpt))
        ref, test = outs
        n_ref += len(ref["boxes"])
        n_test += len(test["boxes"])
        for r, t, iou in match(ref, test):
            ious.append(iou)
            dconf.append(abs(float(ref["scores"][r]) - float(test["scores"][t])))
            if nkpt:
                kr, kt = ref["keypoints"][r], test["keypoints"][t]
                vis = (kr[:, 2] >= KPT_VISIBLE) & (kt[:, 2] >= KPT_VISIBLE)
                kerr.extend(np.linalg.norm(kr[vis, :2] - kt[vis, :2], axis=1).tolist())
    matched = len(ious)
    result = {
        "kind": "drift",
        "fp32": fp32.name,
        "int8": int8.name,
        "decode": "edgeyolo.postprocess" if pp is not None else "reference",
        "frames": len(frames),
        "fp32_detections": n_ref,
        "int8_detections": n_test,
        "matched": matched,
        "precision": round(matched / n_test, 4) if n_test else None,
        "recall": round(matched / n_ref, 4) if n_ref else None,
        "mean_iou": round(statistics.fmean(ious), 4) if ious else None,
        "mean_abs_conf_diff": round(statistics.fmean(dconf), 4) if dconf else None,
    }
    if nkpt:
        result["keypoints_compared"] = len(kerr)
        result["mean_kpt_err_px"] = round(statistics.fmean(kerr), 3) if kerr else None
        result["p95_kpt_err_px"] = round(float(np.percentile(kerr, 95)), 3) if kerr else None
    return result


def speed(paths: list[Path], threads: int, runs: int, rounds: int, image: np.ndarray) -> list[dict]:  # type: ignore[type-arg]
    sessions = [session(p, threads) for p in paths]
    inp = sessions[0].get_inputs()[0]
    h, w = inp.shape[2], inp.shape[3]
    blob = np.empty((1, 3, h, w), np.float32)
    Preprocessor(h, w)(image, blob)
    feed = {inp.name: blob}
    for sess in sessions:
        for _ in range(3):
            sess.run(None, feed)
    medians: list[list[float]] = [[] for _ in paths]
    # Rounds interleave the models so that changes in the machine's load hit all of them.
    for _ in range(rounds):
        for k, sess in enumerate(sessions):
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                sess.run(None, feed)
                times.append((time.perf_counter() - t0) * 1000)
            medians[k].append(round(statistics.median(times), 2))
    return [
        {
            "kind": "speed",
            "model": path.name,
            "threads": threads,
            "runs_per_round": runs,
            "round_medians_ms": m,
            "median_ms": round(statistics.median(m), 2),
            "min_round_ms": min(m),
            "max_round_ms": max(m),
        }
        for path, m in zip(paths, medians, strict=True)
    ]


def main(args: argparse.Namespace) -> int:
    """Print one JSON line per INT8 model (drift), then per model and thread count (speed)."""
    for path in (args.fp32, *args.int8):
        if not path.is_file():
            raise ModelError(f"bench drift: {path}: no such model file")
    if not args.video.is_file():
        raise SourceError(f"bench drift --video {args.video}: no such file")
    nkpt = kpt_count(metadata(args.fp32))
    frames = every_nth_frame(args.video, args.step)
    if not args.no_drift:
        for int8 in args.int8:
            print(json.dumps(drift(args, args.fp32, int8, nkpt, frames)), flush=True)
    if args.speed_runs > 0:
        image = frames[len(frames) // 2]
        for threads in args.threads:
            for row in speed([args.fp32, *args.int8], threads, args.speed_runs, args.rounds, image):
                print(json.dumps(row), flush=True)
    return 0
