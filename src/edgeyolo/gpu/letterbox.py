"""The GPU letterbox: its tables, a numpy model of its arithmetic, and the launcher.

``resize_tables`` computes, per output column and row, the two source indices and their 11-bit
fixed-point weights exactly as OpenCV's ``cv::resize`` (INTER_LINEAR, 8-bit) does:
``f = float((d + 0.5) * (1 / (dst / src)) - 0.5)``, ``s = floor(f)``, weights
``round((1 - f) * 2048)``, ``round(f * 2048)``; columns outside the image are clamped to the
edge with weights (2048, 0), rows keep their weights and clamp only the indices.
``value_table`` maps a byte to the input value (``byte / 255`` in the input's dtype, with the
padding ``114 / 255`` at index 256) with the very numpy operations of the CPU path.

``reference_letterbox`` runs the kernel's arithmetic in numpy: CI checks it against the CPU
``Preprocessor`` (which uses cv2.resize) with no GPU, and the GPU test checks the kernel
against both. ``GpuLetterbox`` launches ``letterbox.cu`` for one input spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from edgeyolo.closing import Closing
from edgeyolo.frames import Letterbox

if TYPE_CHECKING:
    from edgeyolo.gpu.memory import DeviceBuffer
    from edgeyolo.gpu.nvrtc import KernelArgs, Module
    from edgeyolo.gpu.runtime import Stream

PAD_VALUE = 114
COEF_SCALE = 2048  # OpenCV's INTER_RESIZE_COEF_SCALE = 1 << 11
BLOCK = (32, 8, 1)


def axis_table(src: int, dst: int, clamp_weights: bool) -> npt.NDArray[np.int32]:
    """``dst`` x 4 int32: first index, second index, first weight, second weight."""
    scale = 1.0 / (dst / src)  # OpenCV: scale = 1 / inv_scale, inv_scale = dst / src
    d = np.arange(dst, dtype=np.float64)
    f = ((d + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.int64)
    f -= s.astype(np.float32)
    if clamp_weights:  # the x axis: outside the image, take the edge pixel whole
        low = s < 0
        f[low], s[low] = 0, 0
        high = s >= src - 1
        f[high], s[high] = 0, src - 1
    # saturate_cast<short>(float) rounds half to even, as np.rint does.
    w1 = np.rint(f * np.float32(COEF_SCALE)).astype(np.int64)
    w0 = np.rint((np.float32(1) - f) * np.float32(COEF_SCALE)).astype(np.int64)
    table = np.stack((np.clip(s, 0, src - 1), np.clip(s + 1, 0, src - 1), w0, w1), axis=1)
    return table.astype(np.int32)


def resize_tables(lb: Letterbox) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]]:
    """(xtab, ytab) for the kernel; xtab's indices are premultiplied by 3 (BGR bytes)."""
    xtab = axis_table(lb.src_w, lb.new_w, clamp_weights=True)
    xtab[:, :2] *= 3
    ytab = axis_table(lb.src_h, lb.new_h, clamp_weights=False)
    return xtab, ytab


def value_table(dtype: npt.DTypeLike) -> npt.NDArray[Any]:
    """257 input values: ``byte / 255`` for 0..255 and the padding at 256, in ``dtype``."""
    dt = np.dtype(dtype)
    lut = np.empty(257, dt)
    # The CPU path: np.divide(uint8 plane, dtype(255)) and out.fill(114 / 255.0).
    np.divide(np.arange(256, dtype=np.uint8), np.array(255.0, dt), out=lut[:256])
    lut[256] = PAD_VALUE / 255.0
    return lut


def resize_reference(image: npt.NDArray[np.uint8], lb: Letterbox) -> npt.NDArray[np.uint8]:
    """The kernel's resize in numpy: new_h x new_w x 3 BGR uint8."""
    xtab, ytab = resize_tables(lb)
    im = image.reshape(lb.src_h, lb.src_w * 3).astype(np.int64)
    cols = (xtab[:, :2, None] + np.arange(3)).reshape(-1, 2, 3)  # byte offsets per channel
    rows = im[:, cols[:, 0]] * xtab[:, 2, None] + im[:, cols[:, 1]] * xtab[:, 3, None]
    h0, h1 = rows[ytab[:, 0]], rows[ytab[:, 1]]  # new_h x new_w x 3
    v = (((h0 >> 4) * ytab[:, 2, None, None]) >> 16) + (((h1 >> 4) * ytab[:, 3, None, None]) >> 16)
    out: npt.NDArray[np.uint8] = np.clip((v + 2) >> 2, 0, 255).astype(np.uint8)
    return out


def reference_letterbox(
    image: npt.NDArray[np.uint8], lb: Letterbox, dtype: npt.DTypeLike
) -> npt.NDArray[Any]:
    """What the kernel writes for one image: 1 x 3 x dst_h x dst_w in ``dtype``."""
    lut = value_table(dtype)
    out = np.full((1, 3, lb.dst_h, lb.dst_w), lut[256], lut.dtype)
    resized = resize_reference(image, lb)
    y0, x0 = lb.pad_top, lb.pad_left
    out[0, :, y0 : y0 + lb.new_h, x0 : x0 + lb.new_w] = lut[resized[..., ::-1]].transpose(2, 0, 1)
    return out


@dataclass(slots=True)
class _Geometry:
    letterbox: Letterbox
    tables: DeviceBuffer  # xtab then ytab, int4 each


class GpuLetterbox(Closing):
    """Launches the letterbox kernel for one input spec (dtype, dst size) into device buffers.

    ``run`` enqueues the kernel on ``stream``: source frame (device, or mapped host pointer),
    its size, the destination input buffer and the batch index. Tables are made once per source
    size (uploaded synchronously: sizes rarely change) and kept.
    """

    def __init__(self, module: Module, dtype: npt.DTypeLike, dst_w: int, dst_h: int) -> None:
        from edgeyolo.gpu.memory import DeviceBuffer  # noqa: PLC0415

        dt = np.dtype(dtype)
        if dt not in (np.dtype(np.float32), np.dtype(np.float16)):
            raise ValueError(f"GPU letterbox writes float32 or float16 inputs, not {dt}")
        self.dtype = dt
        self.dst_w, self.dst_h = dst_w, dst_h
        self._kernel = module.kernel("letterbox_f32" if dt == np.float32 else "letterbox_f16")
        lut = value_table(dt)
        self._lut = DeviceBuffer(lut.nbytes)
        self._geometries: dict[tuple[int, int], _Geometry] = {}
        self._args: KernelArgs | None = None
        self._arg_key: tuple[int, int, int, int, int] | None = None
        try:
            _upload(self._lut, lut)
        except BaseException:
            self._lut.close()
            raise

    def geometry(self, src_w: int, src_h: int) -> Letterbox:
        """The letterbox of a source of this size (its tables uploaded on first use)."""
        geo = self._geometries.get((src_w, src_h))
        if geo is None:
            from edgeyolo.gpu.memory import DeviceBuffer  # noqa: PLC0415

            lb = Letterbox.fit(src_w, src_h, self.dst_w, self.dst_h)
            xtab, ytab = resize_tables(lb)
            both = np.concatenate((xtab.ravel(), ytab.ravel()))
            buf = DeviceBuffer(both.nbytes)
            try:
                _upload(buf, both)
            except BaseException:
                buf.close()
                raise
            geo = _Geometry(lb, buf)
            self._geometries[(src_w, src_h)] = geo
        return geo.letterbox

    def run(
        self, src_ptr: int, src_w: int, src_h: int, dst_ptr: int, batch_index: int, stream: Stream
    ) -> Letterbox:
        """Enqueue the kernel: frame at ``src_ptr`` (packed BGR) -> input at ``dst_ptr``."""
        import ctypes  # noqa: PLC0415

        from edgeyolo.gpu.nvrtc import KernelArgs  # noqa: PLC0415

        lb = self.geometry(src_w, src_h)
        key = (src_ptr, src_w, src_h, dst_ptr, batch_index)
        if self._args is None or self._arg_key != key:
            tables = self._geometries[(src_w, src_h)].tables.ptr
            p, i = ctypes.c_void_p, ctypes.c_int
            self._args = KernelArgs(
                (src_ptr, p),
                (src_w * 3, i),
                (tables, p),
                (tables + lb.new_w * 16, p),
                (self._lut.ptr, p),
                (dst_ptr, p),
                (self.dst_w, i),
                (self.dst_h, i),
                (lb.new_w, i),
                (lb.new_h, i),
                (lb.pad_left, i),
                (lb.pad_top, i),
                (batch_index, i),
            )
            self._arg_key = key
        grid = (-(-self.dst_w // BLOCK[0]), -(-self.dst_h // BLOCK[1]), 1)
        self._kernel.launch(grid, BLOCK, self._args, stream)
        return lb

    def close(self) -> None:
        for geo in self._geometries.values():
            geo.tables.close()
        self._geometries.clear()
        self._lut.close()


def _upload(dst: DeviceBuffer, array: npt.NDArray[Any]) -> None:
    """Synchronous host-to-device copy of a small table (set-up only)."""
    from edgeyolo.gpu.errors import check, driver  # noqa: PLC0415

    data = np.ascontiguousarray(array)
    check(driver().cuMemcpyHtoD(dst.handle, data.ctypes.data, data.nbytes), "cuMemcpyHtoD")
