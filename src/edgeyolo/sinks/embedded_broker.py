"""An in-process MQTT broker on 127.0.0.1, so the demo and a fresh install need no service.

Backed by amqtt (pure Python, asyncio, MIT; Requires-Python >=3.10, classifiers 3.10-3.14).
It runs on the caller's event loop. For production use a real broker (mosquitto): this one
keeps nothing across restarts and listens on loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from typing_extensions import Self

_log = structlog.get_logger("edgeyolo.embedded_broker")
HOST = "127.0.0.1"


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


class EmbeddedBroker:
    """amqtt's broker bound to 127.0.0.1, anonymous access; ``async with`` or start/stop."""

    def __init__(self, port: int = 1883) -> None:
        self._wanted = port
        self.port = port
        self._broker: Any = None

    @property
    def url(self) -> str:
        """What subscribers connect to."""
        return f"mqtt://{HOST}:{self.port}"

    async def start(self) -> None:
        """Listen on the configured port, or on a free one when it is taken (logged)."""
        # Imported here: only the embedded case pays for amqtt's import time.
        from amqtt.broker import Broker  # type: ignore[import-untyped]  # noqa: PLC0415

        port = self._wanted
        if port == 0 or not _port_free(port):
            port = free_port()
            if self._wanted:
                _log.warning(
                    "embedded broker port taken, using another",
                    wanted=self._wanted,
                    port=port,
                )
        # amqtt logs every connection at INFO through the standard logging module; our own
        # log lines already say what matters.
        logging.getLogger("amqtt").setLevel(logging.WARNING)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{HOST}:{port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            },
        }
        broker = Broker(config)
        await broker.start()
        self._broker = broker
        self.port = port
        _log.info("embedded broker started", url=self.url)

    async def stop(self, timeout: float = 3.0) -> None:
        """Close every connection and the listener, within ``timeout`` seconds."""
        broker, self._broker = self._broker, None
        if broker is None:
            return
        try:
            await asyncio.wait_for(broker.shutdown(), timeout)
        except asyncio.TimeoutError:
            # amqtt 0.12's shutdown can wait forever on a connected client's reader task;
            # close the listener ourselves so the port is free, and move on.
            _log.warning("embedded broker shutdown timed out", timeout_s=timeout, url=self.url)
            for server in getattr(broker, "_servers", {}).values():
                with contextlib.suppress(Exception):
                    server.instance.close()
        _log.info("embedded broker stopped", url=self.url)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
