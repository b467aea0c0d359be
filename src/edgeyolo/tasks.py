"""A small task group for Python 3.10 (``asyncio.TaskGroup`` arrived in 3.11).

    async with TaskGroup() as tg:
        tg.start(reader(), name="reader")
        writer = tg.start(writer(), name="writer")
        await writer

Every task started in the group ends before ``async with`` does, so none is orphaned:

* When the body leaves the block (normally or with an error), the tasks still running are
  cancelled and awaited. Unlike ``asyncio.TaskGroup``, the group does not wait for them to
  finish by themselves: a body that wants a task's result awaits it.
* When a task fails (raises anything but ``CancelledError``), the other tasks and the body
  are cancelled, and once all have ended the block raises that first error. Later errors of
  tasks being cancelled are dropped (the first one is the cause; Python 3.10 has no
  ``ExceptionGroup``). A task that ends by being cancelled is not a failure.
* An error raised by the body itself, before any task failed, propagates as it is.
* If the task running the block is cancelled from outside, the tasks are cancelled and
  awaited, and ``CancelledError`` propagates.

Await a child's task directly (``await writer``) only inside the block: after a failure the
body is cancelled there and the group raises the task's error instead.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Coroutine
    from types import TracebackType

    from typing_extensions import Self

T = TypeVar("T")


class TaskGroup:
    """Starts tasks tied to an ``async with`` block; see the module docstring."""

    def __init__(self) -> None:
        # Insertion-ordered; a task leaves once its outcome was looked at.
        self._tasks: dict[asyncio.Task[Any], None] = {}
        self._parent: asyncio.Task[Any] | None = None
        self._error: BaseException | None = None
        self._cancelled_parent = False
        self._exiting = False
        self._closed = False

    async def __aenter__(self) -> Self:
        if self._parent is not None or self._closed:
            raise RuntimeError("a TaskGroup is entered once")
        self._parent = asyncio.current_task()
        if self._parent is None:
            raise RuntimeError("TaskGroup needs to run inside a task")
        return self

    def start(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
        """Run ``coro`` as a task of this group and return the task."""
        if self._parent is None or self._exiting or self._closed:
            coro.close()  # never awaited: close it so Python does not warn about it
            raise RuntimeError("TaskGroup.start outside its 'async with' block")
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks[task] = None
        task.add_done_callback(self._on_done)
        return task

    def cancel(self) -> None:
        """Cancel every task of the group that is still running (the body goes on)."""
        for t in self._tasks:
            if not t.done():
                t.cancel()

    def _on_done(self, task: asyncio.Task[Any]) -> None:
        # Called as the task's done callback, and by __aexit__ for tasks that ended before
        # their callback ran: whichever comes first looks at the outcome.
        if task not in self._tasks:
            return
        del self._tasks[task]
        if task.cancelled():
            return
        exc = task.exception()  # also marks it retrieved: asyncio does not log it again
        if exc is None or self._error is not None:
            return
        self._error = exc
        self.cancel()
        if not self._exiting and self._parent is not None and not self._parent.done():
            self._cancelled_parent = True
            self._parent.cancel()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self._exiting = True
        body_failed = exc is not None and not isinstance(exc, asyncio.CancelledError)
        # A task that failed before the body did is the cause; after, it is a consequence.
        task_first = self._error is not None or not body_failed
        cancelled_outside = False
        pending = {t for t in self._tasks if not t.done()}
        for t in pending:
            t.cancel()
        while pending:
            try:
                _, pending = await asyncio.wait(pending)
            except asyncio.CancelledError:
                # Cancelled while waiting for the tasks: they still end first.
                cancelled_outside = True
                for t in pending:
                    t.cancel()
        for t in list(self._tasks):
            self._on_done(t)
        self._closed = True
        if self._cancelled_parent:
            self._uncancel()
        if self._error is not None and task_first:
            raise self._error
        if cancelled_outside:
            raise asyncio.CancelledError
        return False  # the body's own error, or CancelledError from outside, propagates

    def _uncancel(self) -> None:
        # Python 3.11+ counts cancel requests; take back the one the group made, so code
        # after the block (asyncio.timeout, wait_for) sees only cancellations from outside.
        uncancel = getattr(self._parent, "uncancel", None)
        if uncancel is not None:
            uncancel()
