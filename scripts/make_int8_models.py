"""Regenerate the bundled INT8 demo models from their FP32 parents with ``edgeyolo quantize``.

Writes models/edgeyolo-demo-{det,pose}-int8.onnx, target cpu (U8S8: what the demo config runs
on ONNX Runtime's CPU backend).

Calibration uses frames of vtest.avi (OpenCV's pedestrian sample, ../shared/media), NOT
media/demo-scene.mp4: the demo video is what INT8-vs-FP32 drift is evaluated on
(``edgeyolo bench drift``), so it must not also be the calibration set.

    python scripts/make_int8_models.py [CALIBRATION_VIDEO_OR_DIR] [--frames 64]

Run with the interpreter of a venv where edgeyolo is installed (``make test`` makes one).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edgeyolo.log import configure_logging
from edgeyolo.quantize import quantize_model

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "calib",
        type=Path,
        nargs="?",
        default=REPO.parent / "shared" / "media" / "vtest.avi",
        help="calibration video or folder of images (../shared/media/vtest.avi)",
    )
    ap.add_argument("--frames", type=int, default=64, help="calibration frames (64)")
    args = ap.parse_args()
    configure_logging()  # progress lines on stderr, as `edgeyolo quantize` prints them
    for kind in ("det", "pose"):
        result = quantize_model(
            REPO / "models" / f"edgeyolo-demo-{kind}.onnx",
            args.calib.resolve(),
            REPO / "models" / f"edgeyolo-demo-{kind}-int8.onnx",
            target="cpu",
            frames=args.frames,
        )
        print(result.output)


if __name__ == "__main__":
    main()
