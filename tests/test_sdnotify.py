"""sd_notify against a real AF_UNIX datagram socket standing in for systemd's."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from typing import TYPE_CHECKING

import pytest

from edgeyolo.sdnotify import SystemdNotifier, run_watchdog, watchdog_period

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket and the NOTIFY_SOCKET value that points at it."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    yield sock, str(path)
    sock.close()


def recv(sock: socket.socket) -> list[str]:
    """One message as its lines."""
    return sock.recv(4096).decode().split("\n")


def test_messages_reach_a_path_socket(listener: tuple[socket.socket, str]) -> None:
    """READY, STATUS, WATCHDOG, RELOADING, STOPPING and EXTEND_TIMEOUT arrive as sent."""
    sock, path = listener
    with SystemdNotifier.from_env({"NOTIFY_SOCKET": path}) as n:
        assert n.enabled
        assert n.ready("2 cameras, 4 engines")
        assert recv(sock) == ["READY=1", "STATUS=2 cameras, 4 engines"]
        assert n.status("running\n 14.9 fps")
        assert recv(sock) == ["STATUS=running 14.9 fps"]
        assert n.watchdog()
        assert recv(sock) == ["WATCHDOG=1"]
        assert n.reloading()
        lines = recv(sock)
        assert lines[0] == "RELOADING=1"
        assert lines[1].startswith("MONOTONIC_USEC=")
        assert int(lines[1].split("=")[1]) > 0
        assert n.extend_timeout(90)
        assert recv(sock) == ["EXTEND_TIMEOUT_USEC=90000000"]
        assert n.stopping("shutting down")
        assert recv(sock) == ["STOPPING=1", "STATUS=shutting down"]
        with pytest.raises(ValueError, match="KEY=VALUE"):
            n.notify("READY")


def test_abstract_socket() -> None:
    """A NOTIFY_SOCKET starting with '@' addresses Linux's abstract namespace."""
    name = f"edgeyolo-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        with SystemdNotifier.from_env({"NOTIFY_SOCKET": "@" + name}) as n:
            assert n.ready()
            assert recv(sock) == ["READY=1"]
    finally:
        sock.close()


def test_noop_without_socket_and_survives_a_gone_listener(tmp_path: Path) -> None:
    """Unset, empty or unsupported NOTIFY_SOCKET is a no-op; a missing listener is not fatal."""
    for env in ({}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "vsock:2:1234"}):
        n = SystemdNotifier.from_env(env)
        assert not n.enabled
        assert not n.ready()
        n.close()
    with SystemdNotifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "nobody.sock")}) as n:
        assert n.enabled
        assert not n.watchdog()
        assert not n.watchdog()


def test_unset_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """unset_environment keeps children from inheriting NOTIFY_SOCKET."""
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "x.sock"))
    n = SystemdNotifier.from_env(unset_environment=True)
    assert n.enabled
    assert "NOTIFY_SOCKET" not in os.environ


def test_watchdog_period() -> None:
    """Half of WATCHDOG_USEC, only for this process."""
    pid = str(os.getpid())
    assert watchdog_period({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_period({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": pid}) == 15.0
    assert watchdog_period({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_period({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_period({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_period({}) is None


def test_run_watchdog_pings_only_while_alive(listener: tuple[socket.socket, str]) -> None:
    """Pings flow while alive() is True and stop while it is False."""
    sock, path = listener
    sock.setblocking(False)
    alive = [True]

    def drain() -> int:
        count = 0
        while True:
            try:
                assert sock.recv(64) == b"WATCHDOG=1"
            except BlockingIOError:
                return count
            count += 1

    async def main() -> tuple[int, int, int]:
        with SystemdNotifier(path) as n:
            task = asyncio.ensure_future(run_watchdog(n, 0.02, lambda: alive[0]))
            await asyncio.sleep(0.2)
            first = drain()
            alive[0] = False
            await asyncio.sleep(0.05)
            drain()
            await asyncio.sleep(0.2)
            withheld = drain()
            alive[0] = True
            await asyncio.sleep(0.2)
            resumed = drain()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        return first, withheld, resumed

    first, withheld, resumed = asyncio.run(main())
    assert first >= 3
    assert withheld == 0
    assert resumed >= 3
