"""``edgeyolo bench --host-decode``: the host's share of the GPU decode, on this CPU.

On the GPU path the decode kernel compacts the anchors above ``conf`` into records; the host
turns them into ``Candidates`` (``gpu.decode.to_candidates``) and runs ``decode`` on them
(NMS, letterbox back-mapping, keypoints). Both are timed here without a GPU: each model of the
config runs with ONNX Runtime on real frames (``frames`` of the first camera's source, plus
``bus.jpg`` and ``zidane.jpg`` from ``../shared/media`` beside a source checkout, when there),
the kernel's numpy model (``gpu.decode.reference_records``) makes the records, and every
(frame, model) pair is decoded ``rounds`` times. Printed per model: candidates per frame,
detections kept, and microseconds of ``to_candidates`` and of ``decode`` (wall: median, p95,
best, see ``_us``; and ``cpu``: this thread's CPU time per call, see ``_cpu_us``); then both
for all models together per frame, and the load average (wall numbers mean little on a busy
box; the CPU time is less disturbed, though still slower than on an idle one).
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeyolo.benchmarks.common import camera_frames, percentile

if TYPE_CHECKING:
    from edgeyolo.config import Config

# The shared test images beside a source checkout (../shared/media, as the tests find them),
# used when present: other sizes and letterboxes than the demo video's.
_SHARED_MEDIA = Path(__file__).resolve().parents[4] / "shared" / "media"
_EXTRA_IMAGES = ("bus.jpg", "zidane.jpg")


def _images(cfg: Config, frames: int) -> tuple[list[Any], list[str]]:
    from edgeyolo.sources.files import iter_frames  # noqa: PLC0415

    images = camera_frames(cfg, frames)
    extra = [_SHARED_MEDIA / name for name in _EXTRA_IMAGES]
    extra = [p for p in extra if p.is_file()]
    for path in extra:
        images.extend(iter_frames(path, 1))
    return images, [str(p) for p in extra]


def _us(ns: Any) -> dict[str, float]:
    """Median and p95 of ``rounds x images`` nanosecond timings in microseconds, and
    ``best``: the median over images of each image's fastest round (the least disturbed
    figure on a shared machine)."""
    flat = [float(v) for v in ns.ravel()]
    return {
        "median": round(statistics.median(flat) / 1e3, 1),
        "p95": round(percentile(flat, 0.95) / 1e3, 1),
        "best": round(float(statistics.median(ns.min(axis=0).tolist())) / 1e3, 1),
    }


def _cpu_us(total_ns: Any, rounds: int) -> float:
    """Median over images of the thread CPU time per call (what preemption does not inflate)."""
    return round(float(statistics.median((total_ns / rounds).tolist())) / 1e3, 1)


def bench_host_decode(cfg: Config, frames: int, rounds: int = 50) -> dict[str, Any]:
    """Time ``to_candidates`` + ``decode`` of every model on real candidates (see module)."""
    import numpy as np  # noqa: PLC0415

    from edgeyolo.engines.onnxruntime import OnnxRuntimeBackend  # noqa: PLC0415
    from edgeyolo.gpu.decode import reference_records, to_candidates  # noqa: PLC0415
    from edgeyolo.postprocess import decode  # noqa: PLC0415
    from edgeyolo.preprocess import Preprocessor  # noqa: PLC0415
    from edgeyolo.runner import open_runners  # noqa: PLC0415

    images, extra = _images(cfg, frames)
    cam = cfg.cameras[0]
    backend = OnnxRuntimeBackend(cfg.onnxruntime, max_engines=len(cfg.models))
    runners = open_runners(backend, cfg.models_for(cam.name))
    rng = np.random.default_rng(0)
    # Per model: (records as the kernel leaves them: shuffled, letterbox) per image.
    work: list[list[tuple[Any, Any]]] = []
    try:
        specs = list(dict.fromkeys(r.engine.info.input for r in runners))
        pres = {s: Preprocessor(*s.hw) for s in specs}
        bufs = {s: np.zeros(s.shape, s.dtype) for s in specs}
        work = [[] for _ in runners]
        for img in images:
            lbs = {s: pres[s](img, bufs[s]) for s in specs}
            for r, items in zip(runners, work, strict=True):
                info = r.engine.info
                engine: Any = r.engine  # ONNX Runtime's, which has run_sync
                raw = engine.run_sync(bufs[info.input])
                nk = 0 if info.kpt_shape is None else info.kpt_shape[0] * info.kpt_shape[1]
                rec = reference_records(
                    raw, r.thresholds.conf, info.num_classes, nk, r.thresholds.classes
                )
                items.append((rng.permutation(rec), lbs[info.input]))
    finally:
        for r in reversed(runners):
            r.close()
        backend.close()

    models: dict[str, Any] = {}
    per_frame = np.zeros((rounds, len(images)), np.int64)
    per_frame_cpu = np.zeros(len(images), np.int64)
    for r, items in zip(runners, work, strict=True):
        info = r.engine.info
        nk = 0 if info.kpt_shape is None else info.kpt_shape[0] * info.kpt_shape[1]
        args = (r.thresholds, info.num_classes, info.kpt_shape)
        for rec, lb in items[:2]:  # warm code paths
            decode(to_candidates(rec, nk), lb, *args)
        conv = np.zeros((rounds, len(items)), np.int64)
        dec = np.zeros((rounds, len(items)), np.int64)
        cpu = np.zeros((2, len(items)), np.int64)
        kept: list[int] = []
        for j, (rec, lb) in enumerate(items):
            c0 = time.thread_time_ns()
            for k in range(rounds):
                t0 = time.perf_counter_ns()
                cands = to_candidates(rec, nk)
                conv[k, j] = time.perf_counter_ns() - t0
            c1 = time.thread_time_ns()
            for k in range(rounds):
                t0 = time.perf_counter_ns()
                dets = decode(cands, lb, *args)
                dec[k, j] = time.perf_counter_ns() - t0
            cpu[:, j] = c1 - c0, time.thread_time_ns() - c1
            kept.append(len(dets))
        per_frame += conv + dec
        per_frame_cpu += cpu.sum(axis=0)
        counts = [len(rec) for rec, _ in items]
        models[r.name] = {
            "task": info.task,
            "conf": r.thresholds.conf,
            "candidates": {
                "median": statistics.median(counts),
                "min": min(counts),
                "max": max(counts),
            },
            "kept_median": statistics.median(kept),
            "to_candidates_us": {**_us(conv), "cpu": _cpu_us(cpu[0], rounds)},
            "decode_us": {**_us(dec), "cpu": _cpu_us(cpu[1], rounds)},
        }
    return {
        "mode": "host-decode",
        "images": len(images),
        "extra_images": extra,
        "rounds": rounds,
        "models": models,
        "all_models_per_frame_us": {**_us(per_frame), "cpu": _cpu_us(per_frame_cpu, rounds)},
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
