"""The engine protocol every backend implements, and what engines report about their model.

The pipeline hands each frame once per distinct input spec to an ``InputSlot`` owned by the
backend, which fills itself (``fill``: letterbox + normalize, then publish to the engines),
then awaits every engine's ``infer`` concurrently. A backend decides how the slot is filled
and reaches its engines: host slots letterbox on the CPU into their array (pinned memory on
TensorRT); ONNX Runtime reads that array, TensorRT uploads it once and makes every engine's
stream wait for the upload. A GPU slot may letterbox on the device instead.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Sequence

    import numpy.typing as npt

    from edgeyolo.config import ModelConfig
    from edgeyolo.frames import Letterbox
    from edgeyolo.postprocess import Candidates, Detections
    from edgeyolo.preprocess import Preprocessor

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
    # Most frames one call takes: 1 for a static batch-1 model, None for a symbolic batch
    # (an ONNX export with dynamic=True), the profile's maximum for a TensorRT engine.
    # ``input`` and ``output`` always describe one frame (batch 1).
    max_batch: int | None = 1

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

    def fill(self, image: npt.NDArray[np.uint8]) -> Letterbox:
        """Letterbox ``image`` (HxWx3 BGR uint8) into this slot and publish it to the engines.

        Returns the letterbox geometry decode needs to map results back to ``image``.
        """
        ...

    def commit(self) -> None:
        """``host`` has been written by the caller; make it visible to engines."""
        ...

    def close(self) -> None: ...


class HostFill(ABC):
    """``fill`` for slots whose engines read a host array: the CPU letterbox, then ``commit``.

    Each slot keeps its own ``Preprocessor`` (it remembers which buffers already hold the
    padding, and reuses its resize buffers).
    """

    _letterbox: Preprocessor | None = None

    @property
    @abstractmethod
    def spec(self) -> TensorSpec: ...

    @property
    @abstractmethod
    def host(self) -> npt.NDArray[np.floating]: ...

    @abstractmethod
    def commit(self) -> None: ...

    def fill(self, image: npt.NDArray[np.uint8]) -> Letterbox:
        lb = self.letterbox_host(image)
        self.commit()
        return lb

    def letterbox_host(self, image: npt.NDArray[np.uint8]) -> Letterbox:
        """The CPU letterbox of ``image`` into ``host`` (no upload)."""
        pre = self._letterbox
        if pre is None:
            from edgeyolo.preprocess import Preprocessor  # noqa: PLC0415 - cv2 on first use

            pre = self._letterbox = Preprocessor(*self.spec.hw)
        return pre(image, self.host)


@runtime_checkable
class Engine(Protocol):
    """One loaded model that turns a committed input slot into its raw output."""

    @property
    def name(self) -> str: ...

    @property
    def info(self) -> ModelInfo: ...

    async def infer(self, slot: InputSlot) -> npt.NDArray[np.float32] | Candidates | Detections:
        """Run the model on ``slot`` and return its raw output (1 x rows x anchors, float32).

        An engine that decodes on the device (TensorRT's GPU decode) returns the
        ``Candidates`` above its model's threshold instead; ``postprocess.decode`` takes both.

        The array stays valid until the next ``infer`` on this engine (unless
        ``output_owned``); callers copy what they keep. At most one ``infer`` per engine is in
        flight.
        """
        ...

    @property
    def output_owned(self) -> bool:
        """True when what ``infer`` returns belongs to the caller (a fresh array or copy), so
        it stays valid after the next ``infer`` and may be decoded outside the engine's lock."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class BatchEngine(Engine, Protocol):
    """An engine that also runs several cameras' slots in one call (``max_batch`` > 1)."""

    async def infer_batch(
        self, slots: Sequence[InputSlot]
    ) -> npt.NDArray[np.float32] | Sequence[Candidates | Detections]:
        """Run the model once on every slot (batch index i = ``slots[i]``).

        Returns the raw output (len(slots) x rows x anchors, float32), or from an engine that
        decodes on the device each frame's ``Candidates``; index i is frame i, valid until the
        next call like ``infer``'s. Each slot is read (copied into the engine's own batch input, or
        that copy enqueued ahead of any later write to the slot) before the first ``await``.
        Called with 1 to ``max_batch`` (the model's config) slots, one call at a time.
        """
        ...


@runtime_checkable
class FrameLaunch(Protocol):
    """Every engine of a camera on one slot set, launched as one unit (TensorRT: a CUDA
    graph per frame). A backend that can offers ``frame_launch(slots, engines)``."""

    def stage(self, image: npt.NDArray[np.uint8]) -> dict[TensorSpec, Letterbox]:
        """The host part of filling the slots with ``image``; the rest is in ``infer``."""
        ...

    async def infer(
        self, locks: Sequence[asyncio.Lock] = ()
    ) -> list[npt.NDArray[np.float32] | Candidates | Detections | BaseException]:
        """Run every engine (in the order given) on the staged frame, holding ``locks`` while
        it uses them: per engine what its ``infer`` returns (the caller's to keep), or the
        exception it raised."""
        ...

    @property
    def lock_wait_ms(self) -> float:
        """How long the last ``infer`` waited before the engines were its (locks, batch)."""
        ...

    @property
    def last_infer_ms(self) -> float:
        """How long the last ``infer``'s engines ran (from the launch to the results)."""
        ...

    @property
    def last_batch(self) -> tuple[int, bool]:
        """Frames in the last ``infer``'s engine calls, and whether this launch reports them
        (one camera of a batched launch does)."""
        ...

    def detach(self) -> None:
        """This camera submits no more frames (a batched launch stops waiting for it)."""
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
