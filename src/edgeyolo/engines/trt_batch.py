"""Batched TensorRT calls: the engine's batch input and its optimization profile.

A TensorRT engine built from a dynamic-batch ONNX has one optimization profile (edgeyolo
builds min 1 / opt N / max N frames for ``max_batch: N``). An engine opened with
``max_batch`` > 1 owns a device buffer of N frames; ``infer_batch`` makes the engine's stream
wait for each camera's slot (its upload or GPU letterbox), copies each slot into its row with
``cuMemcpyDtoDAsync`` (device to device: about 5 MB per 640x640 float32 frame, some
microseconds of copy bandwidth), sets the input shape to the batch, and runs once.

``tensorrt`` and ``cuda`` are imported inside functions only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgeyolo.closing import Closing

if TYPE_CHECKING:
    from collections.abc import Sequence

    from edgeyolo.gpu import DeviceBuffer, Stream


def profile_max_batch(engine: Any, name: str) -> int:
    """The largest batch the engine's first optimization profile takes for input ``name``."""
    get = getattr(engine, "get_tensor_profile_shape", None)
    if get is None:  # pragma: no cover - TensorRT < 8.5
        return 1
    try:
        shapes = get(name, 0)
    except Exception:  # no profile for this input (a static engine)
        return 1
    if len(shapes) < 3 or len(shapes[2]) < 1:
        return 1
    return max(1, int(shapes[2][0]))


class BatchInput(Closing):
    """``rows`` frames of device memory: the input of a batched engine call."""

    def __init__(self, rows: int, frame_nbytes: int) -> None:
        from edgeyolo.gpu import DeviceBuffer  # noqa: PLC0415

        self.rows = rows
        self.frame_nbytes = frame_nbytes
        self.device: DeviceBuffer = DeviceBuffer(rows * frame_nbytes)

    @property
    def ptr(self) -> int:
        return self.device.ptr

    def gather(self, stream: Stream, slots: Sequence[Any]) -> None:
        """Enqueue on ``stream``: wait for each slot's data, copy it into its row."""
        if not 1 <= len(slots) <= self.rows:
            raise ValueError(f"a batch of {len(slots)} frames; this engine takes 1 to {self.rows}")
        for i, slot in enumerate(slots):
            stream.wait_event(slot.ready)
            stream.copy_dtod(self.ptr + i * self.frame_nbytes, slot.device_ptr, self.frame_nbytes)

    def close(self) -> None:
        self.device.close()
