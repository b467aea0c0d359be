"""systemd's notify protocol (sd_notify), spoken directly over ``$NOTIFY_SOCKET``.

The protocol is one datagram of newline-separated ``KEY=VALUE`` lines sent to an AF_UNIX
socket whose path is in ``$NOTIFY_SOCKET`` (a leading ``@`` means Linux's abstract
namespace). That is small enough not to need a library. Outside systemd (no
``$NOTIFY_SOCKET``) every call is a no-op, so the service calls it unconditionally.

With ``Type=notify`` and ``WatchdogSec=`` in the unit, the service sends ``READY=1`` once its
cameras and engines run, ``WATCHDOG=1`` at least every ``watchdog_period()`` seconds while it
is alive, ``STATUS=...`` lines that ``systemctl status`` shows, and ``STOPPING=1`` when it
begins to shut down.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import TYPE_CHECKING

import structlog

from edgeyolo.closing import Closing

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping


def _address(value: str) -> str | None:
    if value.startswith("@"):
        # Abstract namespace: the name is the rest, after a NUL byte instead of the '@'.
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # e.g. systemd 254's vsock: addresses, which this does not speak


class SystemdNotifier(Closing):
    """Sends notify messages to systemd; does nothing when ``address`` is None.

    Build it with ``SystemdNotifier.from_env()``. Sending never raises: a failed send is
    logged once per kind of error, because a service must not die for its supervisor's sake.
    """

    def __init__(self, address: str | None) -> None:
        self._address = address
        self._sock: socket.socket | None = None
        self._warned: set[str] = set()
        self._log = structlog.get_logger("edgeyolo.sdnotify")

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, unset_environment: bool = False
    ) -> SystemdNotifier:
        """A notifier for ``$NOTIFY_SOCKET`` (disabled when unset, empty or unusable).

        ``unset_environment`` removes ``NOTIFY_SOCKET`` from ``os.environ`` so that child
        processes (a broker, a GStreamer helper) do not talk to systemd for us.
        """
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        address = _address(raw) if raw else None
        if unset_environment:
            os.environ.pop("NOTIFY_SOCKET", None)
        notifier = cls(address)
        if raw and address is None:
            notifier._log.warning("unsupported NOTIFY_SOCKET address, not notifying", value=raw)
        return notifier

    @property
    def enabled(self) -> bool:
        """Whether messages go anywhere."""
        return self._address is not None

    def notify(self, *lines: str) -> bool:
        """Send ``KEY=VALUE`` lines as one message; True when sent (False when disabled)."""
        if self._address is None or not lines:
            return False
        for line in lines:
            if "=" not in line or "\n" in line:
                raise ValueError(f"sd_notify lines are KEY=VALUE without newlines, got {line!r}")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # systemd reads promptly; if its queue is ever full, drop a ping rather than
                # block the event loop.
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(lines).encode(), self._address)
        except OSError as exc:
            kind = type(exc).__name__
            if kind not in self._warned:
                self._warned.add(kind)
                self._log.warning("sd_notify send failed", error=str(exc), lines=list(lines))
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Tell systemd start-up finished (``Type=notify`` waits for this)."""
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        """A one-line status that ``systemctl status`` shows."""
        return self.notify(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        """Keep-alive ping for ``WatchdogSec=``."""
        return self.notify("WATCHDOG=1")

    def reloading(self) -> bool:
        """A reload (SIGHUP) started; send ``ready()`` when it finished."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown began."""
        return self.notify("STOPPING=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for ``seconds`` more before systemd gives up on start-up or shutdown.

        Useful while TensorRT builds engines, which can take minutes on a Jetson.
        """
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def close(self) -> None:
        """Close the socket (a later send opens a new one)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def watchdog_period(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings, or None when systemd's watchdog is off.

    Half of ``$WATCHDOG_USEC``, as sd_watchdog_enabled(3) recommends. None also when
    ``$WATCHDOG_PID`` names another process (the watchdog is meant for that one).
    """
    env = os.environ if environ is None else environ
    usec_text = env.get("WATCHDOG_USEC", "")
    if not usec_text.isdigit() or int(usec_text) == 0:
        return None
    pid_text = env.get("WATCHDOG_PID", "")
    if pid_text and (not pid_text.isdigit() or int(pid_text) != os.getpid()):
        return None
    return int(usec_text) / 1_000_000 / 2


async def run_watchdog(
    notifier: SystemdNotifier,
    period_s: float,
    alive: Callable[[], bool],
) -> None:
    """Ping the watchdog every ``period_s`` seconds while ``alive()`` says so; until cancelled.

    When ``alive()`` is False no ping is sent, so systemd restarts the service after
    ``WatchdogSec`` unless it recovers first. Because this runs on the event loop, a blocked
    loop stops the pings too, which is the main thing the watchdog catches.
    """
    log = structlog.get_logger("edgeyolo.sdnotify")
    missed = False
    while True:
        ok = alive()
        if ok:
            notifier.watchdog()
            if missed:
                log.info("watchdog pings resumed")
        elif not missed:
            log.warning("service not alive, withholding watchdog pings", period_s=period_s)
        missed = not ok
        await asyncio.sleep(period_s)
