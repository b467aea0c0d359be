"""``edgeyolo quantize``: write a statically quantized INT8 (Q/DQ) copy of a YOLO ONNX model."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edgeyolo.log import configure_logging

TARGET_HELP = (
    "cpu: uint8 activations, int8 per-channel weights (U8S8), fast on ONNX Runtime's CPU; "
    "tensorrt: int8 symmetric activations and weights (S8S8), what TensorRT's explicit "
    "quantization needs (slower than FP32 on ONNX Runtime's CPU). Default: cpu"
)


def register(subparsers: Any) -> None:
    """Add the ``quantize`` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "quantize",
        help="statically quantize a YOLO ONNX model to INT8 (Q/DQ), calibrated on your frames",
        description=(
            "Write a statically quantized INT8 Q/DQ ONNX model. Calibration frames are drawn "
            "evenly from a directory of images or a video and letterboxed exactly as "
            "inference does; use frames like those the model will see. Only Conv layers are "
            "quantized, and the detection head's final prediction convs stay in float."
        ),
    )
    parser.add_argument("model", type=Path, metavar="MODEL.onnx", help="FP32 ONNX model")
    parser.add_argument(
        "--calib",
        type=Path,
        required=True,
        metavar="DIR_OR_VIDEO",
        help="directory of images, one image, or a video to calibrate on",
    )
    parser.add_argument("--target", choices=("cpu", "tensorrt"), default="cpu", help=TARGET_HELP)
    parser.add_argument(
        "--frames",
        type=int,
        default=64,
        metavar="N",
        help="number of calibration frames, sampled evenly (default 64)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="PATH",
        help="output file (default: MODEL-int8-<target>.onnx next to MODEL)",
    )
    parser.add_argument(
        "--quantize-head",
        action="store_true",
        help="also quantize the head's final prediction convs (faster, much larger drift)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Quantize and print the output path on stdout."""
    # Imported here: onnxruntime.quantization is heavy and only this command needs it.
    from edgeyolo.quantize import quantize_model  # noqa: PLC0415

    # Progress lines go to stderr; stdout carries only the output path, for scripts.
    configure_logging()

    result = quantize_model(
        args.model,
        args.calib,
        args.out,
        target=args.target,
        frames=args.frames,
        exclude_head=not args.quantize_head,
    )
    print(result.output)
    return 0
