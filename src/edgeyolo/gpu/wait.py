"""Awaiting CUDA work from asyncio without blocking the event loop.

Two ways to learn that the GPU finished, behind one ``Waiter`` interface:

- ``PollWaiter`` queries the event (``cuEventQuery``, about a microsecond) and yields to the
  loop between queries: a few zero-sleeps first, then, when the caller knows roughly how long
  the work takes, one timer sleep until shortly before the expected end, then zero-sleeps for
  a bounded spin window, then timer sleeps that back off to ``max_sleep_s``. asyncio's timers
  are millisecond-granular (epoll), so the spin window is what keeps the added latency far
  under a millisecond, and it is also where the loop spends CPU.
- ``CallbackWaiter`` enqueues a host function after the event (``cuLaunchHostFunc``); the
  driver calls it on its own thread when the stream reaches it, and it wakes the loop with
  ``call_soon_threadsafe``. The loop spends no CPU while waiting, but the wake-up needs the GIL
  and a self-pipe write, and the host function holds back later work on that stream until it
  has returned (it does almost nothing, so this is short).

Neither ever synchronizes a stream or an event on the loop thread.
"""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import time
from typing import TYPE_CHECKING, Any, Literal, Protocol

from edgeyolo.gpu.errors import CudaError, driver

if TYPE_CHECKING:
    from edgeyolo.gpu.runtime import Event, Stream

WaitKind = Literal["poll", "callback"]

# Timer sleeps shorter than this are not worth scheduling: epoll rounds them up to 1 ms.
_TIMER_RESOLUTION_S = 0.001


class Waiter(Protocol):
    """Awaits an event that was just recorded on ``stream``."""

    async def wait(self, event: Event, stream: Stream, expected_s: float | None = None) -> None:
        """Return once ``event`` completed; ``expected_s`` is a hint of the remaining time."""
        ...

    def close(self) -> None: ...


class PollWaiter:
    """Polls ``cuEventQuery``, yielding to the loop between polls (see the module docstring).

    Without an ``expected_s`` hint it keeps its own estimate per stream: the time to
    completion when a poll caught the moment precisely (during the zero-sleeps or the spin),
    halved when the event was already done after a timer sleep (we overslept by an unknown
    amount), so an estimate that is too long shrinks at once instead of feeding on itself.
    """

    def __init__(
        self,
        *,
        yields: int = 3,
        spin_s: float = 0.003,
        max_sleep_s: float = 0.002,
        timeout_s: float = 30.0,
    ) -> None:
        self.yields = yields
        self.spin_s = spin_s
        self.max_sleep_s = max_sleep_s
        self.timeout_s = timeout_s
        self._estimates: dict[int, float] = {}

    async def wait(self, event: Event, stream: Stream, expected_s: float | None = None) -> None:
        """Return once ``event`` (recorded on ``stream``) completed."""
        hint = expected_s if expected_s is not None else self._estimates.get(stream.ptr)
        start = time.perf_counter()
        precise = await self.poll(event, hint)
        took = time.perf_counter() - start
        old = self._estimates.get(stream.ptr)
        if precise:
            self._estimates[stream.ptr] = took if old is None else 0.5 * (old + took)
        else:
            self._estimates[stream.ptr] = 0.5 * min(took, old if old is not None else took)

    async def poll(self, event: Event, expected_s: float | None = None) -> bool:
        """Return once ``event`` completed, raising ``CudaError`` after ``timeout_s``.

        Returns True when the completion was caught within a zero-sleep or spin step (so
        the time taken is a good estimate for the next wait), False after a timer sleep.
        """
        for _ in range(self.yields):
            if event.query():
                return True
            await asyncio.sleep(0)
        start = time.perf_counter()
        if expected_s is not None and expected_s > 2 * _TIMER_RESOLUTION_S:
            # Sleep on a timer until shortly before the work should end; the spin covers
            # the timer's millisecond rounding and the estimate's error.
            await asyncio.sleep(expected_s - 1.5 * _TIMER_RESOLUTION_S)
            if event.query():
                return False
        spin_end = time.perf_counter() + self.spin_s
        while time.perf_counter() < spin_end:
            if event.query():
                return True
            await asyncio.sleep(0)
        delay = _TIMER_RESOLUTION_S / 2
        while not event.query():
            if time.perf_counter() - start > self.timeout_s:
                raise CudaError(
                    "cuEventQuery", "TIMEOUT", -1, f"GPU work not done after {self.timeout_s} s"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_sleep_s)
        return False

    def close(self) -> None:
        """Nothing to release."""


class CallbackWaiter:
    """Wakes the loop from a host function that the stream runs after the event.

    ``close()`` only after every stream it waited on is idle: the driver may still call the
    host function until then, and the C callback must stay alive for it.
    """

    def __init__(self, timeout_s: float = 30.0) -> None:
        self._drv = driver()
        self.timeout_s = timeout_s
        self._pending: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = {}
        self._tokens = itertools.count(1)
        # Keep the ctypes thunk referenced for as long as the driver may call it.
        self._thunk = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(self._on_host)
        address = ctypes.cast(self._thunk, ctypes.c_void_p).value
        self._fn = self._drv.CUhostFn(address)

    def _on_host(self, user_data: int | None) -> None:
        # Runs on a CUDA driver thread: no CUDA calls here, only hand over to the loop.
        entry = self._pending.pop(int(user_data or 0), None)
        if entry is not None:
            loop, fut = entry
            loop.call_soon_threadsafe(_resolve, fut)

    async def wait(self, event: Event, stream: Stream, expected_s: float | None = None) -> None:
        """Return once the stream passed ``event``; raise ``CudaError`` after ``timeout_s``."""
        del expected_s
        if event.query():
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        token = next(self._tokens)
        self._pending[token] = (loop, fut)
        try:
            stream.launch_host_func(self._fn, token)
            await asyncio.wait_for(asyncio.shield(fut), self.timeout_s)
        except asyncio.TimeoutError as exc:
            raise CudaError(
                "cuLaunchHostFunc", "TIMEOUT", -1, f"no callback after {self.timeout_s} s"
            ) from exc
        finally:
            self._pending.pop(token, None)

    def close(self) -> None:
        """Forget pending waits (their streams must be idle by now)."""
        self._pending.clear()


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def make_waiter(kind: WaitKind) -> PollWaiter | CallbackWaiter:
    """The waiter for ``TensorRTConfig.wait``."""
    if kind == "poll":
        return PollWaiter()
    if kind == "callback":
        return CallbackWaiter()
    raise ValueError(f"unknown wait kind '{kind}'; expected 'poll' or 'callback'")


async def wait(event: Event, expected_s: float | None = None, **options: Any) -> None:
    """Await ``event`` by polling (``PollWaiter`` with ``options``), never blocking the loop."""
    await PollWaiter(**options).poll(event, expected_s)
