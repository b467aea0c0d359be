"""TensorRT input slots: a pinned host array and its device copy, filled once per frame.

The CPU path letterboxes into the pinned array and ``commit`` enqueues ONE host-to-device
copy on the backend's upload stream; the GPU path (``tensorrt.gpu``) uploads the raw frame and
runs the letterbox kernel (engines/trt_gpu.py). Either way ``ready`` is recorded for the
engines' streams to wait on, and the next fill waits on the GPU for every engine that read it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from edgeyolo.engines.base import HostFill, TensorSpec

if TYPE_CHECKING:
    from edgeyolo.engines.trt_gpu import GpuFill
    from edgeyolo.frames import Letterbox
    from edgeyolo.gpu import DeviceBuffer, Event, PinnedBuffer, Stream


class TensorRTInputSlot(HostFill):
    """Pinned host input + its device copy, uploaded once per frame for all engines.

    ``fill`` with the GPU letterbox (``gpu``): the raw frame goes up once and a kernel writes
    the device input; without it: the CPU letterbox into the pinned array, then ``commit``
    uploads that.
    """

    def __init__(self, spec: TensorSpec, upload: Stream, gpu: GpuFill | None = None) -> None:
        from edgeyolo.gpu import DeviceBuffer, Event, PinnedBuffer  # noqa: PLC0415

        self._spec = spec
        self._upload = upload
        self._gpu = gpu
        made: list[PinnedBuffer | DeviceBuffer | Event] = []
        try:
            self._pinned: PinnedBuffer = PinnedBuffer(spec.shape, spec.dtype)
            made.append(self._pinned)
            self._device: DeviceBuffer = DeviceBuffer(self._pinned.nbytes)
            made.append(self._device)
            self.ready: Event = Event()
            made.append(self.ready)
            # The letterbox of the frame in the slot, for the NMS kernel (mapped: it reads the
            # host's write at its launch); valid once fill/stage wrote it.
            self._params = PinnedBuffer((8,), np.float32, mapped=True)
        except BaseException:
            for res in reversed(made):  # what was made before the failure, nothing leaks
                res.close()
            raise
        self._params_valid = False
        self._readers: list[Event] = []

    @property
    def spec(self) -> TensorSpec:
        return self._spec

    @property
    def host(self) -> npt.NDArray[np.floating]:
        """The pinned array a caller letterboxes into before ``commit()`` (in place).

        ``fill`` with the GPU letterbox writes the device input only; this array then keeps
        whatever the caller last wrote.
        """
        return self._pinned.array

    @property
    def device_ptr(self) -> int:
        """Device address of the uploaded input, as ``set_tensor_address`` takes it."""
        return self._device.ptr

    def add_reader(self, done: Event) -> None:
        """Register an engine's completion event: the next upload waits for it on the GPU."""
        if not any(r is done for r in self._readers):
            self._readers.append(done)

    def _wait_readers(self) -> None:
        # An engine closed on its own synchronized its stream first: nothing left to wait for.
        self._readers = [r for r in self._readers if not r.closed]
        for reader in self._readers:
            # Never overwrite the device input while an engine may still be reading it.
            self._upload.wait_event(reader)

    def fill(self, image: npt.NDArray[np.uint8]) -> Letterbox:
        """Letterbox ``image`` into the device input (GPU or CPU letterbox); returns at once."""
        lb = self.stage(image)
        self.enqueue_upload()
        return lb

    def stage(self, image: npt.NDArray[np.uint8]) -> Letterbox:
        """The host half of ``fill``: the frame copied into pinned staging (GPU letterbox) or
        letterboxed into ``host`` (CPU letterbox). ``enqueue_upload`` does the GPU half."""
        from edgeyolo.gpu.nms import letterbox_params  # noqa: PLC0415

        if self._gpu is None:
            lb = self.letterbox_host(image)
        else:
            lb = self._gpu.stage(image, self._upload)
        letterbox_params(lb, self._params.array)
        self._params_valid = True
        return lb

    @property
    def params_ptr(self) -> int:
        """Device address of the staged frame's letterbox for the NMS kernel; 0 when the
        slot was filled through ``host`` + ``commit`` (no letterbox known: NMS on the host)."""
        return self._params.device_ptr if self._params_valid else 0

    def enqueue_upload(self, wait_readers: bool = True) -> None:
        """The GPU half of ``fill`` on the upload stream, then ``ready`` is recorded.

        ``wait_readers=False`` while a frame graph is captured: there the engines that read
        the slot before are done on the host's word (their graph or frame completed).
        """
        if wait_readers:
            self._wait_readers()
        if self._gpu is None:
            self._upload.copy_htod(self._device, self._pinned)
        else:
            self._gpu.enqueue(self._device.ptr, self._upload)
        self.ready.record(self._upload)

    @property
    def gpu_fill(self) -> GpuFill | None:
        """The GPU letterbox of this slot (None: the CPU letterbox fills ``host``)."""
        return self._gpu

    @property
    def staging_key(self) -> tuple[int, ...]:
        """What a captured upload depends on besides the slot: the staged frame's size and
        staging buffer (a graph captured for another key must not be replayed)."""
        return () if self._gpu is None else self._gpu.staged_key

    def commit(self) -> None:
        """Enqueue one host-to-device copy of ``host`` and record ``ready``; returns at once."""
        self._params_valid = False  # the caller letterboxed: this slot does not know how
        self._wait_readers()
        self._upload.copy_htod(self._device, self._pinned)
        self.ready.record(self._upload)

    def close(self) -> None:
        if self._gpu is not None:
            self._gpu.close()
        self._params.close()
        self.ready.close()
        self._device.close()
        self._pinned.close()
