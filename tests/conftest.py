"""Shared fixtures: the repository's demo assets and the real media in ../shared."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
DET = MODELS / "edgeyolo-demo-det.onnx"
POSE = MODELS / "edgeyolo-demo-pose.onnx"
DEMO_VIDEO = REPO / "media" / "demo-scene.mp4"
DEMO_CONFIG = REPO / "config" / "demo.yaml"
# CI lays a copy of shared/ beside the clone; so does a developer checkout.
SHARED_MEDIA = REPO.parent / "shared" / "media"
GOLDEN = REPO / "tests" / "data" / "golden"


def shared_media(name: str) -> Path:
    """A file of ../shared/media; in CI its absence is a failure, elsewhere a skip."""
    path = SHARED_MEDIA / name
    if not path.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing: CI must have ../shared beside the clone")
        pytest.skip(f"{path} not present (../shared/media)")
    return path


def require(present: bool, reason: str, *, in_ci: bool = True) -> None:
    """Skip a test whose need (a tool, a library build) is missing; fail instead in CI.

    ``in_ci=False`` for needs that the CI run at hand is not meant to have (the GStreamer
    tests in the PyPI-OpenCV venv: CI runs them in the system-OpenCV venv instead).
    """
    if present:
        return
    if in_ci and os.environ.get("CI"):
        pytest.fail(f"CI must have this: {reason}")
    pytest.skip(reason)


def read_frame(video: Path, index: int) -> np.ndarray:
    cap = cv2.VideoCapture(str(video))
    try:
        cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, img = cap.read()
    finally:
        cap.release()
    assert ok, f"cannot read frame {index} of {video}"
    return img


@pytest.fixture(scope="session")
def demo_frame() -> np.ndarray:
    return read_frame(DEMO_VIDEO, 0)


@pytest.fixture
def broker(tmp_path: Path):
    """A real mosquitto on a free loopback port for one test (tests/mosquitto.py)."""
    from mosquitto import Mosquitto

    b = Mosquitto(tmp_path / "broker")
    b.start()
    yield b
    b.stop()


def edgeyolo_cmd(*args: str) -> list[str]:
    """Command line running this checkout's edgeyolo with the test interpreter."""
    return [sys.executable, "-m", "edgeyolo", *args]
