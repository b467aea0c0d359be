"""``edgeyolo bench view``: what seeing costs: drawing + JPEG per frame, the service with HTTP.

1. ``draw``: the demo models' real results on demo frames; per frame, the median and p95 ms of
   ``annotate`` (all models, header), of the JPEG encode, and of both (what one live-view or
   latest.jpg picture costs, in the worker thread); and the microseconds the live view's tap
   costs per frame when nobody looks.
2. ``service``: the demo config run flat out (``pace: fast``) for ``--frames`` frames, rounds
   alternating: HTTP off; HTTP on with no viewer (the tap only); HTTP on with one MJPEG viewer
   reading. Per variant the median per-frame ms (capture to events) and fps over all rounds.
   With no viewer the numbers should equal HTTP off within noise.

Example: edgeyolo bench view --frames 60 --rounds 2
"""

from __future__ import annotations

import argparse
import json
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
from edgeyolo.benchmarks.common import LOOPBACK, free_port, median_p95
from edgeyolo.config import load_config
from edgeyolo.engines.onnxruntime import inspect_model
from edgeyolo.frames import Frame
from edgeyolo.live import LiveView
from edgeyolo.postprocess import Thresholds, decode
from edgeyolo.preprocess import Preprocessor
from edgeyolo.sources.files import iter_frames
from edgeyolo.stages import FrameResult, ModelOutput


def bench_draw(config: Path, frames: int) -> dict[str, Any]:
    """Annotate + JPEG of the demo models' real results, and the live view's idle tap."""
    cfg = load_config(config)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    models = []
    for m in cfg.models:
        info = inspect_model(m.path)
        sess = ort.InferenceSession(str(m.path), opts, providers=["CPUExecutionProvider"])
        labels = [info.names.get(i, str(i)) for i in range(info.num_classes)]
        models.append((m.name, info, sess, labels))
    pre = Preprocessor(640, 640)
    blob = np.empty((1, 3, 640, 640), np.float32)
    draw_ms: list[float] = []
    jpeg_ms: list[float] = []
    n_dets: list[int] = []
    for img in iter_frames(Path(str(cfg.cameras[0].source)), frames):
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
        "annotate_ms": median_p95(draw_ms),
        "jpeg_ms": median_p95(jpeg_ms),
        "picture_ms": median_p95([a + b for a, b in zip(draw_ms, jpeg_ms, strict=True)]),
    }


def viewer(port: int, stop: threading.Event, got: list[int]) -> None:
    """Read the demo camera's MJPEG stream until the service ends."""
    url = f"http://{LOOPBACK}:{port}/cameras/demo/stream.mjpeg"
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


def run_variant(
    config: Path, variant: str, frames: int, warmup: int
) -> tuple[list[float], float, int]:
    """One service run of ``variant``: per-frame e2e ms, fps, MJPEG parts the viewer got."""
    cfg = load_config(config)
    port = free_port()
    http = cfg.http.model_copy(
        update={"enabled": variant != "http-off", "host": LOOPBACK, "port": port}
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


def main(args: argparse.Namespace) -> int:
    """Print the draw and service numbers as one JSON object."""
    from edgeyolo.log import configure_logging  # noqa: PLC0415

    configure_logging("json", "warning")
    out: dict[str, Any] = {"draw": bench_draw(args.config, args.draw_frames)}
    variants = ["http-off", "http-on-no-viewer", "one-viewer"]
    acc: dict[str, dict[str, list[float]]] = {
        v: {"e2e": [], "fps": [], "parts": []} for v in variants
    }
    for _ in range(args.rounds):
        for v in variants:
            e2e, fps, parts = run_variant(args.config, v, args.frames, args.warmup)
            acc[v]["e2e"].extend(e2e)
            acc[v]["fps"].append(fps)
            acc[v]["parts"].append(parts)
    out["service"] = {
        v: {
            "frame_ms": median_p95(a["e2e"]),
            "fps_per_round": [round(f, 2) for f in a["fps"]],
            **({"viewer_parts_per_round": a["parts"]} if v == "one-viewer" else {}),
        }
        for v, a in acc.items()
    }
    out["loadavg_1m_at_end"] = float(Path("/proc/loadavg").read_text().split()[0])
    print(json.dumps(out, indent=1))
    return 0
