"""The batch dispatcher's timing rules (``BatchQueue``), on the asyncio loop.

The engine call is an ``asyncio.sleep`` of a set length: the rules are about when a batch
starts and what goes into it, whatever runs it. The real engines and models go through the
same dispatcher in test_batching.py and (on a GPU) test_tensorrt_graph.py. Times are long
(hundreds of ms) so a loaded 2-core box keeps the order of events.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from edgeyolo.batching import BatchQueue


@dataclass(eq=False)
class Req:
    name: str
    future: asyncio.Future[float]
    submitted_ns: int = field(default_factory=time.perf_counter_ns)


class SleepQueue(BatchQueue[Req]):
    """A batch 'runs' for ``call_s``; each request's result is the ms it waited."""

    def __init__(self, max_batch: int, timeout_ms: float, call_s: float, cameras: int) -> None:
        super().__init__(max_batch, timeout_ms, "test")
        self.call_s, self.cameras = call_s, cameras
        self.batches: list[list[str]] = []

    @property
    def target(self) -> int:
        return min(self.max_batch, self.cameras)

    def submit(self, name: str) -> asyncio.Future[float]:
        req = Req(name, asyncio.get_running_loop().create_future())
        self._queue(req)
        return req.future

    async def _run(self, batch: list[Req]) -> None:
        start = time.perf_counter_ns()
        self.batches.append([r.name for r in batch])
        await asyncio.sleep(self.call_s)
        for r in batch:
            r.future.set_result((start - r.submitted_ns) / 1e6)


def test_frame_arriving_during_a_short_call_waits_its_own_timeout():
    """Paced cameras in different phases: B arrives during A's call (shorter than the
    timeout) and waits the timeout from its arrival, not the call's rest plus the timeout."""
    timeout_ms, call_s = 300.0, 0.2

    async def main() -> tuple[float, list[list[str]]]:
        q = SleepQueue(max_batch=4, timeout_ms=timeout_ms, call_s=call_s, cameras=4)
        a = q.submit("a")  # alone: runs after the timeout, for 0.2 s
        await asyncio.sleep(timeout_ms / 1e3 + 0.05)  # 50 ms into A's call
        b = q.submit("b")
        await a
        waited_b = await b
        q.close()
        return waited_b, q.batches

    waited_b, batches = asyncio.run(main())
    assert batches == [["a"], ["b"]]
    # Its own timeout (300 ms); the old rule gave the call's remaining 150 ms on top.
    assert timeout_ms * 0.9 <= waited_b < timeout_ms + 100, waited_b


def test_frame_held_up_by_a_long_call_gives_that_calls_cameras_time_to_rejoin():
    """Engine-bound: B's timeout runs out while the long call of A and C runs; when it ends
    B waits (at most the timeout) for A and C, which come back a moment after their results,
    and the three go together instead of settling into B alone, then A + C, and so on."""
    timeout_ms, call_s = 200.0, 0.5

    async def camera(q: SleepQueue, name: str, frames: int, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        for _ in range(frames):
            await q.submit(name)
            await asyncio.sleep(0.02)  # decode, read the next frame

    async def main() -> list[list[str]]:
        q = SleepQueue(max_batch=3, timeout_ms=timeout_ms, call_s=call_s, cameras=3)
        await asyncio.gather(
            camera(q, "a", 3, 0.0), camera(q, "c", 3, 0.0), camera(q, "b", 3, 0.25)
        )
        q.close()
        return q.batches

    batches = asyncio.run(main())
    # A and C go after the timeout (B is late); B arrives 50 ms into their 500 ms call. From
    # then on every batch has all three cameras.
    assert sorted(batches[0]) == ["a", "c"]
    assert [sorted(b) for b in batches[1:3]] == [["a", "b", "c"]] * 2, batches
