"""`edgeyolo quantize`: real demo models calibrated on real video, checked against FP32."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from conftest import DEMO_VIDEO, DET, POSE, read_frame, shared_media
from edgeyolo.engines.model import QUANT_METADATA_KEY as METADATA_KEY
from edgeyolo.errors import ModelError, SourceError
from edgeyolo.postprocess import Detections, Thresholds, decode
from edgeyolo.preprocess import Preprocessor
from edgeyolo.quantize import (
    QuantizeError,
    calibration_images,
    default_output_path,
    head_output_convs,
    quantize_model,
)
from helpers import run_cli

CALIB_FRAMES = 8


@pytest.fixture(scope="module")
def det_int8_cpu(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("int8") / "det-int8-cpu.onnx"
    result = quantize_model(DET, shared_media("vtest.avi"), out, target="cpu", frames=CALIB_FRAMES)
    assert result.output == out
    assert result.frames == CALIB_FRAMES
    return out


def run_model(path: Path, frame: np.ndarray) -> tuple[np.ndarray, Preprocessor]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    pre = Preprocessor(640, 640)
    blob = np.empty((1, 3, 640, 640), np.float32)
    pre(frame, blob)
    raw: np.ndarray = session.run(None, {session.get_inputs()[0].name: blob})[0]
    return raw, pre


def detections(path: Path, frame: np.ndarray) -> Detections:
    raw, pre = run_model(path, frame)
    lb = pre.letterbox(frame.shape[1], frame.shape[0])
    return decode(raw, lb, Thresholds(conf=0.25, iou=0.7), num_classes=80)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(br - tl, 0, None).prod(axis=2)
    area_a = (a[:, 2:] - a[:, :2]).prod(axis=1)
    area_b = (b[:, 2:] - b[:, :2]).prod(axis=1)
    return np.asarray(inter / (area_a[:, None] + area_b[None, :] - inter))


def op_counts(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in onnx.load(str(path)).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


@pytest.mark.slow
def test_quantized_detector_is_qdq_and_loads(det_int8_cpu: Path) -> None:
    """The output is a Q/DQ model that ONNX Runtime loads, with only Conv layers quantized."""
    ort.InferenceSession(str(det_int8_cpu), providers=["CPUExecutionProvider"])
    counts = op_counts(det_int8_cpu)
    assert counts.get("QuantizeLinear", 0) > 20
    assert counts.get("DequantizeLinear", 0) > 20
    model = onnx.load(str(det_int8_cpu))
    producers = {out: node for node in model.graph.node for out in node.output}
    head = set(head_output_convs(onnx.load(str(DET))))
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        weight_from = producers.get(node.input[1])
        quantized = weight_from is not None and weight_from.op_type == "DequantizeLinear"
        # Head prediction convs stay float; every other conv has int8 weights.
        assert quantized == (node.name not in head), node.name
    # U8S8: activations quantized as uint8, weights as int8.
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    zero_point_types = {
        inits[n.input[2]].dtype for n in model.graph.node if n.op_type == "QuantizeLinear"
    }
    assert zero_point_types == {np.dtype(np.uint8)}


@pytest.mark.slow
def test_quantized_detector_keeps_metadata(det_int8_cpu: Path) -> None:
    """task, names, imgsz are copied unchanged; our key records how the file was made."""
    original = ort.InferenceSession(str(DET), providers=["CPUExecutionProvider"])
    quantized = ort.InferenceSession(str(det_int8_cpu), providers=["CPUExecutionProvider"])
    before = original.get_modelmeta().custom_metadata_map
    after = quantized.get_modelmeta().custom_metadata_map
    assert {k: v for k, v in after.items() if k != METADATA_KEY} == before
    assert after["task"] == "detect"
    assert ast.literal_eval(after["names"])[0] == "person"
    info = json.loads(after[METADATA_KEY])
    assert info["target"] == "cpu"
    assert info["calibration"]["frames"] == CALIB_FRAMES
    assert info["calibration"]["source"] == "vtest.avi"
    assert info["op_types"] == ["Conv"]


@pytest.mark.slow
def test_quantized_detector_agrees_with_fp32_on_demo_frame(det_int8_cpu: Path) -> None:
    """On a real demo frame INT8 finds the same objects as FP32 (count and overlap)."""
    frame = read_frame(DEMO_VIDEO, 100)
    fp32 = detections(DET, frame)
    int8 = detections(det_int8_cpu, frame)
    assert len(fp32) >= 3, "the demo frame should show several objects"
    assert abs(len(int8) - len(fp32)) <= max(1, len(fp32) // 5)
    ious = box_iou(fp32.boxes, int8.boxes)
    ious[fp32.class_ids[:, None] != int8.class_ids[None, :]] = 0
    best = ious.max(axis=1)
    assert (best >= 0.5).mean() >= 0.8
    assert float(best[best >= 0.5].mean()) >= 0.85
    # Raw candidates above threshold survive quantization (all-op quantization kills them).
    raw32, _ = run_model(DET, frame)
    raw8, _ = run_model(det_int8_cpu, frame)
    n32 = int((raw32[0, 4:].max(axis=0) > 0.25).sum())
    n8 = int((raw8[0, 4:].max(axis=0) > 0.25).sum())
    assert n32 > 0
    assert 0.6 * n32 <= n8 <= 1.5 * n32


@pytest.mark.slow
def test_tensorrt_target_is_symmetric_int8(tmp_path: Path) -> None:
    """--target tensorrt writes signed int8 Q/DQ with zero points of 0 (TensorRT's rule)."""
    out = tmp_path / "pose-int8-trt.onnx"
    quantize_model(POSE, shared_media("vtest.avi"), out, target="tensorrt", frames=2)
    model = onnx.load(str(out))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    zero_points = [inits[n.input[2]] for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert zero_points
    assert {z.dtype for z in zero_points} == {np.dtype(np.int8)}
    assert all(not z.any() for z in zero_points)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["task"] == "pose"
    assert meta["kpt_shape"] == "[17, 3]"
    assert json.loads(meta[METADATA_KEY])["target"] == "tensorrt"


def test_head_convs_found_structurally() -> None:
    """Class, box (behind DFL), keypoint and DFL convs of the head are the excluded ones."""
    det = head_output_convs(onnx.load(str(DET)))
    pose = head_output_convs(onnx.load(str(POSE)))
    assert len(det) == 7  # 3 box + 3 class + DFL
    assert len(pose) == 10  # + 3 keypoint
    assert any("dfl" in name for name in det)
    assert {n for n in pose if "cv4" in n}


def test_images_sampled_evenly_from_directory(tmp_path: Path) -> None:
    """A directory's images are read in name order and sampled evenly, first and last kept."""
    for i, name in enumerate(["a.png", "b.jpg", "c.png", "notes.txt"]):
        if name.endswith(".txt"):
            (tmp_path / name).write_text("not an image")
            continue
        cv2.imwrite(str(tmp_path / name), np.full((32, 48, 3), 50 * (i + 1), np.uint8))
    images = list(calibration_images(tmp_path, 2))
    assert [int(img[0, 0, 0]) for img in images] == [50, 150]
    assert all(img.shape == (32, 48, 3) for img in images)


def test_grey_image_is_converted(tmp_path: Path) -> None:
    """A single-channel calibration image becomes 3-channel BGR like any source frame."""
    path = tmp_path / "grey.png"
    cv2.imwrite(str(path), np.full((20, 30), 77, np.uint8))
    (image,) = calibration_images(path, 5)
    assert image.shape == (20, 30, 3)


@pytest.mark.slow
def test_video_frames_sampled_across_whole_video() -> None:
    """Frames come from across the video, not its first seconds."""
    frames = list(calibration_images(shared_media("vtest.avi"), 3))
    assert len(frames) == 3
    first = read_frame(shared_media("vtest.avi"), 0)
    assert np.array_equal(frames[0], first)
    assert not np.array_equal(frames[1], frames[0])
    assert not np.array_equal(frames[2], frames[1])


def test_missing_model_names_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.onnx"
    with pytest.raises(ModelError, match=str(missing)):
        quantize_model(missing, tmp_path)


def test_non_onnx_model_names_path(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.onnx"
    bogus.write_text("this is not a protobuf\n" * 10)
    with pytest.raises(ModelError, match=str(bogus)):
        quantize_model(bogus, tmp_path)


def test_empty_calibration_directory_names_path(tmp_path: Path) -> None:
    empty = tmp_path / "calib"
    empty.mkdir()
    with pytest.raises(SourceError, match=str(empty)):
        quantize_model(DET, empty, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_missing_calibration_source_names_path(tmp_path: Path) -> None:
    missing = tmp_path / "frames"
    with pytest.raises(SourceError, match=str(missing)):
        quantize_model(DET, missing, tmp_path / "out.onnx")


def test_unreadable_video_names_path(tmp_path: Path) -> None:
    video = tmp_path / "broken.mp4"
    video.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(SourceError, match=str(video)):
        quantize_model(DET, video, tmp_path / "out.onnx")


def test_bad_target_and_frame_count_rejected(tmp_path: Path) -> None:
    with pytest.raises(QuantizeError, match="'gpu'"):
        quantize_model(DET, tmp_path, target="gpu")  # type: ignore[arg-type]
    with pytest.raises(QuantizeError, match="-1"):
        quantize_model(DET, tmp_path, frames=-1)


def test_default_output_next_to_model() -> None:
    assert default_output_path(Path("/m/yolo.onnx"), "tensorrt") == Path(
        "/m/yolo-int8-tensorrt.onnx"
    )


def test_cli_reports_missing_model(tmp_path: Path) -> None:
    """The subcommand is registered and turns errors into a message and exit code 2."""
    # A subprocess: the CLI configures logging globally, which must not leak into other tests.
    missing = tmp_path / "missing.onnx"
    proc = run_cli("quantize", str(missing), "--calib", str(tmp_path), timeout=60)
    assert proc.returncode == 2
    assert str(missing) in proc.stderr
    assert proc.stdout == ""


@pytest.mark.slow
def test_cli_writes_default_output(tmp_path: Path) -> None:
    """`edgeyolo quantize` writes MODEL-int8-<target>.onnx beside the model, prints its path."""
    model = tmp_path / "det.onnx"
    model.write_bytes(DET.read_bytes())
    images = tmp_path / "calib"
    images.mkdir()
    cv2.imwrite(str(images / "f.jpg"), read_frame(shared_media("vtest.avi"), 300))
    proc = run_cli("quantize", str(model), "--calib", str(images), "--frames", "1", timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "det-int8-cpu.onnx"
    assert proc.stdout.strip() == str(out)
    assert out.is_file()
    assert "quantize.done" in proc.stderr
