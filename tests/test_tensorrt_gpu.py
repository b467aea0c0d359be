"""The TensorRT backend's whole enqueue path on a real GPU, with TensorRT's engine faked.

Everything of edgeyolo's runs for real (CUDA context, pinned slot, one upload, per-engine
streams waiting on the upload event, set_tensor_address, execute_async_v3, D2H, event waits);
only the execution context is a stand-in: ONNX Runtime behind synchronous copies, or PyTorch
replaying a CUDA graph on the engine's stream when PyTorch with CUDA is installed.
"""

from __future__ import annotations

import asyncio
import importlib.util
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeyolo.engines.trt_runtime import cuda_problem

pytestmark = pytest.mark.gpu

_REASON = cuda_problem()
if _REASON is not None:
    pytest.skip(f"no CUDA here: {_REASON}", allow_module_level=True)

import fake_tensorrt  # noqa: E402
from edgeyolo.config import GpuPathConfig, ModelConfig, TensorRTConfig  # noqa: E402
from edgeyolo.engines.tensorrt import TensorRTBackend  # noqa: E402
from edgeyolo.gpu import CudaContext  # noqa: E402
from edgeyolo.preprocess import Preprocessor  # noqa: E402
from helpers import DEMO_VIDEO, DET, POSE  # noqa: E402

# These tests compare raw engine outputs: decode on the CPU (the GPU letterbox is still used).
RAW = GpuPathConfig(decode="cpu")
HAVE_TORCH = importlib.util.find_spec("torch") is not None


def frames(n: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(DEMO_VIDEO))
    out = []
    while len(out) < n:
        ok, img = cap.read()
        if not ok:
            break
        out.append(img)
    cap.release()
    assert out, f"cannot read {DEMO_VIDEO}"
    return out


def ort_reference(onnx: Path, blob: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return sess.run(None, {name: blob.astype(np.float32)})[0]


# The `trt` fixture (the fake as `tensorrt`, ONNX Runtime executor) comes from helpers.


def engine_file(tmp_path: Path, onnx: Path, name: str, **fields) -> Path:
    with CudaContext(0) as ctx:
        gpu, cc = ctx.name, ".".join(map(str, ctx.compute_capability))
    return fake_tensorrt.write_fake_engine(tmp_path / f"{name}.engine", onnx, gpu, cc, **fields)


@pytest.mark.parametrize(
    "executor",
    [
        "onnxruntime",
        pytest.param("torch", marks=pytest.mark.skipif(not HAVE_TORCH, reason="no torch")),
    ],
)
def test_backend_outputs_match_onnxruntime(trt, tmp_path, executor):
    """Det and pose engines on shared slots give ONNX Runtime's outputs, frame by frame."""
    if executor == "torch":
        import torch

        from fake_tensorrt.torch_context import TorchGraphExecutor

        with warnings.catch_warnings():  # newer PyTorch may deprecate these switches
            warnings.simplefilter("ignore")
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        trt.set_executor(TorchGraphExecutor)
    models = [
        ModelConfig(name="det", path=engine_file(tmp_path, DET, "det"), task="detect"),
        ModelConfig(name="pose", path=engine_file(tmp_path, POSE, "pose"), task="pose"),
    ]

    async def main() -> list[tuple[str, float]]:
        backend = TensorRTBackend(TensorRTConfig(cache_dir=tmp_path / "cache", gpu=RAW))
        try:
            engines = [backend.open_engine(m) for m in models]
            spec = engines[0].info.input
            slots = [backend.allocate_input(spec) for _ in range(2)]  # double-buffered
            pre = Preprocessor(*spec.hw)
            errors = []
            for i, img in enumerate(frames(4)):
                slot = slots[i % 2]
                pre(img, slot.host)
                blob = slot.host.copy()
                slot.commit()
                outs = await asyncio.gather(*(e.infer(slot) for e in engines))
                for model, e, out in zip(models, engines, outs, strict=True):
                    ref = ort_reference(model_onnx(model), blob)
                    assert out.shape == ref.shape == e.info.output.shape
                    assert out.dtype == np.float32
                    rel = float(np.linalg.norm(out - ref) / np.linalg.norm(ref))
                    errors.append((e.name, rel))
            return errors
        finally:
            backend.close()

    for name, rel in asyncio.run(main()):
        assert rel < 1e-3, f"{name}: relative error {rel}"


def model_onnx(model: ModelConfig) -> Path:
    return DET if model.name.startswith("det") else POSE


def test_fp16_io_engine_returns_float32(trt, tmp_path):
    """An engine with FP16 I/O gets an FP16 slot and returns float32 close to the FP32 model."""
    path = engine_file(tmp_path, DET, "det16", io_dtype="HALF")
    model = ModelConfig(name="det16", path=path, task="detect")

    async def main() -> tuple[np.ndarray, np.ndarray]:
        backend = TensorRTBackend(
            TensorRTConfig(cache_dir=tmp_path / "cache", wait="callback", gpu=RAW)
        )
        try:
            engine = backend.open_engine(model)
            assert engine.info.input.dtype == np.float16
            slot = backend.allocate_input(engine.info.input)
            assert slot.host.dtype == np.float16
            Preprocessor(*engine.info.input.hw)(frames(1)[0], slot.host)
            blob = slot.host.astype(np.float32)
            slot.commit()
            out = (await engine.infer(slot)).copy()
            return out, blob
        finally:
            backend.close()

    out, blob = asyncio.run(main())
    ref = ort_reference(DET, blob)
    assert out.dtype == np.float32
    assert float(np.linalg.norm(out - ref) / np.linalg.norm(ref)) < 1e-2


DET_DYN = DET.with_name("edgeyolo-demo-det-dynbatch.onnx")


def test_batched_engine_call_matches_each_frame_alone(trt, tmp_path):
    """A dynamic-batch engine built for max_batch 3 (profile 1/3/3): one call on 3 slots, then
    on 2, then a single infer; every output row equals ONNX Runtime on that frame alone, and
    the batcher hands three cameras their own detections from one call."""
    from edgeyolo.runner import ModelRunner

    model = ModelConfig(name="det", path=DET_DYN, task="detect", max_batch=3)

    async def main() -> None:
        backend = TensorRTBackend(TensorRTConfig(cache_dir=tmp_path / "cache", gpu=RAW))
        try:
            runner = ModelRunner.open(backend, model)
            engine = runner.engine
            assert engine.info.max_batch == 3
            spec = engine.info.input
            slots = [backend.allocate_input(spec) for _ in range(3)]
            pre = Preprocessor(*spec.hw)
            blobs, lbs = [], []
            for slot, img in zip(slots, frames(3), strict=True):
                lbs.append(pre(img, slot.host))
                blobs.append(slot.host.copy())
                slot.commit()
            refs = [ort_reference(DET_DYN, b) for b in blobs]
            for n in (3, 2):
                out = (await engine.infer_batch(slots[:n])).copy()
                assert out.shape == (n, 84, 8400)
                for row, ref in zip(out, refs, strict=False):
                    assert float(np.linalg.norm(row - ref[0]) / np.linalg.norm(ref)) < 1e-4
            single = (await engine.infer(slots[2])).copy()
            assert float(np.linalg.norm(single[0] - refs[2][0]) / np.linalg.norm(refs[2])) < 1e-4
            for _ in range(3):
                runner.attach()
            outs = await asyncio.gather(
                *(runner.run({spec: s}, {spec: lb}) for s, lb in zip(slots, lbs, strict=True))
            )
            for out, ref, lb in zip(outs, refs, lbs, strict=True):
                alone = runner.decode(ref, lb)
                assert out.detections.boxes.shape == alone.boxes.shape
                np.testing.assert_allclose(out.detections.boxes, alone.boxes, atol=0.05)
        finally:
            backend.close()

    asyncio.run(main())


def test_batched_call_on_the_gpu_path_matches_the_cpu_path(trt, tmp_path):
    """GPU letterbox into each camera's slot, one batched call, the decode kernel over the
    batch in one launch: each camera gets the detections of the CPU path (CPU letterbox,
    ONNX Runtime, CPU decode) for its frame."""
    from edgeyolo.runner import ModelRunner

    model = ModelConfig(name="det", path=DET_DYN, task="detect", max_batch=3)

    async def main() -> None:
        backend = TensorRTBackend(TensorRTConfig(cache_dir=tmp_path / "cache"))
        try:
            runner = ModelRunner.open(backend, model)
            if runner.engine.gpu_decode is None:
                pytest.skip("the GPU path's kernels are not usable here (see the warning)")
            spec = runner.input_spec
            slots = [backend.allocate_input(spec) for _ in range(3)]
            imgs = frames(3)
            lbs = [slot.fill(img) for slot, img in zip(slots, imgs, strict=True)]
            for _ in range(3):
                runner.attach()
            outs = await asyncio.gather(
                *(runner.run({spec: s}, {spec: lb}) for s, lb in zip(slots, lbs, strict=True))
            )
            pre = Preprocessor(*spec.hw)
            for img, out in zip(imgs, outs, strict=True):
                blob = np.zeros(spec.shape, np.float32)
                lb = pre(img, blob)
                alone = runner.decode(ort_reference(DET_DYN, blob), lb)
                assert len(alone.scores) > 0
                assert out.detections.boxes.shape == alone.boxes.shape
                np.testing.assert_allclose(out.detections.boxes, alone.boxes, atol=0.05)
                np.testing.assert_array_equal(out.detections.class_ids, alone.class_ids)
        finally:
            backend.close()

    asyncio.run(main())
