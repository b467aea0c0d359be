"""What a model file says about itself, and checks of that against its config.

Shared by every backend: an ONNX file's Ultralytics metadata, or an engine's I/O tensors,
become a ``ModelInfo``; ``check_model`` compares it with the ``ModelConfig`` and resolves
the labels, with errors that name the file and the config key. ``inspect_onnx`` reads what
the engine cache and the builder need (sha256, precision, Q/DQ nodes, metadata).
"""

from __future__ import annotations

import ast
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeyolo.engines.base import ModelInfo, Task, TensorSpec
from edgeyolo.errors import ModelError

if TYPE_CHECKING:
    from edgeyolo.config import ModelConfig

QUANT_METADATA_KEY = "edgeyolo_quantization"  # written by edgeyolo.quantize


def _literal(meta: dict[str, str], key: str, path: Path) -> Any:
    text = meta.get(key)
    if text is None:
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError) as exc:
        raise ModelError(f"{path}: metadata '{key}' is not readable: {text[:80]!r}") from exc


def info_from_metadata(
    path: Path,
    meta: dict[str, str],
    inp: TensorSpec,
    out: TensorSpec,
) -> ModelInfo:
    """Build a ``ModelInfo`` from Ultralytics metadata (may be absent) and the I/O specs."""
    if len(inp.shape) != 4 or inp.shape[1] != 3:
        raise ModelError(f"{path}: input '{inp.name}' has shape {inp.shape}; expected 1x3xHxW")
    # A symbolic batch (-1) runs any number of frames per call; the specs describe one frame.
    max_batch = None if inp.shape[0] == -1 else 1
    if inp.shape[0] not in {-1, 1}:
        raise ModelError(
            f"{path}: input '{inp.name}' has a static batch of {inp.shape[0]} {inp.shape}; "
            "export with batch=1, or dynamic=True for batching cameras"
        )
    inp = TensorSpec(inp.name, (1, *inp.shape[1:]), inp.dtype)
    if out.shape[:1] == (-1,):
        out = TensorSpec(out.name, (1, *out.shape[1:]), out.dtype)
    if any(not isinstance(d, int) or d <= 0 for d in inp.shape[2:]):
        raise ModelError(
            f"{path}: input '{inp.name}' has a dynamic image size {inp.shape}; export the model "
            "with a fixed imgsz (dynamic=False)"
        )
    if len(out.shape) != 3 or not isinstance(out.shape[1], int):
        raise ModelError(
            f"{path}: output '{out.name}' has shape {out.shape}; expected 1 x (4+classes[+kpts]) "
            "x anchors (an Ultralytics export with nms=False)"
        )
    names_raw = _literal(meta, "names", path)
    names: dict[int, str] = {}
    if isinstance(names_raw, dict):
        names = {int(k): str(v) for k, v in names_raw.items()}
    elif isinstance(names_raw, list):
        names = dict(enumerate(str(v) for v in names_raw))
    kpt = _literal(meta, "kpt_shape", path)
    kpt_shape = (
        (int(kpt[0]), int(kpt[1])) if isinstance(kpt, list | tuple) and len(kpt) == 2 else None
    )
    task_meta = meta.get("task")
    task: Task
    if task_meta in {"detect", "pose"}:
        task = task_meta  # type: ignore[assignment]
    elif task_meta is not None:
        raise ModelError(
            f"{path}: the model's task is '{task_meta}'; edgeyolo runs 'detect' and 'pose' models"
        )
    else:
        task = "pose" if kpt_shape is not None else "detect"
    if task == "pose" and kpt_shape is None:
        raise ModelError(f"{path}: a pose model without 'kpt_shape' metadata")
    info = ModelInfo(
        path, task, inp, out, names, kpt_shape if task == "pose" else None, max_batch=max_batch
    )
    if info.num_classes < 1:
        raise ModelError(
            f"{path}: output has {out.shape[1]} rows, too few for 4 box rows, classes"
            + (f" and {kpt_shape[0]}x{kpt_shape[1]} keypoint values" if kpt_shape else "")
        )
    if names and len(names) != info.num_classes:
        raise ModelError(
            f"{path}: metadata names {len(names)} classes but the output has rows for "
            f"{info.num_classes}"
        )
    return info


def read_labels(model: ModelConfig, info: ModelInfo) -> list[str]:
    """The class names for ``model``: from the config, a labels file, or the model."""
    n = info.num_classes
    if isinstance(model.labels, list):
        labels = list(model.labels)
        where = f"models[{model.name}].labels"
    elif isinstance(model.labels, Path):
        try:
            lines = model.labels.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ModelError(f"{model.labels}: cannot read labels file: {exc}") from exc
        labels = [ln.strip() for ln in lines if ln.strip()]
        where = str(model.labels)
    elif info.names:
        return [info.names.get(i, str(i)) for i in range(n)]
    else:
        return [str(i) for i in range(n)]
    if len(labels) != n:
        raise ModelError(
            f"{where}: {len(labels)} labels, but model {info.path.name} has {n} classes"
        )
    return labels


def check_batch(model: ModelConfig, info: ModelInfo) -> None:
    """``model.max_batch`` frames must fit one call of the model ``info`` describes."""
    limit = info.max_batch
    if limit is None or model.max_batch <= limit:
        return
    where = str(model.path) if model.path == info.path else f"{model.path} ({info.path})"
    shape = "x".join(str(d) for d in info.input.shape)
    what = (
        f"has a static batch (input '{info.input.name}' is {shape}): one frame per call"
        if limit == 1
        else f"takes at most {limit} frames per call (input '{info.input.name}', {shape} each)"
    )
    raise ModelError(
        f"models[{model.name}].max_batch is {model.max_batch}, but {where} {what}. Use a "
        f"model exported with a dynamic batch (ONNX dynamic=True, e.g. "
        f"edgeyolo-demo-det-dynbatch.onnx) or set max_batch: {limit}"
    )


def check_model(model: ModelConfig, info: ModelInfo) -> tuple[list[str], np.ndarray | None]:
    """Check ``info`` against ``model``; return the labels and the class filter as ids."""
    if info.task != model.task:
        raise ModelError(
            f"models[{model.name}].task is '{model.task}', but {info.path.name} is a "
            f"'{info.task}' model; set task: {info.task}"
        )
    check_batch(model, info)
    labels = read_labels(model, info)
    if model.classes is None:
        return labels, None
    ids = []
    for c in model.classes:
        if isinstance(c, int):
            if not 0 <= c < len(labels):
                raise ModelError(
                    f"models[{model.name}].classes: class id {c} is outside 0..{len(labels) - 1}"
                )
            ids.append(c)
        elif c in labels:
            ids.append(labels.index(c))
        else:
            raise ModelError(
                f"models[{model.name}].classes: '{c}' is not a label of {info.path.name} "
                f"(labels: {', '.join(labels[:10])}{', ...' if len(labels) > 10 else ''})"
            )
    return labels, np.asarray(sorted(set(ids)), np.intp)


# --- what the ONNX file is ------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB pieces."""
    h = hashlib.sha256()
    try:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the model file: {exc}") from exc
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class OnnxFacts:
    """What the build needs to know about an ONNX file."""

    path: Path
    sha256: str
    qdq: bool  # has QuantizeLinear/DequantizeLinear nodes (explicit INT8)
    fp16: bool  # weights (and usually I/O) are FP16
    quantized_for: str | None  # edgeyolo quantize's target ("tensorrt", "cpu") if known
    metadata: dict[str, str] = field(default_factory=dict)


def inspect_onnx(path: Path) -> OnnxFacts:
    """Read the ONNX file's precision, Q/DQ nodes and metadata (not its external data)."""
    import onnx  # noqa: PLC0415 - heavy, and only needed when building

    if not path.is_file():
        raise ModelError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelError(f"{path}: not a readable ONNX model: {exc}") from exc
    ops = {n.op_type for n in model.graph.node}
    qdq = bool(ops & {"QuantizeLinear", "DequantizeLinear"})
    floats = [i.data_type for i in model.graph.initializer if i.data_type in (1, 10)]
    fp16 = bool(floats) and floats.count(10) > len(floats) // 2
    meta = {p.key: p.value for p in model.metadata_props}
    target = None
    if QUANT_METADATA_KEY in meta:
        try:
            target = str(json.loads(meta[QUANT_METADATA_KEY]).get("target"))
        except (ValueError, AttributeError):
            target = None
    return OnnxFacts(path, sha256_file(path), qdq, fp16, target, meta)
