"""SIGINT, SIGTERM and SIGHUP for ``edgeyolo run``, handled from the first moment to the last.

Python's default for SIGHUP is to end the process, and asyncio's ``add_signal_handler``
covers only the time one event loop runs: a SIGHUP during start-up (imports, loading
models) or while a reload restarts the service used to kill it with status 129 and no log
line. :class:`SignalRelay` is installed as the CLI starts ``run`` and stays until it returns.
While a service's loop is attached, each signal goes to it (its own handler runs in the
loop); while none is (start-up, the restart of a reload, after the loop), signals are kept
and handed to the next loop that attaches, once per kind: several SIGHUPs in a row become
one reload, a SIGTERM stops the next service as soon as its loop runs.

It uses ``signal.signal`` with a wakeup file descriptor (a socket pair the attached loop
reads), not ``loop.add_signal_handler``: closing a loop resets the handlers that one
installed to the default, which would reopen the window this class closes.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class SignalRelay:
    """Catches SIGINT/SIGTERM/SIGHUP for the whole process and relays them to a loop."""

    def __init__(self) -> None:
        self._previous: dict[signal.Signals, Any] = {}
        self._pending: list[signal.Signals] = []
        # The attached loop and the handler it runs for each signal.
        self._target: tuple[asyncio.AbstractEventLoop, Callable[[signal.Signals], None]] | None = (
            None
        )
        self._rsock: socket.socket | None = None
        self._wsock: socket.socket | None = None
        self._old_wakeup = -1

    @property
    def installed(self) -> bool:
        """Whether the handlers are in place."""
        return bool(self._previous)

    def install(self) -> None:
        """Install the handlers; a second call, or a call off the main thread (where Python
        cannot set handlers), does nothing."""
        if self._previous or threading.current_thread() is not threading.main_thread():
            return
        self._rsock, self._wsock = socket.socketpair()
        self._rsock.setblocking(False)
        self._wsock.setblocking(False)
        # The C-level handler writes to this socket, which wakes an attached loop at once
        # even when the signal lands on a worker thread.
        self._old_wakeup = signal.set_wakeup_fd(self._wsock.fileno(), warn_on_full_buffer=False)
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def restore(self) -> None:
        """Put the previous handlers back (pending signals are dropped)."""
        if not self._previous:
            return
        for sig, old in self._previous.items():
            signal.signal(sig, old)
        self._previous.clear()
        signal.set_wakeup_fd(self._old_wakeup)
        for s in (self._rsock, self._wsock):
            if s is not None:
                s.close()
        self._rsock = self._wsock = None
        self._pending.clear()

    def attach(
        self, loop: asyncio.AbstractEventLoop, handler: Callable[[signal.Signals], None]
    ) -> None:
        """Relay signals to ``handler`` in ``loop``; those kept meanwhile are handed over now."""
        self._target = (loop, handler)
        if self._rsock is not None:
            loop.add_reader(self._rsock.fileno(), self._drain)
        kept = list(dict.fromkeys(self._pending))
        self._pending.clear()
        for sig in kept:
            loop.call_soon(handler, sig)

    def detach(self) -> None:
        """Stop relaying to the attached loop; signals are kept until the next ``attach``."""
        target, self._target = self._target, None
        if target is not None and self._rsock is not None:
            with contextlib.suppress(Exception):  # the loop may already be closing
                target[0].remove_reader(self._rsock.fileno())

    def _drain(self) -> None:
        assert self._rsock is not None
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while self._rsock.recv(64):
                pass

    def _on_signal(self, signum: int, _frame: object) -> None:
        sig = signal.Signals(signum)
        target = self._target
        if target is None:
            self._pending.append(sig)
            return
        loop, handler = target
        try:
            loop.call_soon_threadsafe(handler, sig)
        except RuntimeError:  # the loop closed between detach and here
            self._pending.append(sig)
