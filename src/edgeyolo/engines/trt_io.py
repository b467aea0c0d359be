"""What a TensorRT engine file holds: its I/O tensors by name, the metadata header, ModelInfo.

``tensorrt`` is imported inside functions only: this module imports anywhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from edgeyolo.engines.base import ModelInfo, TensorSpec
from edgeyolo.engines.model import info_from_metadata
from edgeyolo.errors import ModelError

if TYPE_CHECKING:
    import tensorrt as trt


# TensorRT DataType member names -> numpy; I/O of YOLO engines is FP32 or FP16.
_NUMPY_TYPES: dict[str, Any] = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT8": np.int8,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "BOOL": np.bool_,
}
_FLOAT_IO = (np.dtype(np.float32), np.dtype(np.float16))
# Ultralytics writes its metadata in front of the engine: 4-byte little-endian length + JSON.
_MAX_HEADER = 1 << 20


@dataclass(frozen=True, slots=True)
class IOTensor:
    """One engine I/O tensor as TensorRT reports it (shape may hold -1 for dynamic dims)."""

    name: str
    is_input: bool
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    format: str


def _name(member: Any) -> str:
    return str(getattr(member, "name", member)).rsplit(".", 1)[-1]


def describe_io(engine: trt.ICudaEngine, path: Path) -> list[IOTensor]:
    """Every I/O tensor of ``engine``, by name, with errors that name the file."""
    import tensorrt as trt  # noqa: PLC0415 - lazily: the package must import without TensorRT

    tensors = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = engine.get_tensor_mode(name)
        dt = _name(engine.get_tensor_dtype(name))
        if dt not in _NUMPY_TYPES:
            raise ModelError(f"{path}: I/O tensor '{name}' has TensorRT type {dt}, not supported")
        fmt = _name(engine.get_tensor_format(name))
        if fmt != "LINEAR":
            raise ModelError(
                f"{path}: I/O tensor '{name}' uses the {fmt} memory format; rebuild the engine "
                "with linear (default) I/O formats"
            )
        dims = engine.get_tensor_shape(name)
        tensors.append(
            IOTensor(
                name=name,
                is_input=mode == trt.TensorIOMode.INPUT,
                shape=tuple(int(dims[d]) for d in range(len(dims))),
                dtype=np.dtype(_NUMPY_TYPES[dt]),
                format=fmt,
            )
        )
    return tensors


def engine_model_info(
    path: Path,
    io: list[IOTensor],
    metadata: dict[str, str],
    output_shape: tuple[int, ...] | None = None,
    batch: int = 1,
) -> ModelInfo:
    """The ``ModelInfo`` of an engine: one float image input, one float output.

    A dynamic batch dimension is fixed to ``batch``; ``output_shape`` is the output's shape
    once the input shape is set (from the execution context), when the engine's is dynamic.
    """
    inputs = [t for t in io if t.is_input]
    outputs = [t for t in io if not t.is_input]
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(
            f"{path}: expected 1 input and 1 output tensor, found inputs "
            f"{[t.name for t in inputs]} and outputs {[t.name for t in outputs]} "
            "(export the ONNX with nms=False, end2end=False)"
        )
    inp, out = inputs[0], outputs[0]
    for t in (inp, out):
        if t.dtype not in _FLOAT_IO:
            raise ModelError(f"{path}: tensor '{t.name}' is {t.dtype}; expected float32 or float16")
    in_shape = inp.shape
    if in_shape and in_shape[0] == -1:
        in_shape = (batch, *in_shape[1:])
    if batch != 1 or in_shape[:1] != (1,):
        raise ModelError(f"{path}: input '{inp.name}' has batch {in_shape[:1]}; edgeyolo runs 1")
    out_shape = output_shape or out.shape
    if out_shape and out_shape[0] == -1:
        out_shape = (batch, *out_shape[1:])
    if any(d < 0 for d in out_shape):
        raise ModelError(f"{path}: output '{out.name}' keeps a dynamic shape {out_shape}")
    info = info_from_metadata(
        path,
        metadata,
        TensorSpec(inp.name, in_shape, inp.dtype),
        # What infer returns: float32 whatever the engine's output type.
        TensorSpec(out.name, out_shape, np.dtype(np.float32)),
    )
    if not metadata:
        structlog.get_logger().info(
            "engine without metadata: class names come from the config's labels",
            engine=str(path),
        )
    return info


def read_engine_file(path: Path) -> tuple[bytes, dict[str, str]]:
    """The serialized engine, and the Ultralytics metadata header if the file has one."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the engine file: {exc}") from exc
    if len(data) > 4:
        n = int.from_bytes(data[:4], "little")
        if 2 <= n < min(_MAX_HEADER, len(data) - 4) and data[4:5] == b"{":
            try:
                meta = json.loads(data[4 : 4 + n])
            except ValueError:
                meta = None
            if isinstance(meta, dict):
                return data[4 + n :], _as_metadata(meta)
    return data, {}


def _as_metadata(meta: dict[str, Any]) -> dict[str, str]:
    """Ultralytics' JSON header -> the string form ONNX metadata_props have."""
    out = {}
    for k, v in meta.items():
        out[str(k)] = v if isinstance(v, str) else repr(v)
    return out
