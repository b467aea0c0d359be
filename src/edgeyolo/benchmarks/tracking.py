"""``edgeyolo bench tracking``: tracking cost per frame, alone and with zones, lines, lifecycle.

Synthetic scene (``edgeyolo.benchmarks.scene``): ``--objects`` walkers (20) moving at constant
velocity with pixel noise, some of them crossing, over ``--frames`` frames (600) of 960x540.
Per variant the median, p95 and mean microseconds of one frame's ``update``/``step`` (what the
tracking stage adds per model), after a warm-up. Prints one JSON object. Speed is a number to
read, not a test: say what else the machine was doing when quoting it.

Example: edgeyolo bench tracking --objects 20 --frames 600
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

import numpy as np

from edgeyolo.benchmarks.scene import SimFrame, SimObject, frames
from edgeyolo.config import LineConfig, TrackingConfig, ZoneConfig
from edgeyolo.tracking.objects import ObjectTracker
from edgeyolo.tracking.tracker import ByteTracker


def scene(n_objects: int, n_frames: int, seed: int) -> list[SimFrame]:
    """``n_objects`` walkers at random places, speeds and sizes, over ``n_frames`` frames."""
    rng = np.random.default_rng(seed)
    objs = []
    for g in range(n_objects):
        x = float(rng.uniform(60, 900))
        y = float(rng.uniform(150, 530))
        v = (float(rng.uniform(-3, 3)), float(rng.uniform(-1, 1)))
        size = (float(rng.uniform(25, 60)), float(rng.uniform(70, 150)))
        objs.append(SimObject(g, (x, y), v, size=size))
    return frames(objs, n_frames, seed=seed)


def timed(step: Callable[[SimFrame], object], fs: list[SimFrame], warmup: int) -> dict[str, float]:
    """Microseconds of ``step`` per frame after ``warmup`` frames: low quantiles, median, p95."""
    us = []
    for i, fr in enumerate(fs):
        t0 = time.perf_counter_ns()
        step(fr)
        dt = (time.perf_counter_ns() - t0) / 1e3
        if i >= warmup:
            us.append(dt)
    us.sort()
    return {
        # On a shared machine the low quantiles show the cost when the process had the CPU.
        "min_us": round(us[0], 1),
        "p10_us": round(us[len(us) // 10], 1),
        "median_us": round(statistics.median(us), 1),
        "p95_us": round(us[int(0.95 * (len(us) - 1))], 1),
        "mean_us": round(statistics.fmean(us), 1),
    }


def main(args: argparse.Namespace) -> int:
    """Time the tracker alone, then with zones, lines and lifecycle events; print JSON."""
    fs = scene(args.objects, args.frames, args.seed)
    cfg = TrackingConfig(enabled=True)
    zones = [
        ZoneConfig(name="left", normalized=True, points=[(0, 0.4), (0.5, 0.4), (0.5, 1), (0, 1)]),
        ZoneConfig(name="right", normalized=True, points=[(0.5, 0.4), (1, 0.4), (1, 1), (0.5, 1)]),
    ]
    lines = [
        LineConfig(name="middle", normalized=True, points=[(0.5, 1), (0.5, 0.2)]),
        LineConfig(name="across", normalized=True, points=[(0, 0.7), (1, 0.7)]),
    ]
    out: dict[str, object] = {
        "objects": args.objects,
        "frames": args.frames,
        "detections_per_frame": round(statistics.fmean(len(f.dets) for f in fs), 1),
        "cpu": os.cpu_count(),
        "load_1min": round(os.getloadavg()[0], 2),
    }
    tr = ByteTracker(min_hits=cfg.min_hits, max_lost_s=cfg.max_lost_s)
    out["tracker"] = timed(
        lambda fr: tr.update(fr.dets.boxes, fr.dets.scores, fr.dets.class_ids, fr.timestamp),
        fs,
        args.warmup,
    )
    ot = ObjectTracker("cam", "det", ["person"], cfg, zones=zones, lines=lines)
    events = 0

    def step(fr: SimFrame) -> None:
        nonlocal events
        events += len(ot.step(fr.dets, fr.timestamp, fr.index, 960, 540)[1])

    out["tracker_zones_lines_lifecycle"] = timed(step, fs, args.warmup)
    out["events"] = events
    print(json.dumps(out))
    return 0
