"""``edgeyolo build``: build a TensorRT engine from a YOLO ONNX model, on this GPU."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from edgeyolo.config import TensorRTConfig


def register(subparsers: Any) -> None:
    """Add the ``build`` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "build",
        help="build a TensorRT engine from an ONNX model (cached for `edgeyolo run`)",
        description=(
            "Build a TensorRT engine for this GPU and TensorRT version. By default it goes "
            "into the engine cache, where `edgeyolo run` finds it for a model whose path is "
            "the .onnx file; with --out it is written where you say (with a .json sidecar "
            "naming the GPU and TensorRT version it was built for). Building takes seconds on "
            "a desktop GPU and minutes on a Jetson; the timing cache makes rebuilds faster."
        ),
    )
    parser.add_argument("model", type=Path, metavar="MODEL.onnx", help="Ultralytics YOLO ONNX")
    parser.add_argument(
        "--precision",
        choices=("fp32", "fp16", "int8"),
        default="fp16",
        help=(
            "fp16 (default); int8 from a Q/DQ model (`edgeyolo quantize --target tensorrt`) "
            "or, before TensorRT 11, from --calib frames"
        ),
    )
    parser.add_argument(
        "--workspace",
        type=int,
        default=1024,
        metavar="MiB",
        help="builder workspace limit in MiB (default 1024; less on 8 GB Jetsons)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, metavar="PATH", help="engine file (default: the cache)"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"engine cache (default {TensorRTConfig().cache_dir})",
    )
    parser.add_argument(
        "--calib",
        type=Path,
        default=None,
        metavar="DIR_OR_VIDEO",
        help="implicit INT8 (TensorRT < 11): images or a video to calibrate on",
    )
    parser.add_argument(
        "--frames", type=int, default=64, metavar="N", help="calibration frames (default 64)"
    )
    parser.add_argument(
        "--max-batch",
        type=int,
        default=1,
        metavar="N",
        help="dynamic-batch ONNX: up to N frames per call (profile 1/N/N), the engine a model "
        "with max_batch: N uses (default 1)",
    )
    parser.add_argument("--device", type=int, default=0, metavar="N", help="GPU index (default 0)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build, print progress on stderr and the engine's path on stdout."""
    # Imported here: keeps `edgeyolo --help` fast.
    from edgeyolo.engines.builder import BuildRequest, build_engine  # noqa: PLC0415
    from edgeyolo.engines.cache import current_key, timing_cache_path  # noqa: PLC0415
    from edgeyolo.engines.model import inspect_onnx  # noqa: PLC0415
    from edgeyolo.engines.trt_runtime import import_tensorrt  # noqa: PLC0415
    from edgeyolo.gpu import CudaContext  # noqa: PLC0415
    from edgeyolo.log import configure_logging  # noqa: PLC0415

    configure_logging(level="warning")
    trt = import_tensorrt()
    cache_dir = (args.cache_dir or TensorRTConfig().cache_dir).expanduser()

    def progress(msg: str) -> None:
        print(f"edgeyolo build: {msg}", file=sys.stderr, flush=True)

    with CudaContext(args.device) as ctx:
        facts = inspect_onnx(args.model)
        key = current_key(facts.sha256, args.precision, ctx, str(trt.__version__), args.max_batch)
        out = args.out or cache_dir / key.file_name(args.model.stem)
        calib_cache = out.with_name(out.name + ".calib") if args.calib else None
        result = build_engine(
            args.model,
            out,
            BuildRequest(
                precision=args.precision,
                workspace_mib=args.workspace,
                timing_cache=timing_cache_path(cache_dir, key),
                calibration=args.calib,
                calibration_frames=args.frames,
                calibration_cache=calib_cache,
                max_batch=args.max_batch,
            ),
            ctx,
            progress=progress,
            facts=facts,
        )
    print(result.engine)
    return 0
