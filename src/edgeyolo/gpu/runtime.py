"""CUDA context, streams and events on the driver API.

One ``CudaContext`` per process and device: it retains the device's primary context (the one
the CUDA runtime, TensorRT and PyTorch also use, so their pointers and streams are valid in
ours) and makes it current on the calling thread, which then issues every CUDA call.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from edgeyolo.closing import Closing
from edgeyolo.gpu.errors import CudaError, check, driver

if TYPE_CHECKING:
    from edgeyolo.gpu.memory import DeviceBuffer, PinnedBuffer


class CudaContext(Closing):
    """The primary context of one GPU, current on the thread that created it."""

    def __init__(self, device: int = 0) -> None:
        try:
            drv = driver()
            check(drv.cuInit(0), "cuInit")
        except CudaError:
            raise
        except Exception as exc:
            # cuda-python raises its own exception types when libcuda itself is missing.
            raise CudaError("cuInit", "CUDA driver not usable", -1, str(exc)) from exc
        self._drv = drv
        count = check(drv.cuDeviceGetCount(), "cuDeviceGetCount")
        if not 0 <= device < int(count):
            raise CudaError("cuDeviceGet", "CUDA_ERROR_INVALID_DEVICE", 101, f"{count} GPU(s)")
        self.ordinal = device
        self._device = check(drv.cuDeviceGet(device), "cuDeviceGet")
        self._ctx = check(drv.cuDevicePrimaryCtxRetain(self._device), "cuDevicePrimaryCtxRetain")
        check(drv.cuCtxSetCurrent(self._ctx), "cuCtxSetCurrent")
        self.thread_id = threading.get_ident()
        self._closed = False

    @property
    def name(self) -> str:
        """The GPU's marketing name, e.g. 'NVIDIA H100 80GB HBM3' or 'Orin'."""
        raw = check(self._drv.cuDeviceGetName(256, self._device), "cuDeviceGetName")
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        return text.split("\x00", 1)[0].strip()

    @property
    def compute_capability(self) -> tuple[int, int]:
        """(major, minor), e.g. (8, 7) for Jetson Orin, (9, 0) for H100."""
        attr = self._drv.CUdevice_attribute
        major = check(
            self._drv.cuDeviceGetAttribute(
                attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, self._device
            ),
            "cuDeviceGetAttribute",
        )
        minor = check(
            self._drv.cuDeviceGetAttribute(
                attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, self._device
            ),
            "cuDeviceGetAttribute",
        )
        return int(major), int(minor)

    @property
    def integrated(self) -> bool:
        """True for a GPU sharing the host's memory (Jetson): mapped pinned memory, no copy."""
        attr = self._drv.CUdevice_attribute
        value = check(
            self._drv.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_INTEGRATED, self._device),
            "cuDeviceGetAttribute",
        )
        return bool(value)

    @property
    def driver_version(self) -> tuple[int, int]:
        """The CUDA version the driver supports, e.g. (12, 6)."""
        v = int(check(self._drv.cuDriverGetVersion(), "cuDriverGetVersion"))
        return v // 1000, (v % 1000) // 10

    def memory(self) -> tuple[int, int]:
        """(free, total) device memory in bytes."""
        free, total = check(self._drv.cuMemGetInfo(), "cuMemGetInfo")
        return int(free), int(total)

    def check_thread(self) -> None:
        """Raise ``RuntimeError`` when called from another thread than the context's."""
        if threading.get_ident() != self.thread_id:
            raise RuntimeError(
                "CUDA work must be issued from the thread that created the CudaContext "
                "(the event loop's); use call_soon_threadsafe to get there"
            )

    def synchronize(self) -> None:
        """Block until all work in the context is done (teardown and tests only)."""
        check(self._drv.cuCtxSynchronize(), "cuCtxSynchronize")

    def close(self) -> None:
        """Release the primary context (it is destroyed when its last user releases it)."""
        if self._closed:
            return
        self._closed = True
        check(self._drv.cuDevicePrimaryCtxRelease(self._device), "cuDevicePrimaryCtxRelease")


class Stream(Closing):
    """A non-blocking stream: no implicit synchronization with the legacy default stream."""

    def __init__(self) -> None:
        self._drv = driver()
        self.handle: Any = check(
            self._drv.cuStreamCreate(int(self._drv.CUstream_flags.CU_STREAM_NON_BLOCKING)),
            "cuStreamCreate",
        )
        # The raw pointer value, as TensorRT's execute_async_v3 and PyTorch take it.
        self.ptr = int(self.handle)
        self._closed = False

    def wait_event(self, event: Event) -> None:
        """Make work enqueued after this call wait for ``event`` (on the GPU, not the host)."""
        check(self._drv.cuStreamWaitEvent(self.handle, event.handle, 0), "cuStreamWaitEvent")

    def copy_htod(self, dst: DeviceBuffer, src: PinnedBuffer, nbytes: int | None = None) -> None:
        """Enqueue a host-to-device copy; asynchronous because ``src`` is page-locked."""
        n = min(dst.nbytes, src.nbytes) if nbytes is None else nbytes
        check(self._drv.cuMemcpyHtoDAsync(dst.handle, src.ptr, n, self.handle), "cuMemcpyHtoDAsync")

    def copy_dtoh(self, dst: PinnedBuffer, src: DeviceBuffer, nbytes: int | None = None) -> None:
        """Enqueue a device-to-host copy into page-locked memory."""
        n = min(dst.nbytes, src.nbytes) if nbytes is None else nbytes
        check(self._drv.cuMemcpyDtoHAsync(dst.ptr, src.handle, n, self.handle), "cuMemcpyDtoHAsync")

    def copy_dtod(self, dst_ptr: int, src_ptr: int, nbytes: int) -> None:
        """Enqueue a device-to-device copy (a camera's slot into its row of a batch input)."""
        check(
            self._drv.cuMemcpyDtoDAsync(dst_ptr, src_ptr, nbytes, self.handle), "cuMemcpyDtoDAsync"
        )

    def launch_host_func(self, fn: Any, user_data: int) -> None:
        """Enqueue ``fn(user_data)`` (a ``CUhostFn``) to run on a driver thread, in order."""
        check(self._drv.cuLaunchHostFunc(self.handle, fn, user_data), "cuLaunchHostFunc")

    def synchronize(self) -> None:
        """Block until the stream's work is done (teardown and tests only, never on the loop)."""
        check(self._drv.cuStreamSynchronize(self.handle), "cuStreamSynchronize")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        check(self._drv.cuStreamDestroy(self.handle), "cuStreamDestroy")


class Event(Closing):
    """A CUDA event; without ``timing`` it is cheaper to record and query."""

    def __init__(self, timing: bool = False) -> None:
        drv = driver()
        self._drv = drv
        flags = drv.CUevent_flags
        flag = flags.CU_EVENT_DEFAULT if timing else flags.CU_EVENT_DISABLE_TIMING
        self.handle: Any = check(drv.cuEventCreate(int(flag)), "cuEventCreate")
        self.timing = timing
        self._not_ready = int(drv.CUresult.CUDA_ERROR_NOT_READY)
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once ``close()`` destroyed the event."""
        return self._closed

    def record(self, stream: Stream) -> None:
        """Mark the point in ``stream`` that ``query`` and waits refer to."""
        check(self._drv.cuEventRecord(self.handle, stream.handle), "cuEventRecord")

    def query(self) -> bool:
        """True when the work before the last ``record`` is done; never blocks.

        NOT_READY is a state, not an error; any other failure raises ``CudaError``.
        """
        err = self._drv.cuEventQuery(self.handle)[0]
        code = int(err)
        if code == 0:
            return True
        if code == self._not_ready:
            return False
        return bool(check((err,), "cuEventQuery"))

    def synchronize(self) -> None:
        """Block the calling thread until the event completed (tests and teardown only)."""
        check(self._drv.cuEventSynchronize(self.handle), "cuEventSynchronize")

    def elapsed_ms(self, end: Event) -> float:
        """GPU milliseconds from this event to ``end`` (both recorded with ``timing``)."""
        ms = check(self._drv.cuEventElapsedTime(self.handle, end.handle), "cuEventElapsedTime")
        return float(ms)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        check(self._drv.cuEventDestroy(self.handle), "cuEventDestroy")
