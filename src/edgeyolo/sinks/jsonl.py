"""JSON-lines sink: one event per line on stdout or appended to a file."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING

from edgeyolo.errors import ConfigError

if TYPE_CHECKING:
    from edgeyolo.events import Event


class JsonlSink:
    """Writes each event as one compact JSON line and flushes it (lines are small and few)."""

    def __init__(self, path: str = "-", *, stats: bool = False) -> None:
        self._path = path
        self._stats = stats
        self._fh: IO[str] | None = None
        self._owned = False

    async def start(self) -> None:
        if self._path == "-":
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
        if event.type == "stats" and not self._stats:
            return
        self._fh.write(json.dumps(event.to_dict(), separators=(",", ":")) + "\n")
        self._fh.flush()

    async def close(self) -> None:
        if self._fh is not None and self._owned:
            self._fh.close()
        self._fh = None
