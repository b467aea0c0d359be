"""The waits' scheduling logic on the CPU, with a clock-driven stand-in for a CUDA event.

CUDA itself is tested in test_gpu.py on a GPU; here only what the waiters decide (when to
sleep, how the GPU-time estimate moves) is checked, which needs no driver: ``PollWaiter``
only calls ``event.query()`` and reads ``stream.ptr``.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from edgeyolo.gpu.errors import CudaError
from edgeyolo.gpu.wait import PollWaiter


class ClockEvent:
    """Completes ``after`` seconds after ``record()``, as a recorded CUDA event would."""

    def __init__(self, after: float) -> None:
        self.after = after
        self.done_at = 0.0
        self.queries = 0

    def record(self) -> None:
        self.done_at = time.perf_counter() + self.after

    def query(self) -> bool:
        self.queries += 1
        return time.perf_counter() >= self.done_at


class OneStream:
    ptr = 1


def test_overslept_estimate_shrinks_instead_of_feeding_on_itself():
    """After one slow wait, the per-stream estimate falls back to the real GPU time.

    Regression: an estimate learned from "time until noticed" grew by its own timer sleeps
    (95 ms waits for 1.5 ms of GPU work on the H100).
    """
    waiter = PollWaiter()
    stream = OneStream()

    async def main() -> list[float]:
        estimates = []
        slow = ClockEvent(0.080)  # e.g. a first frame that paid for cuDNN/graph set-up
        slow.record()
        await waiter.wait(slow, stream)
        estimates.append(waiter._estimates[stream.ptr])
        for _ in range(8):
            ev = ClockEvent(0.003)
            ev.record()
            await waiter.wait(ev, stream)
            estimates.append(waiter._estimates[stream.ptr])
        return estimates

    estimates = asyncio.run(main())
    assert estimates[0] >= 0.03  # learned from the slow wait (halved: it was noticed late)
    assert estimates[-1] < 0.02  # far from the 80 ms it started at


def test_wait_yields_to_other_tasks():
    """Other tasks run while a wait polls: the loop is never blocked by it."""

    async def main() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        ev = ClockEvent(0.02)
        ev.record()
        await PollWaiter().wait(ev, OneStream())
        task.cancel()
        return ticks

    assert asyncio.run(main()) > 10


def test_wait_gives_up_with_a_cuda_error():
    """Work that never finishes ends in a CudaError naming the timeout, not a hang."""
    ev = ClockEvent(3600)
    ev.record()
    with pytest.raises(CudaError, match="not done after"):
        asyncio.run(PollWaiter(timeout_s=0.05).wait(ev, OneStream()))
