"""scripts/gpu-check's sections for the GPU path (issue 9): kernels, correctness, speed, leaks.

- kernels: NVRTC compile time per source (cold) and the cached load; versions.
- letterbox: the GPU letterbox vs the CPU one on real frames: max abs difference and the share
  of differing values (FP32 and FP16), and the kernel's GPU time.
- decode: the decode kernel's GPU time on real outputs (few and many candidates).
- gpu-path bench: ``edgeyolo bench --gpu-path`` on 4 stand-in engines (det, pose, det2, pose2):
  engine-only vs whole pipeline, host CPU per frame, GPU path vs CPU path.
- leak: device memory and RSS over N frames of fill + infer + decode on the GPU path.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import importlib
import io
import json
import os
import pstats
import statistics
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edgeyolo.cli import main
from edgeyolo.commands.bench import bench_pipeline
from edgeyolo.config import load_config
from edgeyolo.engines.tensorrt import TensorRTBackend
from edgeyolo.engines.trt_gpu import GpuFill
from edgeyolo.gpu import CudaContext, DeviceBuffer, Event, Stream
from edgeyolo.gpu.decode import GpuDecoder
from edgeyolo.gpu.errors import check, driver
from edgeyolo.gpu.nvrtc import compile_kernel, load_kernels, nvrtc_version
from edgeyolo.gpu.pathbench import with_path
from edgeyolo.preprocess import Preprocessor
from edgeyolo.runner import ModelRunner, run_frame

REPO = Path(__file__).resolve().parents[1]
DET = REPO / "models" / "edgeyolo-demo-det.onnx"
POSE = REPO / "models" / "edgeyolo-demo-pose.onnx"
VIDEO = REPO / "media" / "demo-scene.mp4"
SHARED = REPO.parent / "shared" / "media"


def kernels(row: Any, results: dict[str, Any], ctx: Any) -> None:
    arch = ctx.compute_capability
    out: dict[str, Any] = {
        "nvrtc": ".".join(map(str, nvrtc_version())),
        "cuda_bindings": str(getattr(importlib.import_module("cuda.bindings"), "__version__", "?")),
    }
    for name in ("letterbox", "decode"):
        t0 = time.perf_counter()
        compile_kernel(name, arch, None)
        cold = (time.perf_counter() - t0) * 1e3
        cache = Path(tempfile.gettempdir()) / "edgeyolo-kernel-cache"
        compile_kernel(name, arch, cache)
        t0 = time.perf_counter()
        load_kernels(name, arch, cache).close()
        warm = (time.perf_counter() - t0) * 1e3
        out[name] = {"compile_ms": round(cold, 1), "cached_load_ms": round(warm, 2)}
        row(
            "kernels",
            f"{name}.cu NVRTC sm_{arch[0]}{arch[1]}",
            f"compile {cold:.1f} ms, cached load {warm:.2f} ms",
        )
    row("kernels", "versions", f"NVRTC {out['nvrtc']}, cuda-bindings {out['cuda_bindings']}")
    results["kernels"] = out


def _images(frames: Any) -> list[np.ndarray]:
    imgs: list[np.ndarray] = frames(150)
    for n in ("bus.jpg", "zidane.jpg"):
        img = cv2.imread(str(SHARED / n))
        if img is not None:
            imgs.append(np.asarray(img))
    return imgs


def letterbox(row: Any, results: dict[str, Any], frames: Any) -> None:
    drv = driver()
    imgs = _images(frames)
    with CudaContext(0) as ctx:
        mod = load_kernels("letterbox", ctx.compute_capability, None)
        stream = Stream()
        e0, e1 = Event(timing=True), Event(timing=True)
        rep: dict[str, Any] = {"images": len(imgs)}
        for dtype in (np.float32, np.float16):
            fill = GpuFill(mod, dtype, 640, 640, False)
            buf = DeviceBuffer(3 * 640 * 640 * np.dtype(dtype).itemsize)
            pre = Preprocessor(640, 640)
            cpu = np.empty((1, 3, 640, 640), dtype)
            gpu = np.empty_like(cpu)
            max_abs, differing, total = 0.0, 0, 0
            for img in imgs:
                check(drv.cuMemsetD8(buf.handle, 0xFF, buf.nbytes), "cuMemsetD8")
                fill.fill(img, buf.ptr, stream)
                stream.synchronize()
                check(drv.cuMemcpyDtoH(gpu.ctypes.data, buf.handle, gpu.nbytes), "cuMemcpyDtoH")
                pre(img, cpu)
                d = np.abs(gpu.astype(np.float64) - cpu.astype(np.float64))
                max_abs = max(
                    max_abs, float(np.nanmax(d)) if not np.isnan(d).all() else float("nan")
                )
                differing += int((~(gpu == cpu)).sum())
                total += cpu.size
            # Kernel time alone on the demo frame size (960x540 -> 640x640), upload excluded.
            img = imgs[0]
            fill.fill(img, buf.ptr, stream)
            times = []
            for _ in range(200):
                e0.record(stream)
                assert fill._frame is not None
                fill.kernel.run(fill._frame.ptr, img.shape[1], img.shape[0], buf.ptr, 0, stream)
                e1.record(stream)
                e1.synchronize()
                times.append(e0.elapsed_ms(e1) * 1e3)
            up = []
            for _ in range(100):
                e0.record(stream)
                fill.fill(img, buf.ptr, stream)
                e1.record(stream)
                e1.synchronize()
                up.append(e0.elapsed_ms(e1) * 1e3)
            name = np.dtype(dtype).name
            rep[name] = {
                "max_abs_diff": max_abs,
                "differing_share": differing / total,
                "kernel_us_median": statistics.median(times),
                "upload_plus_kernel_us_median": statistics.median(up),
            }
            row(
                "letterbox",
                f"GPU vs CPU, {len(imgs)} real images -> 640x640 {name}",
                f"max abs diff {max_abs:.3g}, differing values {differing}/{total} "
                f"({differing / total:.2%})",
            )
            row(
                "letterbox",
                f"GPU time 960x540 -> 640x640 {name} (median)",
                f"kernel {statistics.median(times):.1f} us; "
                f"upload + kernel {statistics.median(up):.1f} us",
            )
            buf.close()
            fill.close()
        e0.close()
        e1.close()
        stream.close()
        mod.close()
    results["letterbox"] = rep


def decode_kernel(row: Any, results: dict[str, Any]) -> None:
    drv = driver()
    golden = REPO / "tests" / "data" / "golden"
    rep: dict[str, Any] = {}
    with CudaContext(0) as ctx:
        mod = load_kernels("decode", ctx.compute_capability, None)
        stream = Stream()
        e0, e1 = Event(timing=True), Event(timing=True)
        for model, nc, nk in (("det", 80, 0), ("pose", 1, 51)):
            z = np.load(golden / f"ultralytics-raw-{model}-demo-scene-f000.npz")
            if "output0" in z.files:
                raw = z["output0"]
            else:
                raw = np.zeros(tuple(z["shape"]), np.float32)
                raw[0][:, z["anchors"]] = z["columns"]
            dev = DeviceBuffer(raw.nbytes)
            check(drv.cuMemcpyHtoD(dev.handle, raw.ctypes.data, raw.nbytes), "cuMemcpyHtoD")
            for conf in (0.25, 0.001):
                dec = GpuDecoder(mod, np.float32, raw.shape[2], nc, nk, conf, None, 30000, 512)
                times = []
                for _ in range(200):
                    e0.record(stream)
                    dec.enqueue(dev.ptr, stream)
                    e1.record(stream)
                    e1.synchronize()
                    times.append(e0.elapsed_ms(e1) * 1e3)
                n = int(dec.counts()[0])
                med = statistics.median(times)
                rep[f"{model}_conf{conf}"] = {"candidates": n, "us_median": med}
                row(
                    "decode",
                    f"{model} {raw.shape[1]}x{raw.shape[2]} conf {conf}: "
                    "memset+kernel+D2H (median)",
                    f"{med:.1f} us, {n} candidates",
                )
                dec.close()
            dev.close()
        e0.close()
        e1.close()
        stream.close()
        mod.close()
    results["decode_kernel"] = rep


def bench_config(workdir: Path, ctx_name: str, cc: str) -> Path:
    fake_tensorrt = importlib.import_module("fake_tensorrt")  # tests/ is on sys.path
    det2 = fake_tensorrt.write_fake_engine(workdir / "det2.engine", DET, ctx_name, cc)
    pose2 = fake_tensorrt.write_fake_engine(workdir / "pose2.engine", POSE, ctx_name, cc)
    cfg = {
        "backend": "tensorrt",
        "cameras": [{"name": "demo", "source": str(VIDEO)}],
        "models": [
            {"name": "det", "path": str(DET), "task": "detect", "precision": "fp32"},
            {"name": "pose", "path": str(POSE), "task": "pose", "precision": "fp32"},
            {"name": "det2", "path": str(det2), "task": "detect"},
            {"name": "pose2", "path": str(pose2), "task": "pose"},
        ],
        "tensorrt": {
            "cache_dir": str(workdir / "cache"),
            "gpu": {"kernel_cache": str(workdir / "kc")},
        },
        "logging": {"level": "warning"},
    }
    path = workdir / "gpu-path.json"
    path.write_text(json.dumps(cfg))  # YAML is a superset of JSON
    return path


def gpu_path_bench(row: Any, results: dict[str, Any], cfg_path: Path, frames: int) -> None:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["bench", "--gpu-path", "-c", str(cfg_path), "--frames", str(frames)])
    rep = json.loads(buf.getvalue().strip().splitlines()[-1])
    results["gpu_path_bench"] = {"rc": rc, **rep}
    for where in ("gpu", "gpu_streams", "cpu"):
        r = rep[where]
        tag = {"gpu": "bench/gpu path, graph", "gpu_streams": "bench/gpu path, streams"}.get(
            where, "bench/cpu pre+decode"
        )
        row(
            tag,
            "engine-only (4 engines concurrent, filled slot)",
            f"{r['engine_only_fps']:.0f} fps",
        )
        if "engine_only_graph_fps" in r:
            row(
                tag,
                "engine-only as one CUDA graph (staged frame replayed)",
                f"{r['engine_only_graph_fps']:.0f} fps, used {r['graph_used']} "
                f"{r['graph_unused_reason']}".rstrip(),
            )
        if "launch_cpu_ms" in r:
            row(tag, "host: graph launch + event record", f"{r['launch_cpu_ms']:.3f} ms")
        row(
            tag,
            "whole pipeline (edgeyolo bench, video flat out)",
            f"{r['pipeline_fps']:.0f} fps = {r['pipeline_vs_engine_only']:.2f} of engine-only",
        )
        row(
            tag, "process CPU per frame (whole pipeline)", f"{r['process_cpu_ms_per_frame']:.2f} ms"
        )
        row(
            tag,
            "host CPU per frame: letterbox + 4 decodes",
            f"{r['fill_plus_decode_cpu_ms']:.3f} ms (fill {r['fill_cpu_ms']:.3f}; decode "
            + ", ".join(f"{k} {v:.3f}" for k, v in r["decode_cpu_ms"].items())
            + ")",
        )


def _rss_mib() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


async def leak_gpu_path(
    row: Any, results: dict[str, Any], cfg_path: Path, n: int, frames: Any, graph: bool = False
) -> None:
    cfg = load_config(cfg_path)
    if graph:
        gpu = cfg.tensorrt.gpu.model_copy(update={"cuda_graph": "on"})
        cfg = cfg.model_copy(update={"tensorrt": cfg.tensorrt.model_copy(update={"gpu": gpu})})
    tag = "leak/gpu-path" + (", graph" if graph else "")
    key = "leak_gpu_path" + ("_graph" if graph else "")
    backend = TensorRTBackend(cfg.tensorrt)
    try:
        runners = [ModelRunner.open(backend, m) for m in cfg.models]
        spec = runners[0].input_spec
        slots = [{spec: backend.allocate_input(spec)} for _ in range(2)]
        imgs = frames(300)
        ctx = backend.context

        launches = [backend.frame_launch(ss, [r.engine for r in runners]) for ss in slots]

        async def frame(i: int) -> int:
            ss = slots[i % 2]
            launch = launches[i % 2] if graph else None
            if launch is not None:
                lbs = launch.stage(imgs[i % len(imgs)])
                outs = await run_frame(runners, launch, lbs)
                assert not any(isinstance(o, BaseException) for o in outs), outs
            else:
                lbs = {spec: ss[spec].fill(imgs[i % len(imgs)])}
                outs = await asyncio.gather(*(r.run(ss, lbs) for r in runners))
            return sum(len(o.detections) for o in outs if not isinstance(o, BaseException))

        for i in range(50):
            await frame(i)
        ctx.synchronize()
        free0, total = ctx.memory()
        rss0 = _rss_mib()
        t0 = time.perf_counter()
        dets = 0
        for i in range(n):
            dets += await frame(i)
        took = time.perf_counter() - t0
        ctx.synchronize()
        free1, _ = ctx.memory()
        rss1 = _rss_mib()
        for launch in launches:
            if launch is not None:
                launch.close()
        overflows = sum(
            int(getattr(getattr(r.engine, "gpu_decode", None), "overflows", 0)) for r in runners
        )
        row(
            tag,
            f"{n} frames x 4 engines, GPU fill + GPU decode + NMS "
            + ("(runner.run_frame, CUDA graphs)" if graph else "(runner.run)"),
            f"{took / n * 1e3:.2f} ms/frame ({n / took:.0f} fps), "
            f"{dets / n:.1f} detections/frame, overflows {overflows}",
        )
        row(
            tag,
            "device memory used before -> after (MiB); RSS (MiB)",
            f"{(total - free0) / 2**20:.0f} -> {(total - free1) / 2**20:.0f} "
            f"(delta {(free0 - free1) / 2**20:+.1f}); "
            f"RSS {rss0:.0f} -> {rss1:.0f}",
        )
        results[key] = {
            "frames": n,
            "ms_per_frame": took / n * 1e3,
            "device_used_delta_mib": (free0 - free1) / 2**20,
            "rss_before_mib": rss0,
            "rss_after_mib": rss1,
            "overflows": overflows,
        }
    finally:
        backend.close()


async def gpu_path_sections(
    workdir: Path, row: Any, results: dict[str, Any], use_stand_in: Any, frames: Any, n_leak: int
) -> None:
    use_stand_in()
    with CudaContext(0) as ctx:
        name, cc = ctx.name, ".".join(map(str, ctx.compute_capability))
        try:  # one failing section must not hide the others
            kernels(row, results, ctx)
        except Exception as exc:
            row("error", f"kernels: {type(exc).__name__}", str(exc)[:300])
    try:
        letterbox(row, results, frames)
    except Exception as exc:
        traceback.print_exc()
        row("error", f"letterbox: {type(exc).__name__}", str(exc)[:300])
    try:
        decode_kernel(row, results)
    except Exception as exc:
        traceback.print_exc()
        row("error", f"decode: {type(exc).__name__}", str(exc)[:300])
    cfg_path = bench_config(workdir, name, cc)  # gpu-path.json, for gpu_path_bench_section too
    try:
        await leak_gpu_path(row, results, cfg_path, n_leak, frames)
    except Exception as exc:
        traceback.print_exc()
        row("error", f"leak/gpu-path: {type(exc).__name__}", str(exc)[:300])
    try:
        await leak_gpu_path(row, results, cfg_path, n_leak, frames, graph=True)
    except Exception as exc:
        traceback.print_exc()
        row("error", f"leak/gpu-path graph: {type(exc).__name__}", str(exc)[:300])


def gpu_path_bench_section(workdir: Path, row: Any, results: dict[str, Any]) -> None:
    """``edgeyolo bench --gpu-path`` (it runs its own event loops: call outside of one)."""
    try:
        gpu_path_bench(
            row, results, workdir / "gpu-path.json", int(os.environ.get("GPU_PATH_FRAMES", "400"))
        )
    except Exception as exc:
        traceback.print_exc()
        row("error", f"gpu-path bench: {type(exc).__name__}", str(exc)[:300])
    try:
        profile_pipeline(workdir, row)
    except Exception as exc:
        traceback.print_exc()
        row("error", f"profile: {type(exc).__name__}", str(exc)[:300])


def profile_pipeline(workdir: Path, row: Any, frames: int = 300) -> None:
    """Where the loop's time goes on the GPU path: cProfile of one ``bench_pipeline`` run."""
    cfg = with_path(load_config(workdir / "gpu-path.json"), "gpu", "auto")
    prof = cProfile.Profile()
    prof.enable()
    report = bench_pipeline(cfg, frames, 10, False)
    prof.disable()
    text = io.StringIO()
    stats = pstats.Stats(prof, stream=text).sort_stats("tottime")
    stats.print_stats(40)
    out = os.environ.get("OUT")
    if out:
        (Path(out) / "profile-gpu-path.txt").write_text(text.getvalue())
    row("profile", "pipeline fps under cProfile (GPU path)", f"{report['fps']}")
    entries = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)  # type: ignore[attr-defined]
    for (file, line, fn), (_cc, ncalls, tottime, _ct, _callers) in entries[:12]:
        where = f"{Path(file).name}:{line} {fn}"
        row(
            "profile",
            where[:70],
            f"{tottime * 1e3 / frames:.3f} ms/frame self, {ncalls / frames:.1f} calls/frame",
        )
