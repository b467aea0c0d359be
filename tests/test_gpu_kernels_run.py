"""The GPU kernels on a real GPU: letterbox and decode against the CPU path, and the whole
TensorRT GPU path (TensorRT's execution faked by ONNX Runtime) against the goldens.

Skipped without CUDA; ``scripts/gpu-check`` runs these on the lent GPU machine.
"""

from __future__ import annotations

import asyncio
import sys
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
from conftest import DEMO_VIDEO, POSE, SHARED_MEDIA  # noqa: E402
from edgeyolo.config import GpuPathConfig, ModelConfig, TensorRTConfig  # noqa: E402
from edgeyolo.engines.tensorrt import TensorRTBackend  # noqa: E402
from edgeyolo.engines.trt_gpu import GpuFill  # noqa: E402
from edgeyolo.frames import Letterbox  # noqa: E402
from edgeyolo.gpu import CudaContext, DeviceBuffer, Stream  # noqa: E402
from edgeyolo.gpu.decode import GpuDecoder, reference_records  # noqa: E402
from edgeyolo.gpu.errors import check, driver  # noqa: E402
from edgeyolo.gpu.nvrtc import load_kernels  # noqa: E402
from edgeyolo.postprocess import Thresholds, decode  # noqa: E402
from edgeyolo.preprocess import Preprocessor  # noqa: E402
from helpers import recorded  # noqa: E402

DET = POSE.parent / "edgeyolo-demo-det.onnx"


@pytest.fixture(scope="module")
def ctx():
    with CudaContext(0) as c:
        yield c


@pytest.fixture(scope="module")
def modules(ctx, tmp_path_factory):
    cache = tmp_path_factory.mktemp("kernels")
    lb = load_kernels("letterbox", ctx.compute_capability, cache)
    dec = load_kernels("decode", ctx.compute_capability, cache)
    yield lb, dec
    dec.close()
    lb.close()


def real_images() -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(DEMO_VIDEO))
    out = []
    for i in range(60):
        ok, img = cap.read()
        assert ok
        if i % 12 == 0:
            out.append(img)
    cap.release()
    shared = [SHARED_MEDIA / n for n in ("bus.jpg", "zidane.jpg")]
    out += [cv2.imread(str(p)) for p in shared if p.is_file()]
    return out


def download(buf: DeviceBuffer, shape, dtype) -> np.ndarray:
    host = np.empty(shape, dtype)
    check(driver().cuMemcpyDtoH(host.ctypes.data, buf.handle, host.nbytes), "cuMemcpyDtoH")
    return host


def poison(buf: DeviceBuffer) -> None:
    check(driver().cuMemsetD8(buf.handle, 0xFF, buf.nbytes), "cuMemsetD8")  # NaN everywhere


def bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint16 if a.dtype == np.float16 else np.uint32)


def letterbox_on_gpu(module, img, dtype, w, h, integrated, batch_index=0, batch=1):
    """The kernel's output for ``img``, the slot's batch image ``batch_index``, poisoned first."""
    fill = GpuFill(module, dtype, w, h, integrated)
    stream = Stream()
    out = DeviceBuffer(batch * 3 * h * w * np.dtype(dtype).itemsize)
    try:
        poison(out)
        lb = fill.fill(img, out.ptr, stream, batch_index)
        stream.synchronize()
        return download(out, (batch, 3, h, w), dtype), lb
    finally:
        out.close()
        stream.close()
        fill.close()


@pytest.mark.parametrize("integrated", [False, True], ids=["upload", "mapped"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("size", [(640, 640), (320, 320), (1280, 1280), (640, 384)])
def test_letterbox_kernel_equals_cpu_letterbox(ctx, modules, size, dtype, integrated):
    """Every element written and bit-identical to the CPU Preprocessor, on real frames."""
    w, h = size
    pre = Preprocessor(h, w)
    for img in real_images():
        cpu = np.empty((1, 3, h, w), dtype)
        lb_cpu = pre(img, cpu)
        gpu, lb = letterbox_on_gpu(modules[0], img, dtype, w, h, integrated)
        assert lb == lb_cpu
        np.testing.assert_array_equal(bits(gpu), bits(cpu))


def test_letterbox_kernel_writes_only_its_batch_image(ctx, modules):
    img = real_images()[0]
    cpu = np.empty((1, 3, 640, 640), np.float32)
    Preprocessor(640, 640)(img, cpu)
    gpu, _ = letterbox_on_gpu(modules[0], img, np.float32, 640, 640, False, batch_index=1, batch=3)
    np.testing.assert_array_equal(bits(gpu[1:2]), bits(cpu))
    assert np.isnan(gpu[0]).all()
    assert np.isnan(gpu[2]).all()


def run_decoder(module, raw: np.ndarray, conf, nc, nk, classes=None, capacity=4096, first=512):
    """Upload ``raw`` (batch x rows x N), decode on the GPU; (counts, records per image)."""
    stream = Stream()
    dev = DeviceBuffer(raw.nbytes)
    dec = GpuDecoder(
        module, raw.dtype, raw.shape[2], nc, nk, conf, classes, capacity, first, raw.shape[0]
    )
    try:
        src = np.ascontiguousarray(raw)
        check(driver().cuMemcpyHtoD(dev.handle, src.ctypes.data, src.nbytes), "cuMemcpyHtoD")
        dec.enqueue(dev.ptr, stream)
        stream.synchronize()
        counts = dec.counts().copy()
        if dec.enqueue_rest(stream):
            stream.synchronize()
        out = [dec.candidates(b) if counts[b] <= capacity else None for b in range(len(counts))]
        return counts, out
    finally:
        dec.close()
        dev.close()
        stream.close()


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("model", ["det", "pose"])
def test_decode_kernel_equals_reference_and_cpu_decode(ctx, modules, model, dtype):
    """Candidates equal the numpy model's; host NMS on them equals the CPU decode exactly."""
    nc, kpt = (80, None) if model == "det" else (1, (17, 3))
    nk = 0 if kpt is None else 51
    raw = np.concatenate([recorded(model, f) for f in ("f000", "f120")]).astype(dtype)
    lb = Letterbox.fit(960, 540, 640, 640)
    filters = [None, np.array([0, 2, 7], np.intp)] if model == "det" else [None]
    for conf in (0.25, 0.05, 0.001):
        for classes in filters:
            # first=8: most frames also take the second copy of the records past the first 8
            counts, cands = run_decoder(modules[1], raw, conf, nc, nk, classes, 30000, 8)
            th = Thresholds(conf, 0.7, 300, classes)
            for b in range(raw.shape[0]):
                ref = reference_records(raw[b : b + 1], conf, nc, nk, classes)
                assert counts[b] == len(ref)
                c = cands[b]
                np.testing.assert_array_equal(c.anchors, ref[:, 0].astype(np.intp))
                np.testing.assert_array_equal(c.scores, ref[:, 2])
                np.testing.assert_array_equal(c.box, ref[:, 3:7].T)
                got = decode(c, lb, th, nc, kpt)
                want = decode(raw[b : b + 1], lb, th, nc, kpt)
                np.testing.assert_array_equal(got.boxes, want.boxes)
                np.testing.assert_array_equal(got.scores, want.scores)
                np.testing.assert_array_equal(got.class_ids, want.class_ids)
                if kpt is not None:
                    np.testing.assert_array_equal(got.keypoints, want.keypoints)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("model", ["det", "pose"])
def test_nms_kernel_equals_the_cpu_decode(ctx, modules, model, dtype):
    """Decode + NMS + letterbox inverse on the GPU: the CPU decode's detections bit for bit,
    for two frames in one launch (each with its own letterbox), thresholds down to 0.001,
    IoU 0.7 and 0.45, the max_det cap and a class filter."""
    from edgeyolo.gpu import PinnedBuffer
    from edgeyolo.gpu.nms import letterbox_params

    nc, kpt = (80, None) if model == "det" else (1, (17, 3))
    nk = 0 if kpt is None else 51
    raw = np.concatenate([recorded(model, f) for f in ("f000", "f120")]).astype(dtype)
    lbs = [Letterbox.fit(960, 540, 640, 640), Letterbox.fit(1280, 720, 640, 640)]
    filters = [None, np.array([0, 2, 7], np.intp)] if model == "det" else [None]
    stream = Stream()
    dev = DeviceBuffer(raw.nbytes)
    params = PinnedBuffer((2, 8), np.float32, mapped=True)
    try:
        src = np.ascontiguousarray(raw)
        check(driver().cuMemcpyHtoD(dev.handle, src.ctypes.data, src.nbytes), "cuMemcpyHtoD")
        for b, lb in enumerate(lbs):
            letterbox_params(lb, params.array[b])
        used = 0
        for conf in (0.25, 0.05, 0.001):
            for iou, max_det in ((0.7, 300), (0.45, 300), (0.7, 2)):
                for classes in filters:
                    dec = GpuDecoder(
                        modules[1],
                        raw.dtype,
                        raw.shape[2],
                        nc,
                        nk,
                        conf,
                        classes,
                        4096,
                        512,
                        2,
                        nms=(iou, max_det, 1 if kpt is None else 3),
                    )
                    try:
                        dec.enqueue(dev.ptr, stream, 2, params.device_ptr)
                        stream.synchronize()
                        if dec.enqueue_rest(stream):
                            stream.synchronize()
                        th = Thresholds(conf, iou, max_det, classes)
                        for b in range(2):
                            assert dec.nms_done[b]
                            used += 1
                            got = dec.detections(b, kpt)
                            want = decode(raw[b : b + 1], lbs[b], th, nc, kpt)
                            where = f"{model} conf {conf} iou {iou} max_det {max_det} image {b}"
                            assert len(got) == len(want), where
                            np.testing.assert_array_equal(got.boxes, want.boxes, err_msg=where)
                            np.testing.assert_array_equal(got.scores, want.scores, err_msg=where)
                            np.testing.assert_array_equal(got.class_ids, want.class_ids)
                            if kpt is not None:
                                np.testing.assert_array_equal(got.keypoints, want.keypoints)
                    finally:
                        dec.close()
        assert used > 0
    finally:
        params.close()
        dev.close()
        stream.close()


def test_decode_kernel_counts_overflow(ctx, modules):
    raw = recorded("det", "f000")
    n = len(reference_records(raw, 0.001, 80, 0))
    assert n > 64
    counts, cands = run_decoder(modules[1], raw, 0.001, 80, 0, capacity=64, first=16)
    assert counts[0] == n
    assert cands[0] is None


@pytest.fixture
def trt(monkeypatch):
    fake = fake_tensorrt.install()
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    fake.set_executor(None)  # ONNX Runtime behind synchronous copies: exact CPU outputs
    yield fake
    fake.set_executor(None)


def have_shared(rec) -> bool:
    return (SHARED_MEDIA / Path(rec["path"]).name).is_file()


def golden_cases():
    sys.path.insert(0, str(Path(__file__).parent))
    import test_postprocess as tp

    return tp


@pytest.mark.parametrize(
    ("path", "capacity"),
    [
        (GpuPathConfig(), 4096),
        (GpuPathConfig(decode_capacity=16), 16),  # every frame overflows -> full output
    ],
    ids=["gpu", "gpu-overflow"],
)
def test_gpu_path_predictions_match_cpu_path_and_goldens(trt, tmp_path, path, capacity):
    """GPU letterbox + GPU decode through the TensorRT backend: detections identical to the
    CPU path (same engine outputs) and within the golden tolerances of Ultralytics'."""
    tp = golden_cases()
    with CudaContext(0) as c:
        gpu, cc = c.name, ".".join(map(str, c.compute_capability))

    async def main() -> None:
        cfg = TensorRTConfig(cache_dir=tmp_path / "cache", gpu=path)
        cpu_cfg = TensorRTConfig(
            cache_dir=tmp_path / "cache", gpu=GpuPathConfig(preprocess="cpu", decode="cpu")
        )
        for task, onnx in (("detect", DET), ("pose", POSE)):
            name = "det" if task == "detect" else "pose"
            eng = fake_tensorrt.write_fake_engine(tmp_path / f"{name}.engine", onnx, gpu, cc)
            for conf in ("0.25", "0.05"):
                g = tp.golden(f"ultralytics-{name}-conf{conf}.json")
                s = g["settings"]
                model = ModelConfig(
                    name=name, path=eng, task=task, conf=s["conf"], iou=s["iou"], max_det=300
                )
                # The GPU machine may lack ../shared/media: use the golden images it has (the
                # demo video's frames and crops always).
                images = [r for r in g["images"] if r["root"] != "shared" or have_shared(r)]
                assert len(images) >= 8
                results = {}
                for label, c in (("gpu", cfg), ("cpu", cpu_cfg)):
                    backend = TensorRTBackend(c)
                    try:
                        engine = backend.open_engine(model)
                        assert (engine.gpu_decode is None) == (label == "cpu")
                        slot = backend.allocate_input(engine.info.input)
                        th = Thresholds(s["conf"], s["iou"], s["max_det"])
                        info = engine.info
                        dets = []
                        for rec in images:
                            lb = slot.fill(tp.golden_image(rec))
                            out = await engine.infer(slot)
                            dets.append(decode(out, lb, th, info.num_classes, info.kpt_shape))
                        if label == "gpu" and capacity == 16:
                            assert engine.gpu_decode is not None
                            assert engine.gpu_decode.overflows > 0
                            # ... and Prometheus says so (read when scraped).
                            from edgeyolo.metrics import Metrics

                            metrics = Metrics(process=False)
                            metrics.watch_engines({name: engine})
                            text = metrics.exposition().decode()
                            line = f'edgeyolo_gpu_decode_overflows_total{{engine="{name}"}} '
                            assert line + f"{float(engine.gpu_decode.overflows)}" in text
                        results[label] = dets
                    finally:
                        backend.close()
                for rec, a, b in zip(images, results["gpu"], results["cpu"], strict=True):
                    where = f"{name} conf {conf} {rec['id']}"
                    np.testing.assert_array_equal(a.boxes, b.boxes, err_msg=where)
                    np.testing.assert_array_equal(a.scores, b.scores, err_msg=where)
                    np.testing.assert_array_equal(a.class_ids, b.class_ids, err_msg=where)
                    tp.assert_same_detections(a, rec["detections"], task, where)

    asyncio.run(main())


def test_decoder_runs_only_the_images_a_call_holds(ctx, modules):
    """A decoder sized for 3 images, called with 3, 1, 2, 1: each call counts and returns just
    its images (stale rows of a larger earlier call neither count nor overflow)."""
    f0, f120 = recorded("det", "f000"), recorded("det", "f120")
    raw = np.concatenate([f0, f120, np.full_like(f0, 0.9)])  # image 2: every anchor a hit
    stream = Stream()
    dev = DeviceBuffer(raw.nbytes)
    dec = GpuDecoder(modules[1], np.float32, 8400, 80, 0, 0.25, None, 4096, 512, batch=3)
    try:
        check(driver().cuMemcpyHtoD(dev.handle, raw.ctypes.data, raw.nbytes), "cuMemcpyHtoD")
        refs = [reference_records(raw[b : b + 1], 0.25, 80, 0) for b in range(3)]
        for images in (3, 1, 2, 1):
            dec.enqueue(dev.ptr, stream, images)
            stream.synchronize()
            counts = dec.counts().copy()
            assert list(counts) == [len(r) for r in refs[:images]]
            for b in range(images):
                if counts[b] <= 4096:  # image 2 (8400) overflows
                    c = dec.candidates(b)
                    np.testing.assert_array_equal(c.anchors, refs[b][:, 0].astype(np.intp))
                    np.testing.assert_array_equal(c.scores, refs[b][:, 2])
    finally:
        dec.close()
        dev.close()
        stream.close()


def test_batch_engine_decodes_on_the_gpu_and_agrees_with_batch_1(trt, tmp_path):
    """A max_batch 3 engine decodes its batched call on the GPU in one launch (candidates per
    frame); a batch-1 engine of the same model, one frame per call, gets the same detections
    for each frame."""
    from edgeyolo.postprocess import Candidates, Detections
    from edgeyolo.runner import ModelRunner

    dyn = DET.with_name("edgeyolo-demo-det-dynbatch.onnx")

    async def main() -> None:
        backend = TensorRTBackend(TensorRTConfig(cache_dir=tmp_path / "cache"))
        try:
            batched = ModelRunner.open(
                backend, ModelConfig(name="b", path=dyn, task="detect", max_batch=3)
            )
            single = ModelRunner.open(backend, ModelConfig(name="s", path=dyn, task="detect"))
            assert batched.engine.gpu_decode is not None
            assert single.engine.gpu_decode is not None
            slots = [backend.allocate_input(single.engine.info.input) for _ in range(3)]
            lbs = [s.fill(img) for s, img in zip(slots, real_images()[:3], strict=True)]
            batch = await batched.engine.infer_batch(slots)
            assert len(batch) == 3
            assert all(isinstance(c, Candidates) for c in batch)
            assert batched.engine.gpu_decode.decoder.images == 3
            # Decoded now: the candidates live in the decoder's buffer until the next call.
            from_batch = [batched.decode(c, lb) for c, lb in zip(batch, lbs, strict=True)]
            for slot, lb, want in zip(slots, lbs, from_batch, strict=True):
                out = await single.engine.infer(slot)
                # One frame from a filled slot: NMS ran on the GPU too (the slot knows its
                # letterbox); the per-model batch above left NMS to the host.
                assert isinstance(out, Detections)
                got = single.decode(out, lb)
                # One frame per call vs one row of a call of 3 (ONNX Runtime underneath): the
                # same detections up to the batch's float rounding.
                assert len(got) == len(want) > 0
                np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-2)
                np.testing.assert_allclose(got.scores, want.scores, atol=1e-4)
                np.testing.assert_array_equal(got.class_ids, want.class_ids)
        finally:
            backend.close()

    asyncio.run(main())
