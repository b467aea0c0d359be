"""FP32 -> FP16 ONNX conversion, for TensorRT 11's strongly typed networks.

TensorRT 11 removed ``BuilderFlag.FP16``: a network runs in the precision its tensors have.
An FP16 engine therefore needs an FP16 ONNX. This converts the weights and float constants of
an FP32 YOLO export to FP16 and keeps the model's float32 input and output, with a ``Cast`` at
each end (what Ultralytics' ``half=True`` export does to the whole model, minus the I/O), so
the engine takes the same float32 frames and returns float32 rows.

Inputs that ONNX requires to stay float32 are left alone: ``Resize``'s ``roi`` and ``scales``.
Only the operators of YOLO detect/pose exports are expected; anything with a float attribute
tensor or an op that needs float32 raises ``ModelError`` rather than writing a wrong model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgeyolo.errors import ModelError

FP16_METADATA_KEY = "edgeyolo_fp16"
# Operator inputs that must stay float32 whatever the model's precision, by input index.
_KEEP_FLOAT32 = {"Resize": {1, 2}}
# Operators seen in YOLOv8/YOLO11 detect and pose exports, all fine with FP16 tensors.
_FP16_OK = {
    "Conv", "Sigmoid", "Mul", "Add", "Sub", "Div", "Split", "Concat", "MaxPool", "Resize",
    "Reshape", "Transpose", "Softmax", "Slice", "Constant", "Cast", "Gather", "Shape",
    "Unsqueeze", "Squeeze", "Identity", "Pow", "Sqrt", "ReduceMax", "ArgMax", "Flatten",
    "Expand", "Tile", "Range", "Equal", "Where", "MatMul", "Gemm", "Relu", "SiLU", "Neg",
    "Max", "Min", "Clip", "AveragePool", "GlobalAveragePool", "BatchNormalization", "Floor",
    "Ceil", "Abs", "Exp", "Log", "Tanh", "LeakyRelu", "HardSigmoid", "HardSwish", "Pad",
}  # fmt: skip


def convert_to_fp16(src: Path, dst: Path) -> Path:
    """Write an FP16 copy of the FP32 ONNX model ``src`` to ``dst`` (float32 I/O kept)."""
    import onnx  # noqa: PLC0415 - only needed when building for TensorRT 11
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    try:
        model = onnx.load(str(src))
    except Exception as exc:
        raise ModelError(f"{src}: not a readable ONNX model: {exc}") from exc
    graph = model.graph
    unknown = sorted({n.op_type for n in graph.node} - _FP16_OK)
    if unknown:
        raise ModelError(
            f"{src}: cannot convert to FP16 automatically (operators {', '.join(unknown)}); "
            "export an FP16 ONNX yourself (e.g. `yolo export format=onnx half=True`)"
        )
    keep: set[str] = set()
    for node in graph.node:
        for i in _KEEP_FLOAT32.get(node.op_type, ()):
            if i < len(node.input) and node.input[i]:
                keep.add(node.input[i])

    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT and init.name not in keep:
            init.CopyFrom(
                numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name)
            )
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] not in keep:
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == TensorProto.FLOAT:
                    arr = numpy_helper.to_array(attr.t).astype(np.float16)
                    attr.t.CopyFrom(numpy_helper.from_array(arr, attr.t.name))
        elif node.op_type == "Cast":
            for attr in node.attribute:
                if attr.name == "to" and attr.i == TensorProto.FLOAT:
                    attr.i = TensorProto.FLOAT16

    inits = {i.name for i in graph.initializer}
    casts = []
    for inp in graph.input:
        if inp.name in inits or inp.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        half = f"{inp.name}__fp16"
        for node in graph.node:
            for i, name in enumerate(node.input):
                if name == inp.name:
                    node.input[i] = half
        casts.append(helper.make_node("Cast", [inp.name], [half], to=TensorProto.FLOAT16))
    tails = []
    for out in graph.output:
        if out.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        half = f"{out.name}__fp16"
        for node in graph.node:
            for i, name in enumerate(node.output):
                if name == out.name:
                    node.output[i] = half
        tails.append(helper.make_node("Cast", [half], [out.name], to=TensorProto.FLOAT))
    nodes = [*casts, *graph.node, *tails]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # intermediate types changed; consumers infer them again
    model.metadata_props.add(key=FP16_METADATA_KEY, value=json.dumps({"from": src.name}))
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    return dst
