"""JSON-lines sink: one event per line on stdout or appended to a file."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING

import structlog

from edgeyolo.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable

    from edgeyolo.events import Event

_log = structlog.get_logger("edgeyolo.sinks.jsonl")


class JsonlSink:
    """Writes each event as one compact JSON line and flushes it (lines are small and few)."""

    def __init__(
        self,
        path: str = "-",
        *,
        stats: bool = False,
        on_stdout_closed: Callable[[], None] | None = None,
    ) -> None:
        self._path = path
        self._stats = stats
        self._fh: IO[str] | None = None
        self._owned = False
        self._on_stdout_closed = on_stdout_closed
        self._reader_gone = False

    async def start(self) -> None:
        if self._path == "-":
            if sys.stdout is None:  # started with stdout closed (`>&-`)
                raise ConfigError(
                    "sinks.jsonl.path '-': stdout is closed; give a file, or set "
                    "sinks.jsonl.enabled: false"
                )
            self._fh = sys.stdout
        else:
            # Opening a local file once at start-up; not worth an executor hop.
            try:
                self._fh = Path(self._path).open("a", encoding="utf-8")  # noqa: SIM115, ASYNC230
            except OSError as exc:
                raise ConfigError(
                    f"sinks.jsonl.path {self._path!r}: cannot open for appending: "
                    f"{exc.strerror or exc}"
                ) from None
            self._owned = True

    async def emit(self, event: Event) -> None:
        if self._fh is None:
            raise RuntimeError("JsonlSink.emit() before start()")
        if (event.type == "stats" and not self._stats) or self._reader_gone:
            return
        try:
            self._fh.write(json.dumps(event.to_dict(), separators=(",", ":")) + "\n")
            self._fh.flush()
        except BrokenPipeError:
            if self._owned:
                raise
            self._stdout_closed(self._fh)

    def _stdout_closed(self, fh: IO[str]) -> None:
        """stdout's reader went away (``edgeyolo run | head``): like any Unix filter, stop
        writing, and stop the service when it was told how, instead of failing the camera."""
        self._reader_gone = True
        # What is still buffered would raise again when Python flushes stdout at exit.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fh.fileno())
            os.close(devnull)
        stopping = self._on_stdout_closed is not None
        _log.info("stdout closed by its reader", stopping=stopping)
        if self._on_stdout_closed is not None:
            self._on_stdout_closed()

    async def close(self) -> None:
        if self._fh is not None and self._owned:
            self._fh.close()
        self._fh = None
