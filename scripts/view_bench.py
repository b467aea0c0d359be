#!/usr/bin/env python3
"""What seeing costs: drawing + JPEG per frame, and the service with HTTP on vs off.

1. ``draw``: the demo models' real results on demo frames; per frame, the median and p95 ms of
   ``annotate`` (all models, header), of the JPEG encode, and of both (what one live-view or
   latest.jpg picture costs, in the worker thread); and the microseconds the live view's tap
   costs per frame when nobody looks.
2. ``service``: the demo config run flat out (``pace: fast``) for ``--frames`` frames, rounds
   alternating: HTTP off; HTTP on with no viewer (the tap only); HTTP on with one MJPEG viewer
   reading. Per variant the median per-frame ms (capture to events) and fps over all rounds.
   With no viewer the numbers should equal HTTP off within noise.

Example: scripts/view_bench.py --frames 60 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnxruntime as ort

from edgeyolo.annotate import Header, annotate
from edgeyolo.app import RunOptions, run
from edgeyolo.config import load_config
from edgeyolo.engines.onnxruntime import inspect_model
from edgeyolo.frames import Frame
from edgeyolo.live import LiveView
from edgeyolo.postprocess import Thresholds, decode
from edgeyolo.preprocess import Preprocessor
from edgeyolo.stages import FrameResult, ModelOutput

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config" / "demo.yaml"


def stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median": round(statistics.median(ordered), 3),
        "p95": round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))], 3),
    }


def bench_draw(frames: int) -> dict[str, Any]:
    cfg = load_config(CONFIG)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    models = []
    for m in cfg.models:
        info = inspect_model(m.path)
        sess = ort.InferenceSession(str(m.path), opts, providers=["CPUExecutionProvider"])
        labels = [info.names.get(i, str(i)) for i in range(info.num_classes)]
        models.append((m.name, info, sess, labels))
    cap = cv2.VideoCapture(str(cfg.cameras[0].source))
    pre = Preprocessor(640, 640)
    blob = np.empty((1, 3, 640, 640), np.float32)
    draw_ms: list[float] = []
    jpeg_ms: list[float] = []
    n_dets: list[int] = []
    for _ in range(frames):
        ok, raw_img = cap.read()
        if not ok:
            break
        img = np.asarray(raw_img, np.uint8)
        lb = pre(img, blob)
        outputs = []
        for name, info, sess, labels in models:
            raw = sess.run(None, {sess.get_inputs()[0].name: blob})[0]
            dets = decode(raw, lb, Thresholds(), info.num_classes, info.kpt_shape)
            outputs.append(ModelOutput(name, info.task, labels, dets))
        t0 = time.perf_counter()
        out = annotate(img, outputs, header=Header("demo", 15.0, 40.0))
        t1 = time.perf_counter()
        cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, 80])
        t2 = time.perf_counter()
        draw_ms.append((t1 - t0) * 1e3)
        jpeg_ms.append((t2 - t1) * 1e3)
        n_dets.append(sum(len(o.detections) for o in outputs))
    cap.release()
    # What every frame pays with HTTP on and nobody looking: the live view's tap.
    tap = LiveView().tap("demo")
    result = FrameResult("demo", Frame("demo", 0, img, time.time(), time.monotonic_ns()), outputs)
    n = 20000
    t0 = time.perf_counter()
    for _ in range(n):
        tap(result)
    tap_us = (time.perf_counter() - t0) / n * 1e6
    return {
        "tap_us_per_frame": round(tap_us, 2),
        "frames": len(draw_ms),
        "size": f"{img.shape[1]}x{img.shape[0]}",
        "detections_per_frame": round(statistics.mean(n_dets), 1),
        "annotate_ms": stats(draw_ms),
        "jpeg_ms": stats(jpeg_ms),
        "picture_ms": stats([a + b for a, b in zip(draw_ms, jpeg_ms, strict=True)]),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def viewer(port: int, stop: threading.Event, got: list[int]) -> None:
    """Read the demo camera's MJPEG stream until the service ends."""
    url = f"http://127.0.0.1:{port}/cameras/demo/stream.mjpeg"
    while not stop.is_set():
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                while not stop.is_set():
                    chunk = resp.read(65536)
                    if not chunk:
                        break
                    got[0] += chunk.count(b"--edgeyoloframe")
        except OSError:
            time.sleep(0.05)


def run_variant(variant: str, frames: int, warmup: int) -> tuple[list[float], float, int]:
    cfg = load_config(CONFIG)
    port = free_port()
    http = cfg.http.model_copy(
        update={"enabled": variant != "http-off", "host": "127.0.0.1", "port": port}
    )
    cam = cfg.cameras[0].model_copy(update={"loop": True})
    logging = cfg.logging.model_copy(update={"frame_sample": 0, "summary_interval_s": 1e9})
    sinks = cfg.sinks.model_copy(update={"mqtt": None})
    cfg = cfg.model_copy(
        update={"http": http, "cameras": [cam], "logging": logging, "sinks": sinks}
    )
    stop = threading.Event()
    got = [0]
    thread = None
    if variant == "one-viewer":
        thread = threading.Thread(target=viewer, args=(port, stop, got), daemon=True)
        thread.start()
    try:
        opts = RunOptions(max_frames=frames + warmup, pace="fast", keep_timings=True, jsonl=False)
        result = run(cfg, opts)
    finally:
        stop.set()
        if thread is not None:
            thread.join(timeout=5)
    tel = result.telemetry[cam.name]
    e2e = [t.e2e_ms for t in tel.all[warmup:]]
    steady = tel.steady_s(warmup)
    return e2e, (len(e2e) / steady if steady else 0.0), got[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=60, help="frames per service run (60)")
    ap.add_argument("--warmup", type=int, default=5, help="frames not counted per run (5)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds (2)")
    ap.add_argument("--draw-frames", type=int, default=30, help="frames for the draw part (30)")
    args = ap.parse_args()
    from edgeyolo.log import configure_logging  # noqa: PLC0415

    configure_logging("json", "warning")
    out: dict[str, Any] = {"draw": bench_draw(args.draw_frames)}
    variants = ["http-off", "http-on-no-viewer", "one-viewer"]
    acc: dict[str, dict[str, list[float]]] = {
        v: {"e2e": [], "fps": [], "parts": []} for v in variants
    }
    for _ in range(args.rounds):
        for v in variants:
            e2e, fps, parts = run_variant(v, args.frames, args.warmup)
            acc[v]["e2e"].extend(e2e)
            acc[v]["fps"].append(fps)
            acc[v]["parts"].append(parts)
    out["service"] = {
        v: {
            "frame_ms": stats(a["e2e"]),
            "fps_per_round": [round(f, 2) for f in a["fps"]],
            **({"viewer_parts_per_round": a["parts"]} if v == "one-viewer" else {}),
        }
        for v, a in acc.items()
    }
    out["loadavg_1m_at_end"] = float(Path("/proc/loadavg").read_text().split()[0])
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
