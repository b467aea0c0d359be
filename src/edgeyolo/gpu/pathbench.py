"""``edgeyolo bench --gpu-path``: the TensorRT backend's GPU path against its CPU path, in one run.

On the config's models and first camera's video (backend tensorrt):
- engine-only: every engine concurrently on one filled slot, nothing else (frames/s);
- the whole pipeline (``bench_pipeline``, flat out) with ``tensorrt.gpu`` preprocess/decode on
  the GPU with one CUDA graph launch per frame, the same with stream launches per engine, and
  on the CPU, with the process's CPU time per frame (measured as the difference
  of two runs of different lengths, so start-up cancels) and its ratio to engine-only;
- host CPU per frame of the letterbox and of every model's decode, GPU path vs CPU path
  (thread CPU time of the calls, the GPU work itself excluded); on the GPU path the frames sit
  in the backend's pinned frame pool, as the service's capture puts them.
Numbers are printed, never asserted.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable

    from edgeyolo.config import Config


def _frames(cfg: Config, n: int) -> list[Any]:
    from edgeyolo.sources.files import iter_frames  # noqa: PLC0415

    return list(iter_frames(Path(str(cfg.cameras[0].source)), n))


def with_path(cfg: Config, where: str, graph: str = "off") -> Config:
    update = {"preprocess": where, "decode": where, "cuda_graph": graph}
    gpu = cfg.tensorrt.gpu.model_copy(update=update)
    return cfg.model_copy(
        update={"backend": "tensorrt", "tensorrt": cfg.tensorrt.model_copy(update={"gpu": gpu})}
    )


async def _host_costs(cfg: Config, where: str, graph: str, n: int) -> dict[str, Any]:
    """Engine-only fps and per-call host CPU of fill and decode, for one path.

    Engine-only is every engine concurrently on its own stream, as the issue defines it; with
    a CUDA graph also the graph replayed on a staged frame (``engine_only_graph_fps``). On the
    graph the fill's host part is the copy into staging (``stage``); its GPU part is in the
    launch, whose host time is reported as ``launch_cpu_ms``.
    """
    from edgeyolo.engines.tensorrt import TensorRTBackend  # noqa: PLC0415
    from edgeyolo.runner import ModelRunner  # noqa: PLC0415

    cfg = with_path(cfg, where, graph)
    backend = TensorRTBackend(cfg.tensorrt)
    try:
        runners = [ModelRunner.open(backend, m) for m in cfg.models_for(cfg.cameras[0].name)]
        specs = list(dict.fromkeys(r.input_spec for r in runners))
        slots = {s: backend.allocate_input(s) for s in specs}
        imgs = _frames(cfg, 60)
        # As the capture does in the service: each frame decoded into one of the camera's
        # pinned buffers, in turn (the decoder's write is not counted here).
        pool = backend.frame_pool(tuple(imgs[0].shape))
        buffers = [] if pool is None else [pool.take() for _ in range(pool.size)]
        pooled = [b for b in buffers if b is not None]

        def frame(i: int) -> Any:
            img = imgs[i % len(imgs)]
            if not pooled:
                return img
            buf = pooled[i % len(pooled)]
            np.copyto(buf, img)
            return buf

        fill_cpu: list[float] = []
        launch_cpu: list[float] = []
        decode_cpu: dict[str, list[float]] = {r.name: [] for r in runners}
        lbs = {s: slots[s].fill(imgs[0]) for s in specs}
        for _ in range(10):
            await asyncio.gather(*(r.engine.infer(slots[r.input_spec]) for r in runners))
        # Engine-only: the filled slot, every engine concurrently, no fill and no decode.
        t0 = time.perf_counter()
        for _ in range(n):
            await asyncio.gather(*(r.engine.infer(slots[r.input_spec]) for r in runners))
        engine_fps = n / (time.perf_counter() - t0)
        out: dict[str, Any] = {"engine_only_fps": round(engine_fps, 1)}
        from edgeyolo.engines.trt_graph import FrameGraph  # noqa: PLC0415

        launch = backend.frame_launch(slots, [r.engine for r in runners])
        if not isinstance(launch, FrameGraph):
            launch = None
        if launch is not None:
            for _ in range(3):  # warm-up, capture
                launch.stage(imgs[0])
                await launch.infer()
            t0 = time.perf_counter()
            for _ in range(n):
                await launch.infer()
            out["engine_only_graph_fps"] = round(n / (time.perf_counter() - t0), 1)
            out["graph_used"] = launch.launches > 0
            out["graph_unused_reason"] = launch.disabled_reason
        for i in range(n):
            img = frame(i)
            c0 = time.thread_time_ns()
            if launch is not None:
                lbs = launch.stage(img)
                fill_cpu.append((time.thread_time_ns() - c0) / 1e6)
                raws = await launch.infer()
                launch_cpu.append(launch.last_launch_ms)
            else:
                lbs = {s: slots[s].fill(img) for s in specs}
                fill_cpu.append((time.thread_time_ns() - c0) / 1e6)
                raws = await asyncio.gather(*(r.engine.infer(slots[r.input_spec]) for r in runners))
            for r, raw in zip(runners, raws, strict=True):
                c0 = time.thread_time_ns()
                r.decode(raw, lbs[r.input_spec])  # type: ignore[arg-type]
                decode_cpu[r.name].append((time.thread_time_ns() - c0) / 1e6)
        if launch is not None:
            launch.close()
        out.update(
            fill_cpu_ms=round(statistics.median(fill_cpu), 4),
            decode_cpu_ms={k: round(statistics.median(v), 4) for k, v in decode_cpu.items()},
            fill_plus_decode_cpu_ms=round(
                statistics.median(fill_cpu)
                + sum(statistics.median(v) for v in decode_cpu.values()),
                4,
            ),
        )
        if launch_cpu:
            out["launch_cpu_ms"] = round(statistics.median(launch_cpu), 4)
        return out
    finally:
        backend.close()


def _pipeline(
    cfg: Config, where: str, graph: str, frames: int, bench: Callable[..., Any]
) -> dict[str, Any]:
    """Pipeline fps and process CPU per frame (difference of a short and a long run)."""
    cfg = with_path(cfg, where, graph)
    short = max(20, frames // 5)
    c0 = time.process_time()
    bench(cfg, short, 10, False)
    c1 = time.process_time()
    report = bench(cfg, frames, 10, False)
    c2 = time.process_time()
    per_frame = ((c2 - c1) - (c1 - c0)) / (frames - short) * 1e3
    return {"fps": report["fps"], "process_cpu_ms_per_frame": round(per_frame, 3)}


# (name, tensorrt.gpu preprocess/decode, cuda_graph): the GPU path with one graph launch per
# frame (the default), the same with stream launches per engine, and the CPU path.
VARIANTS = (("gpu", "gpu", "auto"), ("gpu_streams", "gpu", "off"), ("cpu", "cpu", "off"))


def bench_gpu_path(cfg: Config, frames: int, bench: Callable[..., Any]) -> dict[str, Any]:
    """The report ``edgeyolo bench --gpu-path`` prints (``bench`` runs the pipeline)."""
    out: dict[str, Any] = {"mode": "gpu-path", "frames": frames}
    for name, where, graph in VARIANTS:
        costs = asyncio.run(_host_costs(cfg, where, graph, frames))
        pipe = _pipeline(cfg, where, graph, frames, bench)
        costs.update(
            pipeline_fps=pipe["fps"],
            process_cpu_ms_per_frame=pipe["process_cpu_ms_per_frame"],
            pipeline_vs_engine_only=round(pipe["fps"] / costs["engine_only_fps"], 3)
            if pipe["fps"]
            else None,
        )
        out[name] = costs
    return out
