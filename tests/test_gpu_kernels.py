"""The GPU kernels without a GPU: their numpy models against the CPU path, and NVRTC builds.

``reference_letterbox`` and ``reference_records`` are the kernels' arithmetic in numpy (the
same tables and comparisons the kernels use). Here they are checked against what the CPU path
computes on real frames and on Ultralytics' recorded outputs, so a kernel change that breaks
equality with the CPU path shows up in CI. The kernels themselves compile with NVRTC (a pip
wheel, no GPU needed) for Jetson Orin (sm_87) and Hopper (sm_90); tests/test_gpu_kernels_run.py
runs them on a GPU.
"""

from __future__ import annotations

import importlib.util

import cv2
import numpy as np
import pytest

from conftest import DEMO_VIDEO, shared_media
from edgeyolo.frames import Letterbox
from edgeyolo.gpu.decode import class_mask, reference_records, to_candidates
from edgeyolo.gpu.letterbox import reference_letterbox, resize_reference
from edgeyolo.postprocess import Thresholds, decode
from edgeyolo.preprocess import Preprocessor
from helpers import recorded


def video(n: int, step: int = 1) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(DEMO_VIDEO))
    out = []
    for i in range(n * step):
        ok, img = cap.read()
        assert ok, f"{DEMO_VIDEO}: frame {i} unreadable"
        if i % step == 0:
            out.append(img)
    cap.release()
    return out


def as_bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint16 if a.dtype == np.float16 else np.uint32)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("dst", [(640, 640), (320, 320), (1280, 1280), (640, 384)])
def test_letterbox_model_equals_the_cpu_path_bit_for_bit(dtype, dst):
    """Down- and upscaling, odd sizes, both input types: identical bits to the Preprocessor."""
    images = video(3, step=40)
    images += [cv2.imread(str(shared_media(n))) for n in ("bus.jpg", "zidane.jpg")]
    w, h = dst
    pre = Preprocessor(h, w)
    for img in images:
        out = np.empty((1, 3, h, w), dtype)
        lb = pre(img, out)
        np.testing.assert_array_equal(as_bits(reference_letterbox(img, lb, dtype)), as_bits(out))


@pytest.mark.parametrize(
    "new", [(640, 360), (333, 197), (17, 11), (1000, 600), (480, 270), (961, 541)]
)
def test_resize_model_equals_cv2_inter_linear(new):
    """The fixed-point resize alone, against cv2.resize INTER_LINEAR, on a real frame."""
    img = video(1)[0]
    lb = Letterbox(img.shape[1], img.shape[0], new[0], new[1], 1.0, new[0], new[1], 0, 0)
    ref = cv2.resize(img, new, interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(resize_reference(img, lb), ref)


def same(a, b) -> None:
    assert len(a) == len(b)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.class_ids, b.class_ids)
    if a.keypoints is None:
        assert b.keypoints is None
    else:
        np.testing.assert_array_equal(a.keypoints, b.keypoints)


@pytest.mark.parametrize("frame", ["f000", "f120"])
@pytest.mark.parametrize("model", ["det", "pose"])
@pytest.mark.parametrize("conf", [0.25, 0.05, 0.001])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_decode_model_then_host_nms_equals_the_cpu_decode(model, frame, conf, dtype):
    """Kernel records (shuffled, as the atomic counter leaves them) -> identical detections."""
    raw = recorded(model, frame).astype(dtype)
    nc, kpt = (80, None) if model == "det" else (1, (17, 3))
    nk = 0 if kpt is None else 51
    lb = Letterbox.fit(960, 540, 640, 640)
    rng = np.random.default_rng(0)
    filters = [None, np.array([0, 2, 7], np.intp)] if model == "det" else [None]
    for classes in filters:
        th = Thresholds(conf, 0.7, 300, classes)
        rec = reference_records(raw, conf, nc, nk, classes)
        assert rec.shape[1] == 7 + nk
        cands = to_candidates(rng.permutation(rec), nk)
        assert np.all(np.diff(cands.anchors) > 0)
        same(decode(cands, lb, th, nc, kpt), decode(raw, lb, th, nc, kpt))


def test_decode_model_keeps_scores_strictly_above_conf_in_float32():
    """A score equal to float32(conf) is dropped, one ulp above is kept; first max wins."""
    raw = np.zeros((1, 4 + 3, 4), np.float32)
    c = np.float32(0.25)
    raw[0, 4:, 0] = [c, 0, 0]
    raw[0, 4:, 1] = [0, np.nextafter(c, np.float32(1)), 0]
    raw[0, 4:, 2] = [0.5, 0.5, 0.1]  # tie: class 0
    raw[0, 4:, 3] = [0.1, 0.2, 0.9]
    rec = reference_records(raw, 0.25, 3, 0)
    np.testing.assert_array_equal(rec[:, 0], [1, 2, 3])
    np.testing.assert_array_equal(rec[:, 1], [1, 0, 2])
    rec = reference_records(raw, 0.25, 3, 0, np.array([2]))
    np.testing.assert_array_equal(rec[:, 0], [3])
    np.testing.assert_array_equal(class_mask(3, np.array([5, 1])), [0, 1, 0])


NVRTC = importlib.util.find_spec("cuda") is not None and (
    importlib.util.find_spec("cuda.bindings") is not None
)


@pytest.mark.skipif(not NVRTC, reason="cuda-bindings (NVRTC) not installed: pip install .[dev]")
@pytest.mark.parametrize("arch", [(8, 7), (9, 0)])
def test_kernels_compile_with_nvrtc_and_are_cached(tmp_path, arch):
    """Both sources build to a cubin with NVRTC (no GPU here); a second start reads the cache."""
    from edgeyolo.gpu.nvrtc import compile_kernel, nvrtc_version

    for name, kernels in (
        ("letterbox", (b"letterbox_f32", b"letterbox_f16")),
        ("decode", (b"decode_f32", b"decode_f16")),
    ):
        image = compile_kernel(name, arch, tmp_path)
        assert image[:4] == b"\x7fELF", "not a cubin"
        for k in kernels:
            assert k in image
        cached = list(tmp_path.glob(f"{name}-sm_{arch[0]}{arch[1]}-*.cubin"))
        assert len(cached) == 1, cached
        major, minor = nvrtc_version()
        assert f"nvrtc{major}.{minor}" in cached[0].name
        stamp = cached[0].stat().st_mtime_ns
        assert compile_kernel(name, arch, tmp_path) == image
        assert cached[0].stat().st_mtime_ns == stamp


@pytest.mark.skipif(not NVRTC, reason="cuda-bindings (NVRTC) not installed: pip install .[dev]")
def test_compile_errors_carry_the_nvrtc_log(tmp_path, monkeypatch):
    """A broken source fails with NVRTC's own message, naming the file."""
    from edgeyolo.gpu import nvrtc

    monkeypatch.setattr(nvrtc, "kernel_source", lambda _name: "__global__ void k() { nope; }")
    with pytest.raises(nvrtc.NvrtcError, match=r"broken\.cu.*nope"):
        nvrtc.compile_kernel("broken", (9, 0), tmp_path)


@pytest.mark.parametrize("frame", ["f000", "f120"])
@pytest.mark.parametrize("model", ["det", "pose"])
@pytest.mark.parametrize("conf", [0.25, 0.05, 0.001])
@pytest.mark.parametrize("iou", [0.7, 0.45])
def test_nms_kernel_model_equals_the_cpu_decode(model, frame, conf, iou):
    """The NMS kernel's arithmetic (rank sort, pairwise IoU, greedy scan, letterbox inverse)
    on shuffled kernel records gives the CPU decode's detections bit for bit, class filter,
    ties and the max_det cap included."""
    from edgeyolo.gpu.nms import reference_nms, to_detections

    raw = recorded(model, frame)
    nc, kpt = (80, None) if model == "det" else (1, (17, 3))
    nk = 0 if kpt is None else 51
    rng = np.random.default_rng(1)
    filters = [None, np.array([0, 2, 7], np.intp)] if model == "det" else [None]
    for lb in (Letterbox.fit(960, 540, 640, 640), Letterbox.fit(1280, 720, 640, 640)):
        for classes in filters:
            for max_det in (300, 3):
                th = Thresholds(conf, iou, max_det, classes)
                rec = reference_records(raw, conf, nc, nk, classes)
                rec = rng.permutation(rec)
                if len(rec) > 4:  # a tie in score between two candidates
                    rec[1, 2] = rec[0, 2]
                rows = reference_nms(rec, lb, iou, max_det, nc, kpt)
                want = decode(to_candidates(rec, nk), lb, th, nc, kpt)
                same(to_detections(rows, kpt), want)
