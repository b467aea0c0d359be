"""``edgeyolo bench --cameras N``: N cameras batched into one engine call vs the same N at batch 1.

Both runs use the same config, models and backend (whatever ``backend`` says: ONNX Runtime on
a CPU, TensorRT on a GPU): the first camera's file is opened N times, read flat out (every
camera offers frames as fast as the models take them), for ``warmup + frames`` frames each;
with ``paced``, at the file's own frame rate instead, as live cameras deliver, which shows the
latency a frame pays for batching (at most about ``batch_timeout_ms`` + one batched call)
rather than the queue of a saturated engine.

- ``batch1``: every model at ``max_batch: 1`` (today's shared-engine path: the cameras take
  turns on each engine, one frame per call);
- ``batched``: every model that has a dynamic batch at ``max_batch: N`` with the configured
  ``batch_timeout_ms``.

A model batches when its file has a symbolic batch dimension or when a sibling
``<stem>-dynbatch.onnx`` exists (then both runs use that file, so the comparison is of the
batching only); other models run at batch 1 in both runs and are listed as not batched.

Printed per run: camera-frames per second over the window where every camera is past its
warm-up, the process CPU milliseconds per camera-frame in that window (less sensitive than
fps to other programs on a shared machine), the 1-minute load average when the run started,
per-camera p50/p99 end-to-end latency, and per model the engine calls per second, the batch
sizes seen, the time frames waited in the batcher, the engine call time and the engine time
per frame. Then the
throughput ratio (batched / batch 1). Numbers are printed, never asserted.

``rounds`` > 1 runs the pair that many times, alternating which goes first (batch 1 first in
odd rounds), so drift in the machine's load hits both alike. ``rounds`` lists each round's
fps, CPU per camera-frame, load and ratio; ``batch1``/``batched`` are the round with the
median ratio (the lower one of an even count), whose ratio is ``throughput_ratio``;
``cpu_ratio`` is the median of the rounds' CPU-per-camera-frame ratios (batched / batch 1).
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeyolo.errors import ConfigError

if TYPE_CHECKING:
    from edgeyolo.app import RunResult
    from edgeyolo.config import Config, ModelConfig


def batchable(model: ModelConfig) -> ModelConfig | None:
    """``model`` on a dynamic-batch file (itself or its ``-dynbatch`` sibling), or None."""
    if model.path.suffix.lower() != ".onnx":
        return model if model.max_batch > 1 else None  # an engine: trust its config
    from edgeyolo.engines.onnxruntime import inspect_model  # noqa: PLC0415

    for path in (model.path, model.path.with_name(f"{model.path.stem}-dynbatch.onnx")):
        if path.is_file() and inspect_model(path).max_batch is None:
            return model.model_copy(update={"path": path})
    return None


def _configs(cfg: Config, cameras: int) -> tuple[Config, Config, list[str]]:
    cam = cfg.cameras[0]
    cams = [
        cam.model_copy(update={"name": f"{cam.name}-{i}", "loop": True}) for i in range(cameras)
    ]
    one: list[ModelConfig] = []
    many: list[ModelConfig] = []
    batched: list[str] = []
    for m in cfg.models_for(cam.name):
        base = m.model_copy(update={"cameras": None})
        dyn = batchable(base)
        if dyn is None:
            one.append(base.model_copy(update={"max_batch": 1}))
            many.append(base.model_copy(update={"max_batch": 1}))
        else:
            one.append(dyn.model_copy(update={"max_batch": 1}))
            many.append(dyn.model_copy(update={"max_batch": cameras}))
            batched.append(m.name)
    logging = cfg.logging.model_copy(update={"frame_sample": 0, "summary_interval_s": 1e9})
    common = {"cameras": cams, "logging": logging}
    return (
        cfg.model_copy(update={**common, "models": one}),
        cfg.model_copy(update={**common, "models": many}),
        batched,
    )


def _pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values, np.float64), q)), 2) if values else 0.0


class CpuClock:
    """Samples (monotonic, process CPU seconds) every ``period_s`` on a thread while running.

    ``cpu_s(a, b)`` is the process CPU time spent between two ``time.monotonic`` instants
    (interpolated between samples), so a bench can charge CPU to its steady window only.
    """

    def __init__(self, period_s: float = 0.02) -> None:
        self.period_s = period_s
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="cpu-clock", daemon=True)

    def _sample(self) -> None:
        while True:
            self.samples.append((time.monotonic(), time.process_time()))
            if self._stop.wait(self.period_s):
                self.samples.append((time.monotonic(), time.process_time()))
                return

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def cpu_s(self, start: float, end: float) -> float:
        at = np.asarray([s[0] for s in self.samples])
        cpu = np.asarray([s[1] for s in self.samples])
        return float(np.interp(end, at, cpu) - np.interp(start, at, cpu))


def summarize(
    result: RunResult, warmup: int, clock: CpuClock | None = None, load: float | None = None
) -> dict[str, Any]:
    """Camera-frames/s in the window where all cameras are warm, CPU, latencies, batch stats."""
    tel = result.telemetry
    if any(len(t.done_at) <= warmup for t in tel.values()):
        raise ConfigError("bench --cameras: a camera delivered too few frames (a short file?)")
    start = max(t.done_at[warmup - 1] if warmup else t.done_at[0] for t in tel.values())
    end = min(t.done_at[-1] for t in tel.values())
    done = sum(1 for t in tel.values() for at in t.done_at if start < at <= end)
    fps = done / (end - start) if end > start else 0.0
    e2e = {cam: [x.e2e_ms for x in t.all[warmup:]] for cam, t in tel.items()}
    models = {}
    for name, b in result.batches.items():
        calls = [r for r in b.all if not r.failed]
        frames = sum(r.size for r in calls)
        waits = [w for r in calls for w in r.waited_ms]
        sizes: dict[int, int] = {}
        for r in calls:
            sizes[r.size] = sizes.get(r.size, 0) + 1
        models[name] = {
            # Every camera frame goes through every model once: calls = frames / batch size.
            "calls_per_s": round(fps * len(calls) / frames, 2) if frames else 0.0,
            "mean_batch": round(frames / len(calls), 2) if calls else 0.0,
            "batch_sizes": dict(sorted(sizes.items())),
            "wait_ms_p50": _pct(waits, 50),
            "wait_ms_p99": _pct(waits, 99),
            "infer_ms_p50": _pct([r.infer_ms for r in calls], 50),
            # Engine time per frame: what a batch saves (or costs) against batch-1 calls.
            "infer_ms_per_frame": round(sum(r.infer_ms for r in calls) / frames, 2)
            if frames
            else 0.0,
        }
    cpu_ms = clock.cpu_s(start, end) * 1e3 / done if clock is not None and done else None
    return {
        "camera_frames_per_s": round(fps, 2),
        "cpu_ms_per_camera_frame": None if cpu_ms is None else round(cpu_ms, 1),
        "load_avg_1m": load,
        "e2e_ms_p50": {cam: _pct(v, 50) for cam, v in e2e.items()},
        "e2e_ms_p99": {cam: _pct(v, 99) for cam, v in e2e.items()},
        "worst_camera_p99_ms": max(_pct(v, 99) for v in e2e.values()),
        "models": models,
    }


def _backend_used(requested: str) -> str:
    """What ``backend: auto`` resolves to here (the service's own choice)."""
    if requested != "auto":
        return requested
    from edgeyolo.engines.select import tensorrt_unavailable_reason  # noqa: PLC0415

    return "tensorrt" if tensorrt_unavailable_reason() is None else "onnxruntime"


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(b / a, 2) if a and b else None


def bench_batching(
    cfg: Config, cameras: int, frames: int, warmup: int, rounds: int = 1, *, paced: bool = False
) -> dict[str, Any]:
    """The two runs, side by side (``rounds`` times, alternating which goes first); ``paced``:
    cameras at their files' frame rate instead of flat out."""
    from edgeyolo.app import RunOptions, run  # noqa: PLC0415

    if cameras < 2:
        raise ConfigError("bench --cameras: batching needs at least 2 cameras")
    if rounds < 1:
        raise ConfigError(f"bench --rounds: {rounds}; expected at least 1")
    one, many, batched = _configs(cfg, cameras)
    if not batched:
        raise ConfigError(
            "bench --cameras: no model has a dynamic batch (an ONNX with a symbolic batch or a "
            "<name>-dynbatch.onnx beside it), so there is nothing to batch"
        )
    out: dict[str, Any] = {
        "mode": "batching",
        "backend": _backend_used(cfg.backend),
        "backend_requested": cfg.backend,
        "cameras": cameras,
        "pace": "native" if paced else "fast",
        "frames_per_camera": frames,
        "batched_models": batched,
        "not_batched": [m.name for m in many.models if m.name not in batched],
        "batch_timeout_ms": {m.name: m.batch_timeout_ms for m in many.models if m.max_batch > 1},
    }
    pairs: list[dict[str, Any]] = []
    for r in range(rounds):
        order = (("batch1", one), ("batched", many))
        pair: dict[str, Any] = {}
        for label, conf in order if r % 2 == 0 else order[::-1]:
            load = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
            clock = CpuClock()
            clock.start()
            try:
                result = run(
                    conf,
                    RunOptions(
                        max_frames=frames + warmup,
                        pace="native" if paced else "fast",
                        keep_timings=True,
                        jsonl=False,
                        handle_signals=True,
                    ),
                )
            finally:
                clock.stop()
            pair[label] = summarize(result, warmup, clock, load)
        pairs.append(pair)
    ratios = [
        _ratio(p["batch1"]["camera_frames_per_s"], p["batched"]["camera_frames_per_s"]) or 0.0
        for p in pairs
    ]
    pick = pairs[ratios.index(statistics.median_low(ratios))]
    out["batch1"], out["batched"] = pick["batch1"], pick["batched"]
    out["throughput_ratio"] = _ratio(
        pick["batch1"]["camera_frames_per_s"], pick["batched"]["camera_frames_per_s"]
    )
    cpu = [
        _ratio(p["batch1"]["cpu_ms_per_camera_frame"], p["batched"]["cpu_ms_per_camera_frame"])
        for p in pairs
    ]
    known = [c for c in cpu if c is not None]
    out["cpu_ratio"] = statistics.median(known) if known else None
    if rounds > 1:
        out["rounds"] = [
            {
                "first": "batch1" if i % 2 == 0 else "batched",
                **{
                    f"{label}_{key}": p[label][key]
                    for label in ("batch1", "batched")
                    for key in ("camera_frames_per_s", "cpu_ms_per_camera_frame", "load_avg_1m")
                },
                "throughput_ratio": ratios[i] or None,
                "cpu_ratio": cpu[i],
            }
            for i, p in enumerate(pairs)
        ]
    return out
