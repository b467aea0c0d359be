"""Shared fixtures; the helpers themselves (paths, media, ports, the CLI) are in helpers.py."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import structlog

# Re-exported: tests import these from conftest as well as from helpers. `trt` is a fixture.
from helpers import (
    DEMO_CONFIG,
    DEMO_VIDEO,
    DET,
    DOCS,
    GOLDEN,
    MODELS,
    POSE,
    REPO,
    SHARED_MEDIA,
    edgeyolo_cmd,
    free_port,
    read_frame,
    require,
    run_async,
    run_cli,
    shared_media,
    trt,
)

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np

__all__ = [
    "DEMO_CONFIG",
    "DEMO_VIDEO",
    "DET",
    "DOCS",
    "GOLDEN",
    "MODELS",
    "POSE",
    "REPO",
    "SHARED_MEDIA",
    "edgeyolo_cmd",
    "free_port",
    "read_frame",
    "require",
    "run_async",
    "run_cli",
    "shared_media",
    "trt",
]


@pytest.fixture(autouse=True)
def _restore_structlog():
    """Undo a test's configure_logging: a level set by one test must not hide another's
    info lines from structlog.testing.capture_logs."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


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
