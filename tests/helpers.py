"""What many tests need, declared once: repository paths and real media, free ports, the CLI
as a subprocess, asyncio with a time limit, and the TensorRT stand-in as a fixture.

Import from here (``from helpers import run_cli``); conftest.py re-exports all of it, so
older ``from conftest import ...`` lines keep working, and registers the fixtures.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import pytest

if TYPE_CHECKING:
    from collections.abc import Awaitable, Iterator
    from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
DET = MODELS / "edgeyolo-demo-det.onnx"
POSE = MODELS / "edgeyolo-demo-pose.onnx"
DEMO_VIDEO = REPO / "media" / "demo-scene.mp4"
DEMO_CONFIG = REPO / "config" / "demo.yaml"
DOCS = REPO / "docs"
# CI lays a copy of shared/ beside the clone; so does a developer checkout.
SHARED_MEDIA = REPO.parent / "shared" / "media"
GOLDEN = REPO / "tests" / "data" / "golden"
LOOPBACK = "127.0.0.1"


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
    """Frame ``index`` of ``video``, as OpenCV decodes it (BGR)."""
    cap = cv2.VideoCapture(str(video))
    try:
        cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, img = cap.read()
    finally:
        cap.release()
    assert ok, f"cannot read frame {index} of {video}"
    return img


def short_clip(path: Path, frames: int = 45) -> Path:
    """The first ``frames`` frames of the demo video as an MJPG AVI at 15 fps (45: 3 s)."""
    cap = cv2.VideoCapture(str(DEMO_VIDEO))
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 15.0, (960, 540))
    for _ in range(frames):
        ok, img = cap.read()
        assert ok
        out.write(img)
    out.release()
    cap.release()
    return path


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def edgeyolo_cmd(*args: str) -> list[str]:
    """Command line running this checkout's edgeyolo with the test interpreter."""
    return [sys.executable, "-m", "edgeyolo", *args]


def run_cli(*args: str, timeout: float = 120, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run ``edgeyolo ARGS`` to the end; stdout and stderr as text; never raises on exit codes.

    ``kwargs`` go to ``subprocess.run`` (``cwd``, ``env``).
    """
    return subprocess.run(
        edgeyolo_cmd(*args), capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )


def start_cli(*args: str, log: Path) -> subprocess.Popen[bytes]:
    """Start ``edgeyolo ARGS`` in the background from the repository: stdout discarded, stderr
    (the JSON log lines) written to ``log`` for the test to read while it runs."""
    with log.open("wb") as err:
        return subprocess.Popen(
            edgeyolo_cmd(*args), stdout=subprocess.DEVNULL, stderr=err, cwd=REPO
        )


def run_async(coro: Awaitable[Any], timeout: float = 60) -> Any:
    """``asyncio.run`` with a time limit, so a hung await fails the test instead of hanging it."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


# --- the TensorRT stand-in (tests/fake_tensorrt) ---------------------------------------------

FAKE_TRT_VERSION = "10.3.0.30"


@dataclass(frozen=True)
class Gpu:
    """A GPU identity, as CudaContext reports it (for engine keys without a GPU)."""

    name: str = "Orin"
    compute_capability: tuple[int, int] = (8, 7)


@pytest.fixture
def trt(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The fake as ``tensorrt``, at TensorRT 10.3 and executing with ONNX Runtime, unless a
    test reconfigures it (``trt.configure(version)``, ``trt.set_executor(...)``)."""
    import fake_tensorrt

    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt)
    fake_tensorrt.configure(FAKE_TRT_VERSION)
    fake_tensorrt.set_executor(None)
    yield fake_tensorrt
    fake_tensorrt.configure(FAKE_TRT_VERSION)
    fake_tensorrt.set_executor(None)


def recorded(model: str, frame: str) -> Any:
    """Ultralytics' raw output of ``model`` (det, pose) on demo frame ``frame`` (e.g. f000),
    as recorded in the goldens (1 x rows x anchors float32; sparse files keep only the
    anchors that matter, the rest is zeros)."""
    import numpy as np

    z = np.load(GOLDEN / f"ultralytics-raw-{model}-demo-scene-{frame}.npz")
    if "output0" in z.files:
        return z["output0"]
    raw = np.zeros(tuple(z["shape"]), np.float32)
    raw[0][:, z["anchors"]] = z["columns"]
    return raw
