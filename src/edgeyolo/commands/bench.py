"""``edgeyolo bench``: how fast the pipeline runs here, printed as one JSON object.

The longer tools are subcommands in their own modules: ``bench soak`` (growth over time),
``bench mqtt`` (delivery latency and rates through a broker), ``bench drift`` (INT8 vs FP32).

Default: the whole pipeline, headless, reading the first camera's file as fast as it can
(no pacing, no sinks), with median and p95 milliseconds per stage.

``--host-decode``: the GPU path's host decode (candidates -> detections) on this CPU, no GPU
needed (``benchmarks/host_decode.py``).

``--cameras N``: N cameras batched into one engine call per model vs the same N at batch 1
(``commands/bench_batch.py``).

``--cpu-stages``: only the CPU work, on one thread. Raw model outputs for every frame are
computed first; then per frame the shared letterbox and every model's decode are timed.
The seed script's way of doing the same work (letterbox + blob per model, four copies,
transpose and argmax over every anchor, NMS through OpenCV / a Python loop) is timed on the
same frames as the baseline, and the ratio is printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import TYPE_CHECKING, Any

from edgeyolo.benchmarks.common import median_p95
from edgeyolo.commands import bench_tools
from edgeyolo.commands._common import add_config_arg, load, non_negative_int, positive_int
from edgeyolo.errors import ConfigError

if TYPE_CHECKING:
    from edgeyolo.config import Config


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bench",
        help="measure pipeline speed (JSON on stdout)",
        description="Run the pipeline headless on the first camera's video as fast as it can "
        "and print fps and per-stage milliseconds as one JSON object.",
    )
    add_config_arg(p)
    p.add_argument("--frames", type=positive_int, default=100, help="frames to measure (100)")
    p.add_argument(
        "--warmup", type=non_negative_int, default=5, help="frames run before measuring (5)"
    )
    p.add_argument(
        "--sequential",
        action="store_true",
        help="run the models one after another instead of concurrently",
    )
    p.add_argument(
        "--waits",
        action="store_true",
        help="GPU only: time from the GPU finishing to the loop knowing, polling CUDA events "
        "vs a host callback (and the loop's CPU use while waiting)",
    )
    p.add_argument(
        "--cpu-stages",
        action="store_true",
        help="time only preprocessing and postprocessing (CPU), against the seed's way",
    )
    p.add_argument(
        "--host-decode",
        action="store_true",
        help="time the GPU path's host decode (NMS + mapping back of the decode kernel's "
        "candidates) per model, on real outputs from ONNX Runtime; no GPU needed",
    )
    p.add_argument(
        "--cameras",
        type=positive_int,
        default=None,
        metavar="N",
        help="N copies of the first camera: batched into one engine call per model (models "
        "with a dynamic batch, max_batch N) vs the same N cameras at batch 1, side by side",
    )
    p.add_argument(
        "--rounds",
        type=positive_int,
        default=1,
        metavar="R",
        help="with --cameras: run the batch-1/batched pair R times, alternating which goes "
        "first, and report the median (1)",
    )
    p.add_argument(
        "--paced",
        action="store_true",
        help="with --cameras: read each camera at its file's own frame rate (as live cameras "
        "deliver) instead of flat out, to see latency against batch_timeout_ms + one call",
    )
    p.add_argument(
        "--gpu-path",
        action="store_true",
        help="TensorRT only: engine-only vs whole-pipeline fps, and host CPU per frame, with "
        "the GPU letterbox/decode against the CPU ones",
    )
    p.set_defaults(func=main)
    # Longer-running tools: `edgeyolo bench TOOL ...`; plain `edgeyolo bench` is the above.
    tools = p.add_subparsers(
        dest="tool",
        metavar="TOOL",
        required=False,
        title="tools (optional; without one, bench measures the pipeline as above)",
    )
    bench_tools.register(tools)


def bench_pipeline(cfg: Config, frames: int, warmup: int, sequential: bool) -> dict[str, Any]:
    """Run the real pipeline on the first camera, flat out, and summarize its timings."""
    from edgeyolo.app import RunOptions, run  # noqa: PLC0415

    cam = cfg.cameras[0]
    cfg = cfg.model_copy(
        update={
            "cameras": [cam.model_copy(update={"loop": True})],
            "logging": cfg.logging.model_copy(
                update={"frame_sample": 0, "summary_interval_s": 1e9}
            ),
        }
    )
    result = run(
        cfg,
        RunOptions(
            max_frames=frames + warmup,
            pace="fast",
            sequential=sequential,
            keep_timings=True,
            jsonl=False,
            handle_signals=True,
        ),
    )
    timings = result.telemetry[cam.name].all[warmup:]
    if not timings:
        raise ConfigError(f"cameras[{cam.name}]: the source delivered no frames")
    stages: dict[str, list[float]] = {}
    for t in timings:
        for k, v in t.flat().items():
            stages.setdefault(k, []).append(v)
    wall = sum(t.e2e_ms for t in timings) / 1e3
    steady = result.telemetry[cam.name].steady_s(warmup)
    return {
        "mode": "sequential" if sequential else "concurrent",
        "camera": cam.name,
        "models": [m.name for m in cfg.models_for(cam.name)],
        "frames": len(timings),
        "fps": round(len(timings) / steady, 2) if steady else None,
        "stages_ms": {k: median_p95(v) for k, v in stages.items()},
        "e2e_sum_s": round(wall, 3),
    }


def bench_cpu_stages(cfg: Config, frames: int) -> dict[str, Any]:
    """Time preprocessing + every model's decode per frame, and the seed's way as baseline."""
    import numpy as np  # noqa: PLC0415

    from edgeyolo.benchmarks.common import camera_frames  # noqa: PLC0415
    from edgeyolo.commands import _seed  # noqa: PLC0415
    from edgeyolo.engines.onnxruntime import OnnxRuntimeBackend  # noqa: PLC0415
    from edgeyolo.preprocess import Preprocessor  # noqa: PLC0415
    from edgeyolo.runner import open_runners  # noqa: PLC0415

    cam = cfg.cameras[0]
    images = camera_frames(cfg, frames)
    backend = OnnxRuntimeBackend(cfg.onnxruntime, max_engines=len(cfg.models))
    runners = open_runners(backend, cfg.models_for(cam.name))
    try:
        specs = list(dict.fromkeys(r.engine.info.input for r in runners))
        pres = {s: Preprocessor(*s.hw) for s in specs}
        bufs = {s: np.zeros(s.shape, s.dtype) for s in specs}
        # Raw outputs first (not timed), so only CPU pre/post is measured below.
        raws: list[list[Any]] = []
        for img in images:
            lbs = {s: pres[s](img, bufs[s]) for s in specs}
            raws.append([ort_engine(r).run_sync(bufs[r.engine.info.input]).copy() for r in runners])
        seed = _seed.SeedPipeline([(r.engine.info.task, r.engine.info.input.hw) for r in runners])
        for _ in range(2):  # warm caches and code paths for both
            _one_frame(images[0], raws[0], runners, specs, pres, bufs)
            seed.run(images[0], raws[0])
        pre_ms, post_ms, seed_pre, seed_post = [], [], [], []
        for img, raw in zip(images, raws, strict=True):
            a, b = _one_frame(img, raw, runners, specs, pres, bufs)
            pre_ms.append(a)
            post_ms.append(b)
            c, d = seed.run(img, raw)
            seed_pre.append(c)
            seed_post.append(d)
        del lbs
    finally:
        for r in reversed(runners):
            r.close()
        backend.close()
    ours = statistics.median(p + q for p, q in zip(pre_ms, post_ms, strict=True))
    base = statistics.median(p + q for p, q in zip(seed_pre, seed_post, strict=True))
    return {
        "mode": "cpu-stages",
        "models": [r.name for r in runners],
        "frames": len(images),
        "image": [int(images[0].shape[1]), int(images[0].shape[0])],
        "preprocess_ms": round(statistics.median(pre_ms), 4),
        "postprocess_ms": round(statistics.median(post_ms), 4),
        "total_ms": round(ours, 4),
        "seed_preprocess_ms": round(statistics.median(seed_pre), 4),
        "seed_postprocess_ms": round(statistics.median(seed_post), 4),
        "seed_total_ms": round(base, 4),
        "speedup_vs_seed": round(base / ours, 2) if ours else None,
    }


def ort_engine(runner: Any) -> Any:
    """The runner's engine, which --cpu-stages always creates with ONNX Runtime."""
    return runner.engine


def _one_frame(
    img: Any, raw: list[Any], runners: Any, specs: Any, pres: Any, bufs: Any
) -> tuple[float, float]:
    t0 = time.perf_counter_ns()
    lbs = {s: pres[s](img, bufs[s]) for s in specs}
    t1 = time.perf_counter_ns()
    for r, out in zip(runners, raw, strict=True):
        r.decode(out, lbs[r.engine.info.input])
    t2 = time.perf_counter_ns()
    return (t1 - t0) / 1e6, (t2 - t1) / 1e6


def bench_waits(samples: int) -> dict[str, Any]:
    """Polling vs host-callback waits on this machine's GPU (see ``edgeyolo.gpu.bench``)."""
    import asyncio  # noqa: PLC0415
    from dataclasses import asdict  # noqa: PLC0415

    from edgeyolo.engines.trt_runtime import cuda_problem  # noqa: PLC0415
    from edgeyolo.errors import BackendUnavailableError  # noqa: PLC0415

    problem = cuda_problem()
    if problem is not None:
        raise BackendUnavailableError(f"bench --waits needs an NVIDIA GPU: {problem}")
    from edgeyolo.gpu import CudaContext  # noqa: PLC0415
    from edgeyolo.gpu.bench import measure_floor, measure_wait  # noqa: PLC0415

    gpu_s = 0.004  # about one engine's GPU time on a Jetson Orin

    async def measure() -> list[Any]:
        return [
            await measure_wait("poll", samples, gpu_s, hint=True),
            await measure_wait("callback", samples, gpu_s),
        ]

    with CudaContext(0):
        floor = measure_floor(samples)
        poll, callback = asyncio.run(measure())
    return {
        "mode": "waits",
        "samples": samples,
        "gpu_ms": gpu_s * 1e3,
        "floor": asdict(floor),
        "poll": asdict(poll),
        "callback": asdict(callback),
        "poll_vs_callback_p50": round(callback.p50_us / poll.p50_us, 2) if poll.p50_us else None,
    }


def main(args: argparse.Namespace) -> int:
    if args.cameras is None:
        given = [f for f, on in (("--paced", args.paced), ("--rounds", args.rounds != 1)) if on]
        if given:
            raise ConfigError(f"bench {' and '.join(given)}: only with --cameras N")
    cfg = load(args.config, log_format=None, log_level="warning")
    if args.waits:
        report = bench_waits(max(args.frames, 50))
    elif args.gpu_path:
        from edgeyolo.gpu.pathbench import bench_gpu_path  # noqa: PLC0415

        report = bench_gpu_path(cfg, args.frames, bench_pipeline)
    elif args.cpu_stages:
        report = bench_cpu_stages(cfg, args.frames)
    elif args.host_decode:
        from edgeyolo.benchmarks.host_decode import bench_host_decode  # noqa: PLC0415

        report = bench_host_decode(cfg, args.frames)
    elif args.cameras is not None:
        from edgeyolo.commands.bench_batch import bench_batching  # noqa: PLC0415

        report = bench_batching(
            cfg, args.cameras, args.frames, args.warmup, args.rounds, paced=args.paced
        )
    else:
        report = bench_pipeline(cfg, args.frames, args.warmup, args.sequential)
    sys.stdout.write(json.dumps(report) + "\n")
    return 0
