"""The engine protocol every backend implements, and what engines report about their model.

The pipeline preprocesses each frame once per distinct input spec into an ``InputSlot``
owned by the backend (pinned host memory on TensorRT), commits it, then awaits every
engine's ``infer`` concurrently. A backend decides how the slot reaches its engines: ONNX
Runtime reads the host array; TensorRT uploads it once and makes every engine's stream wait
for the upload.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    import numpy.typing as npt

    from edgeyolo.config import ModelConfig

Task = Literal["detect", "pose"]


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """Name, shape and element type of one model input or output."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype[np.floating]

    @property
    def hw(self) -> tuple[int, int]:
        """Height and width of an NCHW image input."""
        return int(self.shape[2]), int(self.shape[3])


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What a loaded model is, read from its file (ONNX metadata or engine I/O)."""

    path: Path
    task: Task
    input: TensorSpec
    output: TensorSpec
    names: dict[int, str] = field(default_factory=dict)
    kpt_shape: tuple[int, int] | None = None

    @property
    def num_classes(self) -> int:
        """Class count implied by the output rows (4 box rows + classes [+ keypoints])."""
        extra = 0 if self.kpt_shape is None else self.kpt_shape[0] * self.kpt_shape[1]
        return int(self.output.shape[1]) - 4 - extra


@runtime_checkable
class InputSlot(Protocol):
    """One model input, written by preprocessing, read by every engine with that spec."""

    @property
    def spec(self) -> TensorSpec: ...

    @property
    def host(self) -> npt.NDArray[np.floating]:
        """The host array preprocessing writes into, in place (never rebound)."""
        ...

    def commit(self) -> None:
        """Preprocessing has finished writing ``host``; make it visible to engines."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Engine(Protocol):
    """One loaded model that turns a committed input slot into its raw output."""

    @property
    def name(self) -> str: ...

    @property
    def info(self) -> ModelInfo: ...

    async def infer(self, slot: InputSlot) -> npt.NDArray[np.float32]:
        """Run the model on ``slot`` and return its raw output (1 x rows x anchors, float32).

        The array stays valid until the next ``infer`` on this engine; callers copy what
        they keep. At most one ``infer`` per engine is in flight.
        """
        ...

    def close(self) -> None: ...


@runtime_checkable
class Backend(Protocol):
    """Creates engines and the input slots they read."""

    @property
    def name(self) -> str: ...

    def open_engine(self, model: ModelConfig) -> Engine: ...

    def allocate_input(self, spec: TensorSpec) -> InputSlot: ...

    def close(self) -> None: ...
