"""Thin, typed wrappers over the CUDA driver API (cuda-python), imported lazily.

Nothing here touches CUDA at import time: ``cuda.bindings`` is loaded on first use by
``driver()``. Every resource (context, stream, event, buffers) is an object with ``close()``
and context-manager use; owners release them in reverse order of creation, never in
``__del__``. All calls are made on the thread that created the ``CudaContext``.
"""

from __future__ import annotations

from edgeyolo.gpu.errors import CudaError, check, driver
from edgeyolo.gpu.memory import DeviceBuffer, PinnedBuffer
from edgeyolo.gpu.runtime import CudaContext, Event, Stream
from edgeyolo.gpu.wait import CallbackWaiter, PollWaiter, Waiter, make_waiter, wait

__all__ = [
    "CallbackWaiter",
    "CudaContext",
    "CudaError",
    "DeviceBuffer",
    "Event",
    "PinnedBuffer",
    "PollWaiter",
    "Stream",
    "Waiter",
    "check",
    "driver",
    "make_waiter",
    "wait",
]
