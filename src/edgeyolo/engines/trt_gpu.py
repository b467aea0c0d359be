"""The TensorRT backend's GPU path: kernels loaded once, slots that letterbox on the GPU, and
engines that decode on the GPU.

- ``GpuKernels``: the letterbox and decode modules, compiled with NVRTC for this GPU (cached
  on disk) and loaded into the backend's context, as ``tensorrt.gpu`` in the config asks.
- ``GpuFill``: per input slot, a pinned staging buffer the frame is copied into, ONE upload of
  the raw BGR frame (none on integrated GPUs such as Jetson: the kernel reads mapped pinned
  memory in place), then the letterbox kernel writes the engines' input buffer directly.
- ``DeviceDecode``: per engine, the decode kernel right after ``execute_async_v3`` on the
  engine's stream; only the counter and the candidates come back. Overflow (more candidates
  than ``decode_capacity``) is counted, logged at most once a minute, and that frame falls back
  to the full output and the CPU decode, so results never depend on the capacity.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import structlog

from edgeyolo.closing import Closing

if TYPE_CHECKING:
    from collections.abc import Mapping

    from edgeyolo.config import GpuPathConfig
    from edgeyolo.frames import Letterbox
    from edgeyolo.gpu import CudaContext, DeviceBuffer, PinnedBuffer, Stream
    from edgeyolo.gpu.decode import GpuDecoder
    from edgeyolo.gpu.letterbox import GpuLetterbox
    from edgeyolo.gpu.nvrtc import Module
    from edgeyolo.postprocess import Candidates, Detections

OVERFLOW_LOG_S = 60.0


class GpuKernels(Closing):
    """The kernel modules the config's GPU path needs, loaded into ``ctx``."""

    def __init__(self, ctx: CudaContext, config: GpuPathConfig) -> None:
        from edgeyolo.gpu.nvrtc import load_kernels  # noqa: PLC0415

        self.config = config
        self.integrated = ctx.integrated
        arch = ctx.compute_capability
        cache = config.kernel_cache.expanduser()
        start = time.perf_counter()
        self.letterbox: Module | None = None
        self.decode: Module | None = None
        if config.preprocess == "gpu":
            self.letterbox = load_kernels("letterbox", arch, cache)
        try:
            if config.decode == "gpu":
                self.decode = load_kernels("decode", arch, cache)
        except BaseException:
            self.close()
            raise
        structlog.get_logger().info(
            "gpu path",
            preprocess=config.preprocess,
            decode=config.decode,
            integrated=self.integrated,
            arch=f"sm_{arch[0]}{arch[1]}",
            kernels_ms=round((time.perf_counter() - start) * 1e3, 1),
        )

    def close(self) -> None:
        for mod in (self.decode, self.letterbox):
            if mod is not None:
                mod.close()
        self.decode = self.letterbox = None


class GpuFill(Closing):
    """Raw frame -> staging (pinned) -> device -> letterbox kernel -> the slot's input buffer."""

    def __init__(
        self,
        module: Module,
        dtype: npt.DTypeLike,
        dst_w: int,
        dst_h: int,
        integrated: bool,
        frames: Mapping[int, PinnedBuffer] | None = None,
    ) -> None:
        from edgeyolo.gpu.letterbox import GpuLetterbox  # noqa: PLC0415

        self.kernel: GpuLetterbox = GpuLetterbox(module, dtype, dst_w, dst_h)
        self.integrated = integrated
        # Pinned frame buffers (the cameras' frame pools) by host address: a frame captured
        # into one is uploaded from where it is, without the copy into staging.
        self._frames: Mapping[int, PinnedBuffer] = frames if frames is not None else {}
        self._src: PinnedBuffer | None = None  # where the staged frame is
        self.copies = 0  # frames copied into staging (not in a pinned frame buffer)
        self._staging: PinnedBuffer | None = None
        self._frame: DeviceBuffer | None = None
        self._size = (0, 0)  # (width, height) of the staged frame
        self._generation = 0  # bumped when the staging/frame buffers are replaced

    def _ensure_staging(self, nbytes: int, stream: Stream) -> None:
        from edgeyolo.gpu import PinnedBuffer  # noqa: PLC0415

        if self._staging is not None and self._staging.nbytes >= nbytes:
            return
        stream.synchronize()  # a larger source: only when the frame size grows
        if self._staging is not None:
            self._staging.close()
            self._staging = None
        self._generation += 1
        self._staging = PinnedBuffer((nbytes,), np.uint8, mapped=self.integrated)

    def _ensure_frame(self, nbytes: int, stream: Stream) -> None:
        """The device copy of the frame (discrete GPUs), allocated before any capture."""
        from edgeyolo.gpu import DeviceBuffer  # noqa: PLC0415

        if self.integrated or (self._frame is not None and self._frame.nbytes >= nbytes):
            return
        stream.synchronize()
        if self._frame is not None:
            self._frame.close()
            self._frame = None
        self._generation += 1
        self._frame = DeviceBuffer(nbytes)

    def fill(
        self, image: npt.NDArray[np.uint8], dst_ptr: int, stream: Stream, batch_index: int = 0
    ) -> Letterbox:
        """Enqueue upload + letterbox of ``image`` (HxWx3 BGR) on ``stream``; returns at once.

        The caller makes ``stream`` wait for the previous readers of ``dst_ptr`` first.
        """
        lb = self.stage(image, stream)
        self.enqueue(dst_ptr, stream, batch_index)
        return lb

    def stage(self, image: npt.NDArray[np.uint8], stream: Stream) -> Letterbox:
        """Copy ``image`` (HxWx3 BGR) into the pinned staging buffer; the host half of
        ``fill``. ``stream`` is synchronized only when a larger frame needs a new buffer."""
        h, w = int(image.shape[0]), int(image.shape[1])
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"GPU letterbox takes HxWx3 uint8 BGR, got {image.shape} {image.dtype}"
            )
        nbytes = h * w * 3
        pinned = self._frames.get(image.ctypes.data) if image.flags.c_contiguous else None
        self._ensure_frame(nbytes, stream)
        if pinned is not None and pinned.nbytes == nbytes:
            self._src = pinned
        else:
            self._ensure_staging(nbytes, stream)
            assert self._staging is not None
            np.copyto(self._staging.array[:nbytes].reshape(h, w, 3), image)
            self._src = self._staging
            self.copies += 1
        self._size = (w, h)
        return self.kernel.geometry(w, h)

    @property
    def staged_key(self) -> tuple[int, int, int, int]:
        """Width and height of the staged frame, the generation of the staging buffers, and
        the address the frame is uploaded from."""
        src = 0 if self._src is None else self._src.ptr
        return (*self._size, self._generation, src)

    def enqueue(self, dst_ptr: int, stream: Stream, batch_index: int = 0) -> None:
        """The GPU half of ``fill``: upload the staged frame (not on integrated GPUs) and
        letterbox it into ``dst_ptr``."""
        staged = self._src
        assert staged is not None, "stage() a frame first"
        if self.integrated:
            src = staged.device_ptr  # mapped memory: the kernel reads it in place
        else:
            assert self._frame is not None
            self.copy_staged(self._frame, stream)
            src = self._frame.ptr
        w, h = self._size
        self.kernel.run(src, w, h, dst_ptr, batch_index, stream)

    @property
    def staged_size(self) -> tuple[int, int]:
        """(width, height) of the staged frame."""
        return self._size

    def copy_staged(self, dst: DeviceBuffer, stream: Stream) -> None:
        """Enqueue the copy of the staged frame into ``dst`` (a batched launch's row buffer)."""
        staged = self._src
        assert staged is not None, "stage() a frame first"
        w, h = self._size
        if self.integrated:  # mapped memory: a device-side copy
            stream.copy_dtod(dst.ptr, staged.device_ptr, w * h * 3)
        else:
            stream.copy_htod(dst, staged, w * h * 3)

    def _release_frame(self) -> None:
        if self._frame is not None:
            self._frame.close()
            self._frame = None
        if self._staging is not None:
            self._staging.close()
            self._staging = None

    def close(self) -> None:
        self._release_frame()
        self.kernel.close()


class DeviceDecode(Closing):
    """The decode kernel of one engine, with overflow accounting."""

    def __init__(
        self,
        name: str,
        module: Module,
        output: tuple[tuple[int, ...], np.dtype[Any]],
        num_classes: int,
        kpt_shape: tuple[int, int] | None,
        conf: float,
        classes: npt.NDArray[np.intp] | None,
        capacity: int,
        nms: tuple[float, int] | None = None,
    ) -> None:
        from edgeyolo.gpu.decode import GpuDecoder  # noqa: PLC0415

        shape, dtype = output
        nk = 0 if kpt_shape is None else kpt_shape[0] * kpt_shape[1]
        self.kpt_shape = kpt_shape
        kdims = 1 if kpt_shape is None else kpt_shape[1]
        self.decoder: GpuDecoder = GpuDecoder(
            module,
            dtype,
            anchors=int(shape[2]),
            num_classes=num_classes,
            nk=nk,
            conf=conf,
            classes=classes,
            capacity=capacity,
            first_copy=min(capacity, 512),
            batch=int(shape[0]),
            nms=None if nms is None else (nms[0], nms[1], kdims),
        )
        self.name = name
        self.overflows = 0  # frames whose candidates exceeded the capacity
        self.extra_copies = 0  # frames that needed a second copy (more than first_copy)
        self._logged_at = -OVERFLOW_LOG_S
        self._log = structlog.get_logger().bind(engine=name)

    def enqueue(self, raw_ptr: int, stream: Stream, images: int = 1, params_ptr: int = 0) -> None:
        """Decode the first ``images`` images of the output at ``raw_ptr`` (one per frame);
        with ``params_ptr`` (their letterboxes, ``letterbox_params``) NMS runs on the GPU too."""
        self.decoder.enqueue(raw_ptr, stream, images, params_ptr)

    def after_wait(self, stream: Stream) -> str:
        """What the finished frame needs next: 'done', 'rest' (copy enqueued) or 'overflow'."""
        counts = self.decoder.counts()
        if int(counts.max()) > self.decoder.capacity:
            self.overflows += 1
            now = time.monotonic()
            if now - self._logged_at >= OVERFLOW_LOG_S:
                self._logged_at = now
                self._log.warning(
                    "gpu decode overflow: frame decoded on the CPU from the full output",
                    candidates=int(counts.max()),
                    capacity=self.decoder.capacity,
                    overflows=self.overflows,
                    hint="raise tensorrt.gpu.decode_capacity or the model's conf",
                )
            return "overflow"
        if self.decoder.enqueue_rest(stream):
            self.extra_copies += 1
            return "rest"
        return "done"

    def candidates(self, b: int = 0) -> Candidates | Detections:
        """Image ``b``'s detections when NMS ran on the GPU, else its candidates."""
        if self.decoder.nms_done[b]:
            return self.decoder.detections(b, self.kpt_shape)
        return self.decoder.candidates(b)

    def close(self) -> None:
        self.decoder.close()
