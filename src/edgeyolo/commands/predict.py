"""``edgeyolo predict``: one model on images or videos, one JSON line per image or frame.

The defaults are Ultralytics' predict defaults (conf 0.25, iou 0.7, max_det 300), so the
output can be compared with ``yolo predict`` on the same ONNX file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeyolo.errors import ConfigError, ModelError, SourceError

if TYPE_CHECKING:
    from collections.abc import Iterator

    import numpy as np
    import numpy.typing as npt


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "predict",
        help="run one model on images/videos and print JSON lines",
        description="Run one model (ONNX Runtime) on images or videos; print one JSON line "
        "per image or video frame with boxes in source pixels.",
    )
    p.add_argument("--model", type=Path, required=True, help="an Ultralytics-format .onnx file")
    p.add_argument(
        "--task",
        choices=["detect", "pose"],
        default=None,
        help="check the model is this task (default: from the model's metadata)",
    )
    p.add_argument("--conf", type=float, default=0.25, help="confidence threshold (0.25)")
    p.add_argument("--iou", type=float, default=0.7, help="NMS IoU threshold (0.7)")
    p.add_argument("--max-det", type=int, default=300, help="most detections per image (300)")
    p.add_argument(
        "--imgsz",
        type=int,
        default=None,
        help="model input size; must match a static model (default: from the model)",
    )
    p.add_argument(
        "--classes", default=None, help="comma-separated class ids or labels to keep (default: all)"
    )
    p.add_argument("sources", nargs="+", type=Path, metavar="IMAGE_OR_VIDEO")
    p.set_defaults(func=main)


def _frames(path: Path) -> Iterator[tuple[int, npt.NDArray[np.uint8]]]:
    from edgeyolo.sources.files import is_image_file, read_image, video_frames  # noqa: PLC0415

    if path.is_dir():
        raise SourceError(f"{path}: a folder; give image or video files (e.g. {path}/*.jpg)")
    if not path.is_file():
        raise SourceError(f"{path}: no such file")
    if is_image_file(path):
        yield 0, read_image(path)
    else:
        yield from video_frames(path)


def _as_options(message: str, name: str) -> str:
    """A model check's message names config keys (``models[NAME].classes``); here they are
    the options that set them."""
    for key in ("classes", "task"):
        message = message.replace(f"models[{name}].{key}", f"--{key}")
    return message.replace("; set task: ", "; use --task ")


def main(args: argparse.Namespace) -> int:
    from pydantic import ValidationError  # noqa: PLC0415

    from edgeyolo.config import ModelConfig, OnnxRuntimeConfig  # noqa: PLC0415
    from edgeyolo.engines.onnxruntime import (  # noqa: PLC0415
        OnnxRuntimeBackend,
        OnnxRuntimeEngine,
        inspect_model,
    )
    from edgeyolo.log import configure_logging  # noqa: PLC0415
    from edgeyolo.runner import ModelRunner, to_detections  # noqa: PLC0415

    configure_logging("auto", "warning")
    info = inspect_model(args.model)
    if args.imgsz is not None and info.input.hw != (args.imgsz, args.imgsz):
        raise ModelError(
            f"{args.model}: the model's input is {info.input.hw[1]}x{info.input.hw[0]}; "
            f"--imgsz {args.imgsz} needs a model exported at that size"
        )
    classes: list[int | str] | None = None
    if args.classes:
        classes = [int(c) if c.strip().isdigit() else c.strip() for c in args.classes.split(",")]
    try:
        cfg = ModelConfig(
            name=args.model.stem,
            path=args.model,
            task=args.task or info.task,
            conf=args.conf,
            iou=args.iou,
            max_det=args.max_det,
            classes=classes,
        )
    except ValidationError as exc:
        # The options are the model's config keys: name the option, not the key.
        err = exc.errors(include_url=False)[0]
        option = "--" + str(err["loc"][0]).replace("_", "-")
        raise ConfigError(
            f"{option} {err['input']!r}: {err['msg'].removeprefix('Value error, ')}"
        ) from None
    # One model, one image at a time: ONNX Runtime may use every core (its default).
    backend = OnnxRuntimeBackend(OnnxRuntimeConfig(intra_op_threads=0), max_engines=1)
    try:
        try:
            runner = ModelRunner.open(backend, cfg)
        except ModelError as exc:
            raise ModelError(_as_options(str(exc), cfg.name)) from None
        slot = backend.allocate_input(runner.input_spec)
        engine = runner.engine
        assert isinstance(engine, OnnxRuntimeEngine)  # what this backend opens
        out = sys.stdout
        for path in args.sources:
            for n, image in _frames(path):
                lb = slot.fill(image)
                dets = runner.decode(engine.run_sync(slot.host), lb)
                record: dict[str, Any] = {
                    "source": str(path),
                    "frame": n,
                    "width": int(image.shape[1]),
                    "height": int(image.shape[0]),
                    "detections": [d.to_dict() for d in to_detections(dets, runner.labels)],
                }
                out.write(json.dumps(record, separators=(",", ":")) + "\n")
        out.flush()
    finally:
        backend.close()
    return 0
