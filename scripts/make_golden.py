"""Write golden reference predictions made by Ultralytics itself into tests/data/golden/.

Ultralytics is the independent reference that edgeyolo's decode/NMS is tested against: this
script runs ``YOLO(onnx, task=...).predict`` on a fixed set of images and video frames, with
Ultralytics' defaults (conf 0.25, iou 0.7, max_det 300, imgsz 640) and again with conf 0.05
and 0.001 (many more boxes, so NMS is stressed), and records every detection in source
pixels. For two demo-scene frames it also saves the raw model output that ONNX Runtime
computes on Ultralytics' own preprocessed input, so decode/NMS can be tested on real tensors
without any preprocessing.

It needs a SEPARATE virtual environment with ultralytics==8.4.190 (plus torch, torchvision,
onnx and onnxruntime); ultralytics and torch are NOT edgeyolo dependencies, and CI never runs
this script (CI only reads the files it wrote). How that venv was made, and the versions used,
are in tests/data/golden/README.md. Run from anywhere:

    /tmp/ulvenv/bin/python scripts/make_golden.py [--shared /work/shared] [--out DIR]

The output is deterministic for a given set of library versions and CPU kind.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent

MODELS = {
    # short name -> (file under the repo, Ultralytics task)
    "det": ("models/edgeyolo-demo-det.onnx", "detect"),
    "pose": ("models/edgeyolo-demo-pose.onnx", "pose"),
}
# 0.25 is Ultralytics' predict default; 0.05 and 0.001 (its val default) give many more
# overlapping boxes of several classes, which is what stresses NMS and the class offsets.
CONFS = (0.25, 0.05, 0.001)
IOU = 0.7
MAX_DET = 300
IMGSZ = 640
DEMO_FRAMES = (0, 40, 80, 120, 160, 200, 240, 280)
VTEST_FRAMES = (0, 100, 300)
RAW_FRAMES = (0, 120)  # demo-scene frames whose raw model output is saved
RAW_LIMIT = 1_500_000  # bytes per .npz; larger raw outputs are stored sparsely instead
# A crop with a non-uniform effective gain (round(701 * 640/803) = 559 != 701 * 640/803) and an
# odd vertical pad, which none of the other images have: it pins down Ultralytics' per-axis gains.
CROP = {"x": 0, "y": 0, "w": 803, "h": 701}


def sha256(a: np.ndarray) -> str:
    """sha256 of an array's C-order bytes."""
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def f32(x: float) -> float:
    """The shortest decimal that reads back as the same float32 (compact and exact JSON)."""
    return float(repr(np.float32(x)).removeprefix("np.float32(").removesuffix(")"))


def read_frames(path: Path, wanted: tuple[int, ...]) -> dict[int, np.ndarray]:
    """Decode frames sequentially and keep ``wanted`` (no seeking: seeks can land off by one)."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise SystemExit(f"cannot open video {path}")
    out: dict[int, np.ndarray] = {}
    i = 0
    try:
        while len(out) < len(wanted):
            ok, frame = cap.read()
            if not ok:
                raise SystemExit(f"{path}: ended at frame {i}, wanted {sorted(wanted)}")
            if i in wanted:
                out[i] = frame
            i += 1
    finally:
        cap.release()
    return out


def letterbox_params(w: int, h: int) -> dict[str, Any]:
    """Ultralytics' LetterBox (auto=False, center=True) and scale_boxes geometry for w x h."""
    r = min(IMGSZ / h, IMGSZ / w)
    new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
    dw, dh = (IMGSZ - new_w) / 2, (IMGSZ - new_h) / 2
    return {
        "gain": r,
        "gain_x": new_w / w,
        "gain_y": new_h / h,
        "new_w": new_w,
        "new_h": new_h,
        "pad_left": round(dw - 0.1),
        "pad_top": round(dh - 0.1),
        "pad_right": round(dw + 0.1),
        "pad_bottom": round(dh + 0.1),
    }


def sources(shared: Path) -> list[dict[str, Any]]:
    """Every input image, with where it comes from and the BGR uint8 pixels Ultralytics sees."""
    items: list[dict[str, Any]] = []
    for name in ("bus.jpg", "zidane.jpg"):
        path = shared / "media" / name
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise SystemExit(f"cannot read {path}")
        items.append(
            {
                "id": name.removesuffix(".jpg"),
                "root": "shared",
                "path": f"media/{name}",
                "frame": None,
                "crop": None,
                # Ultralytics reads the file itself (path in, like a user would).
                "predict_input": str(path),
                "image": img,
            }
        )
    bus = items[0]["image"]
    c = CROP
    items.append(
        {
            "id": f"bus-crop{c['w']}x{c['h']}",
            "root": "shared",
            "path": "media/bus.jpg",
            "frame": None,
            "crop": dict(c),
            "predict_input": None,
            "image": np.ascontiguousarray(bus[c["y"] : c["y"] + c["h"], c["x"] : c["x"] + c["w"]]),
        }
    )
    for root, rel, frames, tag in (
        ("repo", "media/demo-scene.mp4", DEMO_FRAMES, "demo-scene"),
        ("shared", "media/vtest.avi", VTEST_FRAMES, "vtest"),
    ):
        base = REPO if root == "repo" else shared
        decoded = read_frames(base / rel, frames)
        items.extend(
            {
                "id": f"{tag}#{i}",
                "root": root,
                "path": rel,
                "frame": i,
                "crop": None,
                "predict_input": None,
                "image": decoded[i],
            }
            for i in frames
        )
    for it in items:
        if it["predict_input"] is None:
            it["predict_input"] = it["image"]  # numpy BGR, as a camera frame would arrive
    return items


def detections(result: Any, task: str) -> list[dict[str, Any]]:
    """One dict per detection, in Ultralytics' output order (descending conf after NMS)."""
    data = result.boxes.data.cpu().numpy().astype(np.float32)  # N x 6: x1 y1 x2 y2 conf cls
    kpts = None
    if task == "pose":
        kpts = result.keypoints.data.cpu().numpy().astype(np.float32)  # N x 17 x 3
    out: list[dict[str, Any]] = []
    for n, row in enumerate(data):
        d: dict[str, Any] = {
            "box": [f32(v) for v in row[:4]],
            "conf": f32(row[4]),
            "class_id": int(row[5]),
        }
        if kpts is not None:
            d["keypoints"] = [[f32(v) for v in kp] for kp in kpts[n]]
        out.append(d)
    return out


def save_raw(path: Path, raw: np.ndarray, conf_floor: float) -> dict[str, Any]:
    """Save a raw output: dense if the .npz fits RAW_LIMIT, else only anchors that can matter."""
    np.savez_compressed(path, output0=raw)
    if path.stat().st_size <= RAW_LIMIT:
        return {"file": path.name, "layout": "dense", "shape": list(raw.shape)}
    # Dense float32 noise does not compress; keep exactly the anchors whose best class score
    # exceeds conf_floor (all that any threshold >= conf_floor can see), bit-exact.
    nc_end = raw.shape[1] if raw.shape[1] == 84 else 5
    best = raw[0, 4:nc_end].max(axis=0)
    keep = np.nonzero(best > np.float32(conf_floor))[0].astype(np.int32)
    np.savez_compressed(path, anchors=keep, columns=raw[0][:, keep], shape=np.array(raw.shape))
    if path.stat().st_size > RAW_LIMIT:
        raise SystemExit(f"{path}: {path.stat().st_size} bytes even when sparse")
    return {
        "file": path.name,
        "layout": "sparse",
        "shape": list(raw.shape),
        "sparse_conf_floor": conf_floor,
        "anchors_kept": int(keep.size),
    }


def dump(doc: dict[str, Any]) -> str:
    """JSON with one line per image header and per detection: diffable, yet compact."""
    compact = (",", ":")
    head = json.dumps({k: v for k, v in doc.items() if k != "images"}, indent=1)
    parts = []
    for rec in doc["images"]:
        meta = json.dumps({k: v for k, v in rec.items() if k != "detections"}, separators=compact)
        dets = ",\n  ".join(json.dumps(d, separators=compact) for d in rec["detections"])
        parts.append(f' {meta[:-1]},"detections":[' + (f"\n  {dets}\n ]}}" if dets else "]}"))
    return head[:-2] + ',\n "images":[\n' + ",\n".join(parts) + "\n ]\n}\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared", help="shared/ folder")
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "data" / "golden")
    args = ap.parse_args()

    # Imported here, not at the top: they exist only in the separate Ultralytics venv, and
    # --help should work anywhere.
    import onnxruntime as ort  # noqa: PLC0415
    import torch  # noqa: PLC0415
    import torchvision  # noqa: PLC0415
    import ultralytics  # noqa: PLC0415
    from ultralytics import YOLO  # noqa: PLC0415
    from ultralytics.utils import nms as ul_nms  # noqa: PLC0415

    if ultralytics.__version__ != "8.4.190":
        raise SystemExit(f"needs ultralytics 8.4.190, found {ultralytics.__version__}")
    args.out.mkdir(parents=True, exist_ok=True)
    items = sources(args.shared)
    for it in items:
        h, w = it["image"].shape[:2]
        it["width"], it["height"] = w, h
        it["image_sha256"] = sha256(it["image"])
        it["letterbox"] = letterbox_params(w, h)

    versions = {
        "ultralytics": ultralytics.__version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "onnxruntime": ort.__version__,
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
    }
    summary: list[str] = []
    for short, (rel, task) in MODELS.items():
        model_path = REPO / rel
        model_sha = hashlib.sha256(model_path.read_bytes()).hexdigest()
        raw_refs: dict[str, dict[str, Any]] = {}
        session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        for conf in CONFS:
            model = YOLO(str(model_path), task=task)
            records = []
            for it in items:
                res = model.predict(
                    it["predict_input"],
                    conf=conf,
                    iou=IOU,
                    max_det=MAX_DET,
                    imgsz=IMGSZ,
                    verbose=False,
                )[0]
                if (
                    res.orig_img.shape != it["image"].shape
                    or sha256(res.orig_img) != it["image_sha256"]
                ):
                    raise SystemExit(
                        f"{it['id']}: Ultralytics saw different pixels than cv2 decoded"
                    )
                predictor = model.predictor
                # Ultralytics' own preprocessing of the same image: its letterbox, BGR->RGB, /255.
                im = predictor.preprocess([it["image"]])
                x = im.cpu().numpy()
                raw_ul = predictor.inference(im)
                raw_ul = (raw_ul[0] if isinstance(raw_ul, (list, tuple)) else raw_ul).cpu().numpy()
                raw = session.run(None, {session.get_inputs()[0].name: x})[0]
                if not np.array_equal(raw, raw_ul):
                    raise SystemExit(
                        f"{it['id']}: onnxruntime output differs from Ultralytics' backend"
                    )
                # NMS re-run on the raw tensor must give exactly what predict() gave.
                nc = 0 if task == "detect" else len(model.names)
                again = ul_nms.non_max_suppression(
                    torch.from_numpy(raw), conf, IOU, max_det=MAX_DET, nc=nc
                )[0]
                if not torch.equal(again[:, 4:6], res.boxes.data[:, 4:6]):
                    raise SystemExit(f"{it['id']}: NMS re-run differs from predict()")
                nc_end = 4 + (raw.shape[1] - 4 if task == "detect" else len(model.names))
                candidates = int((raw[0, 4:nc_end].max(axis=0) > np.float32(conf)).sum())
                rec: dict[str, Any] = {
                    "id": it["id"],
                    "root": it["root"],
                    "path": it["path"],
                    "frame": it["frame"],
                    "crop": it["crop"],
                    "width": it["width"],
                    "height": it["height"],
                    "image_sha256": it["image_sha256"],
                    "letterbox": it["letterbox"],
                    "input_sha256": sha256(x.astype(np.float32)),
                    "conf": conf,
                    "iou": IOU,
                    "candidates": candidates,
                    "detections": detections(res, task),
                }
                if it["path"] == "media/demo-scene.mp4" and it["frame"] in RAW_FRAMES:
                    key = it["id"]
                    if key not in raw_refs:
                        name = f"ultralytics-raw-{short}-demo-scene-f{it['frame']:03d}.npz"
                        raw_refs[key] = save_raw(args.out / name, raw, min(CONFS))
                        raw_refs[key]["input_sha256"] = rec["input_sha256"]
                    rec["raw_output"] = raw_refs[key]
                records.append(rec)
                n_det = len(rec["detections"])
                summary.append(
                    f"{short} conf={conf} {it['id']}: {n_det} dets, {candidates} candidates"
                )
            doc = {
                "format": "edgeyolo-golden/1",
                "generator": {
                    "command": "scripts/make_golden.py",
                    "versions": versions,
                    "nms": "torchvision.ops.nms"
                    if "torchvision" in sys.modules
                    else "TorchNMS.nms",
                },
                "model": {"file": rel, "sha256": model_sha, "task": task, "names": model.names},
                "settings": {
                    "conf": conf,
                    "iou": IOU,
                    "max_det": MAX_DET,
                    "imgsz": IMGSZ,
                    "agnostic_nms": False,
                    "classes": None,
                },
                "images": records,
            }
            target = args.out / f"ultralytics-{short}-conf{conf}.json"
            target.write_text(dump(doc))
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
