"""Opening every .onnx model of a config and checking it against its entry (task, classes).

What ``check-config`` does, and what a SIGHUP reload does before it tears anything down.
TensorRT ``.engine`` files are checked when the TensorRT backend loads them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgeyolo.errors import EdgeYoloError

if TYPE_CHECKING:
    from edgeyolo.config import Config


def model_problems(cfg: Config) -> list[str]:
    """One message per model that cannot be opened or does not match its config entry."""
    from edgeyolo.engines.model import check_model  # noqa: PLC0415
    from edgeyolo.engines.onnxruntime import inspect_model  # noqa: PLC0415

    problems = []
    for i, m in enumerate(cfg.models):
        if m.path.suffix.lower() != ".onnx":
            continue
        try:
            check_model(m, inspect_model(m.path))
        except EdgeYoloError as exc:
            problems.append(f"models[{i}] = {m.name!r}: {exc}")
    return problems
