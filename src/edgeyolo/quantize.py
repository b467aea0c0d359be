"""Static INT8 quantization of an Ultralytics YOLO ONNX model into a Q/DQ ONNX model.

Calibration frames are letterboxed by the same ``Preprocessor`` that inference uses, so the
activation ranges are measured on exactly the tensors the model will see. Only ``Conv`` is
quantized: YOLO's final ``Concat`` mixes pixel boxes (0-640) and 0-1 scores in one tensor,
and quantizing it (or the decode arithmetic feeding it) leaves no candidate above threshold.

Two targets, two files, because their Q/DQ flavours are incompatible in practice:

- ``cpu``: unsigned asymmetric activations and signed per-channel weights (U8S8), the path
  ONNX Runtime's CPU kernels are fastest on.
- ``tensorrt``: signed symmetric activations and weights, per-channel weights (S8S8), which
  is what TensorRT's explicit quantization accepts. On ORT's CPU it runs, but slower than FP32.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import onnx
import structlog

from edgeyolo.engines.model import QUANT_METADATA_KEY, sha256_file
from edgeyolo.errors import EdgeYoloError, ModelError, SourceError
from edgeyolo.preprocess import Preprocessor
from edgeyolo.sources.files import iter_frames

Target = Literal["cpu", "tensorrt"]
TARGETS: tuple[Target, ...] = ("cpu", "tensorrt")
DEFAULT_FRAMES = 64
DEFAULT_INPUT_SIZE = 640


class QuantizeError(EdgeYoloError):
    """Quantization could not run: bad model, unusable calibration source, bad arguments."""


@dataclass(frozen=True, slots=True)
class QuantizeResult:
    """What ``quantize_model`` wrote."""

    output: Path
    target: Target
    frames: int
    excluded_nodes: tuple[str, ...]
    seconds: float
    size_bytes: int


def default_output_path(model: Path, target: Target) -> Path:
    """``MODEL-int8-<target>.onnx`` next to ``model``."""
    return model.with_name(f"{model.stem}-int8-{target}.onnx")


def load_model(path: Path) -> onnx.ModelProto:
    """Load an ONNX model, turning a missing or non-ONNX file into a ``ModelError``."""
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist or is not a file")
    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise ModelError(f"model file {path} is not a readable ONNX model: {exc}") from exc
    if not model.graph.node or not model.graph.input:
        raise ModelError(f"model file {path} is not an ONNX model (no graph nodes or inputs)")
    return model


def model_input(model: onnx.ModelProto, path: Path) -> tuple[str, int, int]:
    """The model's image input: name, height and width (``imgsz`` metadata if dynamic)."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        names = [i.name for i in inputs]
        raise ModelError(f"model {path} has inputs {names}; expected one image input")
    inp = inputs[0]
    dims = inp.type.tensor_type.shape.dim
    if len(dims) != 4:
        raise ModelError(f"model {path} input {inp.name!r} has rank {len(dims)}; expected NCHW")
    channels = dims[1].dim_value
    if channels not in (0, 3):
        raise ModelError(f"model {path} input {inp.name!r} has {channels} channels; expected 3")
    h, w = dims[2].dim_value, dims[3].dim_value
    if h <= 0 or w <= 0:
        # Dynamic export: use the size the model was trained/exported at.
        h, w = _imgsz_from_metadata(model)
    return inp.name, h, w


def _imgsz_from_metadata(model: onnx.ModelProto) -> tuple[int, int]:
    meta = {p.key: p.value for p in model.metadata_props}
    raw = meta.get("imgsz", "")
    try:
        values = [int(v) for v in raw.strip("[]() ").split(",") if v.strip()]
    except ValueError:
        values = []
    if len(values) == 2:
        return values[0], values[1]
    if len(values) == 1:
        return values[0], values[0]
    return DEFAULT_INPUT_SIZE, DEFAULT_INPUT_SIZE


def head_output_convs(model: onnx.ModelProto) -> list[str]:
    """Names of the last ``Conv`` nodes on every path to a graph output.

    In a YOLO head these are the class (and keypoint) prediction convs, the DFL conv and the
    box-regression convs behind it: their outputs feed the decode arithmetic directly, so
    quantization error there lands unfiltered in boxes and scores, and a calibration set with
    few objects clips the class logits (scores pile up at sigmoid(0) = 0.5). Found
    structurally, not by Ultralytics' node names, so it works for YOLOv8 and YOLO11 exports.
    """
    producers = {out: node for node in model.graph.node for out in node.output}
    found: list[str] = []
    seen: set[str] = set()
    stack = [o.name for o in model.graph.output]
    while stack:
        tensor = stack.pop()
        node = producers.get(tensor)
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type == "Conv":
            found.append(node.name)
            source = producers.get(node.input[0])
            # The DFL "conv" is a fixed integral over a softmax of the box-regression logits:
            # keep walking through it so the convs producing those logits count as head too.
            if source is None or source.op_type != "Softmax":
                continue
            stack.append(node.input[0])
            continue
        stack.extend(node.input)
    return sorted(found)


def calibration_images(source: Path, count: int) -> Iterator[npt.NDArray[np.uint8]]:
    """Up to ``count`` BGR frames from a directory of images, one image, or a video.

    Images of a directory (sorted by name) and frames of a video are sampled evenly across the
    whole source, so the calibration sees its variety rather than its first seconds.
    """
    if count <= 0:
        raise QuantizeError(f"number of calibration frames must be positive, got {count}")
    return iter_frames(source, count, spread=True)


class _FrameReader:
    """ONNX Runtime ``CalibrationDataReader``: letterboxed frames, produced lazily.

    Lazily, so 64 frames of 1x3x640x640 float32 (300 MB) are never held at once.
    """

    def __init__(
        self,
        source: Path,
        count: int,
        input_name: str,
        height: int,
        width: int,
        log_every: int,
    ) -> None:
        self._images = calibration_images(source, count)
        self._input_name = input_name
        self._pre = Preprocessor(height, width)
        # One buffer, reused: ONNX Runtime copies its inputs, and the Preprocessor remembers
        # which buffers hold the padding by address, so a fresh np.empty array that lands on
        # a recycled address would keep garbage in its padding.
        self._blob = np.empty((1, 3, height, width), np.float32)
        self._log = structlog.get_logger().bind(source=str(source))
        self._count = count
        self._log_every = max(1, log_every)
        self._started = time.monotonic()
        self.frames = 0

    def get_next(self) -> dict[str, npt.NDArray[np.float32]] | None:
        image = next(self._images, None)
        if image is None:
            return None
        self._pre(image, self._blob)
        self.frames += 1
        if self.frames % self._log_every == 0 or self.frames == self._count:
            self._log.info(
                "quantize.calibration",
                frames=self.frames,
                of=self._count,
                elapsed_s=round(time.monotonic() - self._started, 1),
            )
        return {self._input_name: self._blob}

    # ORT's CalibrationDataReader is an ABC with a structural subclass hook on get_next;
    # the iterator protocol is what its base class adds on top.
    def __iter__(self) -> Iterator[dict[str, npt.NDArray[np.float32]]]:
        while (item := self.get_next()) is not None:
            yield item

    def __next__(self) -> dict[str, npt.NDArray[np.float32]]:
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


class _DropPreprocessHint(logging.Filter):
    """Drops onnxruntime's "Please consider (to run) pre-processing" warning.

    For Ultralytics exports (onnxslim-simplified, static shapes) ``quant_pre_process`` changes
    nothing: measured on both demo models, the quantized outputs were identical with and
    without it. The hint would only send users looking for a step that does not matter.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def _target_options(target: Target) -> tuple[Any, Any, bool, dict[str, Any]]:
    from onnxruntime.quantization import QuantType  # noqa: PLC0415 - heavy, CLI-only import

    if target == "cpu":
        # U8S8: ORT's CPU integer GEMM kernels are built around u8 activations x s8 weights.
        return QuantType.QUInt8, QuantType.QInt8, True, {}
    # TensorRT's explicit quantization: int8 symmetric (zero point 0) for both. The bias stays
    # float: TensorRT's ONNX parser rejects a DequantizeLinear of int32 (onnx-tensorrt#850,
    # onnxruntime#17738), and it folds the bias into its int8 kernels itself.
    return (
        QuantType.QInt8,
        QuantType.QInt8,
        True,
        {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
    )


def quantize_model(
    model_path: Path,
    calib: Path,
    output: Path | None = None,
    *,
    target: Target = "cpu",
    frames: int = DEFAULT_FRAMES,
    exclude_head: bool = True,
    exclude_nodes: Sequence[str] = (),
    log_every: int = 8,
) -> QuantizeResult:
    """Write a statically quantized Q/DQ copy of ``model_path``, calibrated on ``calib``.

    ``calib`` is a directory of images, one image, or a video; ``frames`` frames are sampled
    evenly from it and letterboxed like inference does. ``exclude_head`` keeps the final
    prediction convs of the detection head in float (see ``head_output_convs``). The original
    ``metadata_props`` (task, names, kpt_shape, imgsz, ...) are copied unchanged and a
    ``edgeyolo_quantization`` entry (JSON) records how the file was made.
    """
    if target not in TARGETS:
        raise QuantizeError(f"quantization target {target!r} is not one of {', '.join(TARGETS)}")
    if frames <= 0:
        raise QuantizeError(f"number of calibration frames must be positive, got {frames}")
    model_path = Path(model_path)
    calib = Path(calib)
    output = Path(output) if output is not None else default_output_path(model_path, target)
    model = load_model(model_path)
    input_name, height, width = model_input(model, model_path)
    if not calib.exists():
        raise SourceError(f"calibration source {calib} does not exist")
    if output.resolve() == model_path.resolve():
        raise QuantizeError(f"output {output} would overwrite the model being quantized")

    from onnxruntime.quantization import (  # noqa: PLC0415 - heavy, CLI-only import
        CalibrationMethod,
        QuantFormat,
        quantize_static,
    )

    excluded = tuple(head_output_convs(model)) if exclude_head else ()
    excluded += tuple(n for n in exclude_nodes if n not in excluded)
    activation_type, weight_type, per_channel, extra = _target_options(target)
    log = structlog.get_logger().bind(model=str(model_path), target=target)
    log.info(
        "quantize.start",
        calib=str(calib),
        frames=frames,
        input=[height, width],
        excluded=len(excluded),
    )
    started = time.monotonic()
    reader = _FrameReader(calib, frames, input_name, height, width, log_every)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgeyolo-quantize-") as tmp:
        # The calibrator writes an augmented copy of the model; keep it out of the cwd.
        tmp_out = Path(tmp) / "quantized.onnx"
        no_preprocess_hint = _DropPreprocessHint()
        logging.getLogger().addFilter(no_preprocess_hint)
        try:
            quantize_static(
                model_input=str(model_path),
                model_output=str(tmp_out),
                calibration_data_reader=reader,
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=["Conv"],
                per_channel=per_channel,
                activation_type=activation_type,
                weight_type=weight_type,
                nodes_to_exclude=list(excluded),
                calibrate_method=CalibrationMethod.MinMax,
                extra_options=extra,
            )
        except EdgeYoloError:
            raise
        except Exception as exc:
            if reader.frames == 0:
                raise SourceError(f"calibration source {calib} gave no frames") from exc
            raise QuantizeError(f"quantizing {model_path} failed: {exc}") from exc
        finally:
            logging.getLogger().removeFilter(no_preprocess_hint)
        if reader.frames == 0:
            raise SourceError(f"calibration source {calib} gave no frames")
        if reader.frames < frames:
            # A short video, a small directory, or a container that overstates its length.
            log.warning("quantize.fewer_frames", wanted=frames, got=reader.frames)
        quantized = onnx.load(str(tmp_out))
        _write_metadata(
            quantized,
            model,
            {
                "target": target,
                "format": "QDQ",
                "activations": "int8 symmetric" if target == "tensorrt" else "uint8 asymmetric",
                "weights": "int8 symmetric per-channel",
                "bias": "float" if target == "tensorrt" else "int32",
                "op_types": ["Conv"],
                "excluded_nodes": list(excluded),
                "calibration": {
                    "source": calib.name,
                    "frames": reader.frames,
                    "method": "MinMax",
                    "input": [height, width],
                },
                "source_model": model_path.name,
                "source_sha256": sha256_file(model_path),
                "onnxruntime": _ort_version(),
            },
        )
        onnx.save(quantized, str(output))
    seconds = time.monotonic() - started
    result = QuantizeResult(
        output=output,
        target=target,
        frames=reader.frames,
        excluded_nodes=excluded,
        seconds=seconds,
        size_bytes=output.stat().st_size,
    )
    log.info(
        "quantize.done",
        output=str(output),
        frames=reader.frames,
        seconds=round(seconds, 1),
        size_bytes=result.size_bytes,
    )
    return result


def _ort_version() -> str:
    import onnxruntime  # noqa: PLC0415 - heavy, CLI-only import

    return str(onnxruntime.__version__)


def _write_metadata(
    quantized: onnx.ModelProto, original: onnx.ModelProto, info: dict[str, Any]
) -> None:
    """Original metadata unchanged, in order, plus our own key (replaced if re-quantizing)."""
    del quantized.metadata_props[:]
    for prop in original.metadata_props:
        if prop.key != QUANT_METADATA_KEY:
            quantized.metadata_props.add(key=prop.key, value=prop.value)
    quantized.metadata_props.add(key=QUANT_METADATA_KEY, value=json.dumps(info, sort_keys=True))
