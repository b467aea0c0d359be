"""One launch per frame (``tensorrt.gpu.cuda_graph``) on a real GPU: the whole pipeline with a
CUDA graph per slot set gives exactly the detections of stream launches, on real video.

TensorRT's execution is the PyTorch stand-in (its model graph spliced into ours, as a captured
``enqueueV3`` would be) or ONNX Runtime (which synchronizes the stream: not capturable, the
fallback path). Skipped without CUDA; ``scripts/gpu-check`` runs these on the GPU machine.
"""

from __future__ import annotations

import asyncio
import time

import cv2
import numpy as np
import pytest
import structlog

from edgeyolo.engines.trt_runtime import cuda_problem

pytestmark = pytest.mark.gpu

_REASON = cuda_problem()
if _REASON is not None:
    pytest.skip(f"no CUDA here: {_REASON}", allow_module_level=True)

import fake_tensorrt  # noqa: E402
from conftest import DEMO_VIDEO, POSE  # noqa: E402
from edgeyolo.config import GpuPathConfig, ModelConfig, TensorRTConfig  # noqa: E402
from edgeyolo.engines.tensorrt import TensorRTBackend  # noqa: E402
from edgeyolo.errors import ModelError  # noqa: E402
from edgeyolo.frames import Frame  # noqa: E402
from edgeyolo.gpu import CudaContext  # noqa: E402
from edgeyolo.pipeline import CameraPipeline  # noqa: E402
from edgeyolo.runner import open_runners  # noqa: E402
from edgeyolo.sources.capture import SourceStats  # noqa: E402
from edgeyolo.telemetry import CameraTelemetry  # noqa: E402

DET = POSE.parent / "edgeyolo-demo-det.onnx"
try:
    import torch

    HAVE_TORCH = torch.cuda.is_available()
except ImportError:
    HAVE_TORCH = False


def video_frames(n: int, sizes: tuple[tuple[int, int], ...] = ()) -> list[np.ndarray]:
    """``n`` frames of the demo video; with ``sizes``, frame i resized to sizes[i % len]."""
    cap = cv2.VideoCapture(str(DEMO_VIDEO))
    out = []
    while len(out) < n:
        ok, img = cap.read()
        assert ok
        if sizes:
            img = cv2.resize(img, sizes[len(out) % len(sizes)])
        out.append(img)
    cap.release()
    return out


class Frames:
    """A source over pre-read frames, one per ``next()``, as fast as the pipeline takes them."""

    def __init__(self, images: list[np.ndarray], name: str = "cam") -> None:
        self.name = name
        self.stats = SourceStats()
        self.images = images
        self.i = 0

    async def next(self) -> Frame | None:
        if self.i >= len(self.images):
            return None
        img = self.images[self.i]
        self.i += 1
        self.stats.captured += 1
        return Frame(self.name, self.i, img, time.time(), time.monotonic_ns())


class Record:
    def __init__(self) -> None:
        self.events: list = []

    async def start(self) -> None: ...

    async def emit(self, event) -> None:
        self.events.append(event)

    async def close(self) -> None: ...


def detections(rec: Record) -> dict:
    """(model, seq) -> every detection's class, box, score and keypoints, of the events."""
    return {
        (e.model, e.seq): [(d.class_id, d.box, d.conf, d.keypoints) for d in e.detections]
        for e in rec.events
        if hasattr(e, "detections")
    }


def engines(tmp_path):
    with CudaContext(0) as c:
        gpu, cc = c.name, ".".join(map(str, c.compute_capability))
    models = []
    for name, task, onnx in (("det", "detect", DET), ("pose", "pose", POSE)):
        path = fake_tensorrt.write_fake_engine(tmp_path / f"{name}.engine", onnx, gpu, cc)
        models.append(ModelConfig(name=name, path=path, task=task, conf=0.25))
    return models


def run_pipeline(tmp_path, models, images, gpu: GpuPathConfig):
    """Detections per (model, seq) of the pipeline on ``images``, and its frame graphs."""

    async def main():
        backend = TensorRTBackend(TensorRTConfig(cache_dir=tmp_path / "cache", gpu=gpu))
        runners = open_runners(backend, models)
        rec = Record()
        tel = CameraTelemetry("cam", structlog.get_logger(), frame_sample=0)
        pipe = CameraPipeline(Frames(images), runners, backend, [rec], tel)
        launches = [ss.launch for ss in pipe._slotsets]
        try:
            await pipe.run()
            stats = [
                (lch.launches, lch.streamed, lch.graphs, lch.disabled_reason)
                for lch in launches
                if lch is not None
            ]
        finally:
            pipe.close()
            for r in runners:
                r.close()
            backend.close()
        return detections(rec), stats

    return asyncio.run(main())


@pytest.mark.skipif(not HAVE_TORCH, reason="no torch with CUDA")
@pytest.mark.parametrize(
    "path",
    [GpuPathConfig(), GpuPathConfig(preprocess="cpu", decode="cpu")],
    ids=["gpu-path", "cpu-path"],
)
def test_frame_graph_gives_the_detections_of_stream_launches(trt, tmp_path, path):
    from fake_tensorrt.torch_context import TorchGraphExecutor

    trt.set_executor(TorchGraphExecutor)
    models = engines(tmp_path)
    images = video_frames(24)
    graphed, stats = run_pipeline(
        tmp_path, models, images, path.model_copy(update={"cuda_graph": "on"})
    )
    streamed, off_stats = run_pipeline(
        tmp_path, models, images, path.model_copy(update={"cuda_graph": "off"})
    )
    assert off_stats == []  # off: no frame launch at all, each engine on its own
    # Two slot sets: each ran its first frame on streams (the warm-up), then graphs.
    assert [s[:3] for s in stats] == [(11, 1, 1), (11, 1, 1)]
    assert len(graphed) == len(streamed) == 2 * len(images)
    assert sum(len(v) for v in graphed.values()) > 100  # people and keypoints were found
    assert graphed == streamed


@pytest.mark.skipif(not HAVE_TORCH, reason="no torch with CUDA")
def test_each_frame_size_gets_its_graph(trt, tmp_path):
    from fake_tensorrt.torch_context import TorchGraphExecutor

    trt.set_executor(TorchGraphExecutor)
    models = engines(tmp_path)
    # Alternating sizes, the larger second: its staging buffers replace the first's.
    images = video_frames(16, sizes=((960, 540), (960, 540), (1280, 720), (1280, 720)))
    graphed, stats = run_pipeline(tmp_path, models, images, GpuPathConfig(cuda_graph="on"))
    streamed, _ = run_pipeline(tmp_path, models, images, GpuPathConfig(cuda_graph="off"))
    assert graphed == streamed
    assert sum(s[0] for s in stats) > 0
    assert all(s[2] >= 1 for s in stats)


def test_uncapturable_engines_fall_back_to_streams_with_the_same_results(trt, tmp_path):
    """ONNX Runtime as TensorRT's execution synchronizes the stream: the capture fails, 'auto'
    logs why once per slot set and runs on streams; results are those of 'off'."""
    models = engines(tmp_path)
    images = video_frames(6)
    with structlog.testing.capture_logs() as logs:
        auto, stats = run_pipeline(tmp_path, models, images, GpuPathConfig(cuda_graph="auto"))
    off, _ = run_pipeline(tmp_path, models, images, GpuPathConfig(cuda_graph="off"))
    assert auto == off
    assert [s[0] for s in stats] == [0, 0]
    assert all(s[3] for s in stats), stats  # the reason is kept
    warned = [e for e in logs if e["event"].startswith("cuda graph unavailable")]
    assert len(warned) == 2
    assert warned[0]["reason"]


def test_cuda_graph_on_makes_a_failed_capture_an_error(trt, tmp_path):
    models = engines(tmp_path)
    images = video_frames(3)

    async def main():
        backend = TensorRTBackend(
            TensorRTConfig(cache_dir=tmp_path / "cache", gpu=GpuPathConfig(cuda_graph="on"))
        )
        runners = open_runners(backend, models)
        try:
            slots = {r.input_spec: backend.allocate_input(r.input_spec) for r in runners}
            launch = backend.frame_launch(slots, [r.engine for r in runners])
            assert launch is not None
            launch.stage(images[0])
            first = await launch.infer()  # the warm-up, on streams
            assert not any(isinstance(r, BaseException) for r in first)
            launch.stage(images[1])
            with pytest.raises(ModelError, match=r"cuda_graph is 'on'.*'auto'"):
                await launch.infer()
        finally:
            for r in runners:
                r.close()
            backend.close()

    asyncio.run(main())


@pytest.mark.skipif(not HAVE_TORCH, reason="no torch with CUDA")
def test_frames_captured_into_pinned_buffers_are_uploaded_in_place(trt, tmp_path):
    """A real capture of the demo video decodes into the backend's pinned frame pool: the GPU
    letterbox uploads those frames without the copy into staging, and the detections are
    those of stream launches on the same frames read the plain way."""
    from edgeyolo.config import CameraConfig
    from edgeyolo.sources import CaptureSource
    from fake_tensorrt.torch_context import TorchGraphExecutor

    trt.set_executor(TorchGraphExecutor)
    models = engines(tmp_path)
    n = 30

    async def main():
        backend = TensorRTBackend(TensorRTConfig(cache_dir=tmp_path / "cache"))
        runners = open_runners(backend, models)
        rec = Record()
        source = CaptureSource(CameraConfig(name="cam", source=str(DEMO_VIDEO), pace="fast"))
        tel = CameraTelemetry("cam", structlog.get_logger(), frame_sample=0)
        pipe = CameraPipeline(source, runners, backend, [rec], tel, max_frames=n)
        fills = [slot._gpu for ss in pipe._slotsets for slot in ss.slots.values()]
        await source.start()
        try:
            await pipe.run()
            pool = source.frame_pool
            copies = sum(f.copies for f in fills)
            launches = sum(ss.launch.launches for ss in pipe._slotsets)
        finally:
            await source.close()
            pipe.close()
            for r in runners:
                r.close()
            backend.close()
        return detections(rec), pool, copies, launches

    pooled, pool, copies, launches = asyncio.run(main())
    assert pool is not None
    # The first frames were read before the pool existed (the first frame's size decides it).
    assert pool.lent >= n - 3
    assert copies <= 3 + pool.misses
    assert launches >= n - 3
    plain, _ = run_pipeline(tmp_path, models, video_frames(n), GpuPathConfig(cuda_graph="off"))
    assert pooled == plain


DET_DYN = DET.with_name("edgeyolo-demo-det-dynbatch.onnx")
POSE_DYN = DET.with_name("edgeyolo-demo-pose-dynbatch.onnx")


def by_camera(models, cameras: dict[str, list[np.ndarray]], tmp_path, gpu=None):
    """Per camera, (seq -> detections) of cameras run together through one backend, and the
    backend's batch groups' statistics."""

    async def main():
        backend = TensorRTBackend(
            TensorRTConfig(cache_dir=tmp_path / "cache", gpu=gpu or GpuPathConfig())
        )
        runners = open_runners(backend, models)
        recs = {name: Record() for name in cameras}
        pipes = [
            CameraPipeline(
                Frames(images, name),
                runners,
                backend,
                [recs[name]],
                CameraTelemetry(name, structlog.get_logger(), frame_sample=0),
            )
            for name, images in cameras.items()
        ]
        try:
            await asyncio.gather(*(p.run() for p in pipes))
            groups = [
                (g.launches, g.streamed, dict(g.sizes), g.disabled_reason)
                for g in backend._groups.values()
            ]
        finally:
            for p in pipes:
                p.close()
            for r in runners:
                r.close()
            backend.close()
        out = {
            name: {
                (e.model, e.seq): [(d.class_id, d.box, d.conf) for d in e.detections]
                for e in rec.events
                if hasattr(e, "detections")
            }
            for name, rec in recs.items()
        }
        return out, groups

    return asyncio.run(main())


@pytest.fixture
def strict_fp32():
    """cuDNN without TF32: batch 1 and batch 3 then differ only in FP32 summation order, so
    a row mixed up or misplaced shows, where TF32 rounding (about 1 px) would hide it."""
    import torch

    old = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = old


@pytest.mark.skipif(not HAVE_TORCH, reason="no torch with CUDA")
def test_batched_launch_hands_each_camera_the_detections_it_gets_alone(trt, tmp_path, strict_fp32):
    """Three cameras (different stretches of the demo video) through two batched models: one
    graph launch per batch, and every camera gets what it gets running alone at batch 1."""
    from fake_tensorrt.torch_context import TorchGraphExecutor

    trt.set_executor(TorchGraphExecutor)
    video = video_frames(60)
    cameras = {f"cam{i}": video[20 * i : 20 * i + 16] for i in range(3)}
    batched = [
        ModelConfig(
            name=n, path=p, task=t, conf=0.25, max_batch=4, batch_timeout_ms=200, precision="fp32"
        )
        for n, p, t in (("det", DET_DYN, "detect"), ("pose", POSE_DYN, "pose"))
    ]
    together, groups = by_camera(batched, cameras, tmp_path)
    ((launches, _streamed, sizes, reason),) = groups
    assert reason == ""
    assert launches > 0
    assert sizes.get(3, 0) >= 10, sizes  # the cameras' frames went in batches of three
    single = [m.model_copy(update={"max_batch": 1}) for m in batched]
    for name, images in cameras.items():
        (alone, _) = by_camera(single, {name: images}, tmp_path)
        got = together[name]
        assert set(got) == set(alone[name]), name
        for key, dets in alone[name].items():
            assert len(got[key]) == len(dets), (name, key)
            for (c1, b1, s1), (c2, b2, s2) in zip(got[key], dets, strict=True):
                # Batch 1 and batch 3 run different FP32 convolution algorithms (summation
                # order): equal within float rounding, far below a pixel.
                assert c1 == c2
                np.testing.assert_allclose(b1, b2, atol=0.05)
                assert abs(s1 - s2) < 1e-4
