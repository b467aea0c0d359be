"""The GPU decode: a numpy model of its arithmetic, and the launcher with its buffers.

Per image the kernel (``decode.cu``) keeps the anchors whose best class score is above
``conf`` (float32, strictly, as the CPU path compares) and whose class passes the filter, and
compacts them with an atomic counter into ``capacity`` records of ``7 + nk`` floats (anchor,
class, score, cx, cy, w, h, keypoint values). Only the counter and the first ``first_copy``
records come back with the frame's copy; a frame with more candidates gets one more copy of
the rest. A frame with more than ``capacity`` (overflow) is counted, and its engine copies the
whole output back so the CPU decode handles it: the result is then exactly the CPU path's
(highest-scoring candidates first, Ultralytics' MAX_NMS cap), at the cost of that frame's
full-size copy.

``reference_records`` is the kernel in numpy; ``to_candidates`` sorts records by anchor index,
which is the CPU path's candidate order, so NMS resolves score ties identically. With ``nms``
the NMS kernel (gpu/nms.py) runs after it on the device and only the kept rows come back.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from edgeyolo.closing import Closing
from edgeyolo.gpu.nms import NMS_THREADS, OUT_FIELDS, to_detections
from edgeyolo.postprocess.yolo import Candidates

if TYPE_CHECKING:
    from edgeyolo.gpu.nvrtc import KernelArgs, Module
    from edgeyolo.gpu.runtime import Stream
    from edgeyolo.postprocess.yolo import Detections

HEADER = 4  # floats before the records: the uint32 count, then 16-byte alignment
FIELDS = 7  # anchor, class, score, cx, cy, w, h
THREADS = 256


def class_mask(num_classes: int, classes: npt.NDArray[np.intp] | None) -> npt.NDArray[np.uint8]:
    """One byte per class: 1 where the class filter keeps it (all when there is no filter)."""
    if classes is None:
        return np.ones(num_classes, np.uint8)
    mask = np.zeros(num_classes, np.uint8)
    ids = np.asarray(classes, np.intp)
    mask[ids[(ids >= 0) & (ids < num_classes)]] = 1
    return mask


def reference_records(
    raw: npt.NDArray[np.floating],
    conf: float,
    num_classes: int,
    nk: int,
    classes: npt.NDArray[np.intp] | None = None,
) -> npt.NDArray[np.float32]:
    """The kernel's records for one image (``rows x N`` or ``1 x rows x N``), in anchor order."""
    if raw.ndim == 3:
        raw = raw[0]
    values = raw.astype(np.float32, copy=False)
    scores = values[4 : 4 + num_classes]
    best = scores.max(axis=0)
    cls = scores.argmax(axis=0)  # first maximum, as the kernel's strict '>' scan
    keep = (best > np.float32(conf)) & (class_mask(num_classes, classes)[cls] == 1)
    idx = np.flatnonzero(keep)
    rec = np.empty((idx.size, FIELDS + nk), np.float32)
    rec[:, 0] = idx
    rec[:, 1] = cls[idx]
    rec[:, 2] = best[idx]
    rec[:, 3:7] = values[:4, idx].T
    rec[:, 7:] = values[4 + num_classes :, idx].T
    return rec


def to_candidates(records: npt.NDArray[np.float32], nk: int) -> Candidates:
    """Records (any order) -> ``Candidates`` in anchor order."""
    order = np.argsort(records[:, 0], kind="stable")
    rec = records[order]
    return Candidates(
        anchors=rec[:, 0].astype(np.intp),
        box=np.ascontiguousarray(rec[:, 3:7].T),
        scores=np.ascontiguousarray(rec[:, 2]),
        class_ids=rec[:, 1].astype(np.int32),
        kpt_rows=np.ascontiguousarray(rec[:, FIELDS:].T) if nk else None,
    )


class GpuDecoder(Closing):
    """Device and pinned buffers plus the launch of the decode kernel for one engine output.

    Per frame: ``enqueue(raw_ptr, stream)`` zeroes the counters, launches the kernel and
    copies counters + the first records to pinned memory; after the stream's event completed,
    ``counts()`` says how many each image found, ``enqueue_rest`` copies the records beyond
    ``first_copy`` when there are any, and ``candidates(b)`` reads image ``b``'s.
    """

    def __init__(
        self,
        module: Module,
        dtype: npt.DTypeLike,
        anchors: int,
        num_classes: int,
        nk: int,
        conf: float,
        classes: npt.NDArray[np.intp] | None = None,
        capacity: int = 4096,
        first_copy: int = 512,
        batch: int = 1,
        nms: tuple[float, int, int] | None = None,
    ) -> None:
        from edgeyolo.gpu.errors import driver  # noqa: PLC0415
        from edgeyolo.gpu.memory import DeviceBuffer, PinnedBuffer  # noqa: PLC0415

        dt = np.dtype(dtype)
        if dt not in (np.dtype(np.float32), np.dtype(np.float16)):
            raise ValueError(f"GPU decode reads float32 or float16 outputs, not {dt}")
        if capacity < 1 or first_copy < 0:
            raise ValueError(f"capacity {capacity} must be >= 1 and first_copy {first_copy} >= 0")
        self._drv = driver()
        self.anchors, self.num_classes, self.nk, self.batch = anchors, num_classes, nk, batch
        self.capacity = capacity
        self.first_copy = min(first_copy, capacity)
        self.stride = FIELDS + nk
        self.image_floats = HEADER + capacity * self.stride
        self._kernel = module.kernel("decode_f32" if dt == np.float32 else "decode_f16")
        self._resources: list[Any] = []
        try:
            self._device = DeviceBuffer(batch * self.image_floats * 4)
            self._resources.append(self._device)
            self._host = PinnedBuffer((batch, self.image_floats), np.float32)
            self._resources.append(self._host)
            self._mask = None
            if classes is not None:
                mask = class_mask(num_classes, classes)
                self._mask = DeviceBuffer(mask.nbytes)
                self._resources.append(self._mask)
                from edgeyolo.gpu.letterbox import _upload  # noqa: PLC0415

                _upload(self._mask, mask)
        except BaseException:
            self.close()
            raise
        self._conf = float(np.float32(conf))
        self._args: KernelArgs | None = None
        self._raw_ptr = 0
        self._nms_on = False
        self.found = np.zeros(batch, np.int64)
        self.images = batch  # images of the last enqueue
        # NMS on the GPU too (iou, max_det, values per keypoint): per image the kept rows.
        self.nms = nms
        self._nms_kernel = module.kernel("nms_f32") if nms is not None else None
        self._nms_args: KernelArgs | None = None
        self._params_ptr = 0
        self.out_floats = HEADER + (0 if nms is None else nms[1]) * (OUT_FIELDS + nk)
        self.first_out = 0 if nms is None else min(nms[1], 64)
        self.nms_done = np.zeros(batch, bool)  # per image of the last enqueue
        if nms is not None:
            try:
                self._out = DeviceBuffer(batch * self.out_floats * 4)
                self._resources.append(self._out)
                self._out_host = PinnedBuffer((batch, self.out_floats), np.float32)
                self._resources.append(self._out_host)
            except BaseException:
                self.close()
                raise

    def enqueue(
        self, raw_ptr: int, stream: Stream, images: int | None = None, params_ptr: int = 0
    ) -> None:
        """Zero the counters, launch the kernel on ``raw_ptr``, copy counters + first records.

        ``images``: how many of the ``batch`` images the output holds this time (all: None).
        """
        from edgeyolo.gpu.errors import check  # noqa: PLC0415
        from edgeyolo.gpu.nvrtc import KernelArgs  # noqa: PLC0415

        if self._args is None or raw_ptr != self._raw_ptr:
            p, i = ctypes.c_void_p, ctypes.c_int
            self._args = KernelArgs(
                (raw_ptr, p),
                (self.anchors, i),
                (self.num_classes, i),
                (self.nk, i),
                (self._conf, ctypes.c_float),
                (0 if self._mask is None else self._mask.ptr, p),
                (self._device.ptr, p),
                (self.capacity, ctypes.c_uint),
                (self.image_floats, ctypes.c_longlong),
            )
            self._raw_ptr = raw_ptr
        n = self.batch if images is None else images
        if not 1 <= n <= self.batch:
            raise ValueError(f"{n} images for a decoder of batch {self.batch}")
        self.images = n
        pitch = self.image_floats * 4
        check(
            self._drv.cuMemsetD2D32Async(self._device.handle, pitch, 0, 1, n, stream.handle),
            "cuMemsetD2D32Async",
        )
        grid = (-(-self.anchors // THREADS), n, 1)
        self._kernel.launch(grid, (THREADS, 1, 1), self._args, stream)
        self._nms_on = self._nms_kernel is not None and params_ptr != 0
        if self._nms_on:
            # Only the counters of the candidates come back, and the kept rows.
            self._enqueue_nms(params_ptr, n, stream)
            for b in range(n):
                self._copy(b, 0, HEADER * 4, stream)
                self._copy_out(b, 0, (HEADER + self.first_out * (OUT_FIELDS + self.nk)) * 4, stream)
            return
        head = (HEADER + self.first_copy * self.stride) * 4
        for b in range(n):
            self._copy(b, 0, head, stream)

    def _enqueue_nms(self, params_ptr: int, n: int, stream: Stream) -> None:
        from edgeyolo.gpu.nvrtc import KernelArgs  # noqa: PLC0415
        from edgeyolo.postprocess.nms import threshold_f32  # noqa: PLC0415

        assert self.nms is not None
        assert self._nms_kernel is not None
        if self._nms_args is None or params_ptr != self._params_ptr:
            iou, max_det, kdims = self.nms
            p, i = ctypes.c_void_p, ctypes.c_int
            self._nms_args = KernelArgs(
                (self._device.ptr, p),
                (self.image_floats, ctypes.c_longlong),
                (self.capacity, ctypes.c_uint),
                (self.nk, i),
                (kdims, i),
                (self.num_classes, i),
                (float(threshold_f32(iou)), ctypes.c_float),
                (max_det, i),
                (params_ptr, p),
                (self._out.ptr, p),
                (self.out_floats, ctypes.c_longlong),
            )
            self._params_ptr = params_ptr
        self._nms_kernel.launch((n, 1, 1), (NMS_THREADS, 1, 1), self._nms_args, stream)

    def _copy_out(self, b: int, start: int, nbytes: int, stream: Stream) -> None:
        from edgeyolo.gpu.errors import check  # noqa: PLC0415

        offset = b * self.out_floats * 4 + start
        check(
            self._drv.cuMemcpyDtoHAsync(
                self._out_host.ptr + offset, self._out.ptr + offset, nbytes, stream.handle
            ),
            "cuMemcpyDtoHAsync",
        )

    def _copy(self, b: int, start: int, nbytes: int, stream: Stream) -> None:
        from edgeyolo.gpu.errors import check  # noqa: PLC0415

        offset = b * self.image_floats * 4 + start
        check(
            self._drv.cuMemcpyDtoHAsync(
                self._host.ptr + offset, self._device.ptr + offset, nbytes, stream.handle
            ),
            "cuMemcpyDtoHAsync",
        )

    def counts(self) -> npt.NDArray[np.int64]:
        """Candidates each image found in the last completed enqueue (may exceed capacity)."""
        n = self.images
        self.found[:n] = self._host.array[:n, 0].view(np.uint32)
        return self.found[:n]

    def enqueue_rest(self, stream: Stream) -> bool:
        """Copy what the first copy did not bring (images within capacity); True if any.

        Without the GPU NMS: the records past ``first_copy``. With it: the kept rows past
        ``first_out``, or, for an image the kernel left to the host (more than ``NMS_LIMIT``
        candidates), all of its records.
        """
        more = False
        counts = self.counts()
        if self._nms_on:
            row = OUT_FIELDS + self.nk
            for b, n in enumerate(counts):
                head = self._out_host.array[b, :2].view(np.uint32)
                self.nms_done[b] = bool(head[1])
                if n > self.capacity:
                    continue
                if not head[1]:
                    self._copy(b, HEADER * 4, int(n) * self.stride * 4, stream)
                    more = True
                elif head[0] > self.first_out:
                    start = (HEADER + self.first_out * row) * 4
                    self._copy_out(b, start, int(head[0] - self.first_out) * row * 4, stream)
                    more = True
            return more
        self.nms_done[: len(counts)] = False
        for b, n in enumerate(counts):
            if self.first_copy < n <= self.capacity:
                start = (HEADER + self.first_copy * self.stride) * 4
                self._copy(b, start, int(n - self.first_copy) * self.stride * 4, stream)
                more = True
        return more

    def detections(self, b: int, kpt_shape: tuple[int, int] | None) -> Detections:
        """Image ``b``'s detections from the GPU NMS (when ``nms_done[b]``)."""
        k = int(self._out_host.array[b, :1].view(np.uint32)[0])
        rows = self._out_host.array[b, HEADER : HEADER + k * (OUT_FIELDS + self.nk)]
        return to_detections(rows.reshape(k, OUT_FIELDS + self.nk), kpt_shape)

    def candidates(self, b: int = 0) -> Candidates:
        """Image ``b``'s candidates in anchor order (only when its count <= capacity)."""
        n = int(self.found[b])
        if n > self.capacity:
            raise RuntimeError(f"{n} candidates overflowed the capacity {self.capacity}")
        rec = self._host.array[b, HEADER : HEADER + n * self.stride].reshape(n, self.stride)
        return to_candidates(rec, self.nk)

    def close(self) -> None:
        for res in reversed(self._resources):
            res.close()
        self._resources.clear()
