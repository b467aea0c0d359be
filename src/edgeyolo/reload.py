"""SIGHUP reloads: the new config is validated before anything of the running one is torn
down, and reloads asked for while one is in progress are coalesced.

Everything ``check-config`` checks: the file (UTF-8, YAML, every key), the files it names
(models, labels, videos, TLS files, the JSON-lines path) and every .onnx model opened and
checked against its entry (a detect model configured as pose, a truncated file). Runs in an
executor thread: opening models takes a while, and the running service keeps going.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from edgeyolo.config import load_config
from edgeyolo.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable

    from edgeyolo.config import Config

_log = structlog.get_logger("edgeyolo.app")


def validate_reload(
    path: Path, overrides: Callable[[Config], Config] | None
) -> tuple[Config | None, str | None]:
    """``(config, None)`` when ``path`` is good to run, else ``(None, why)``."""
    from edgeyolo.engines.check import model_problems  # noqa: PLC0415 - loads ONNX Runtime

    try:
        new = load_config(path)
        if overrides is not None:
            new = overrides(new)
    except ConfigError as exc:
        return None, str(exc)
    problems = model_problems(new)
    if problems:
        return None, f"{path}: " + "; ".join(problems)
    return new, None


def fingerprint(cfg: Config) -> tuple[object, ...]:
    """What a reload compares: the config and the size and time of each model and labels
    file (a model replaced on disk under the same name is a change too)."""
    files: list[tuple[str, int, int]] = []
    for m in cfg.models:
        for p in (m.path, m.labels if isinstance(m.labels, Path) else None):
            if p is None:
                continue
            try:
                st = p.stat()
            except OSError:
                files.append((str(p), -1, -1))
            else:
                files.append((str(p), st.st_size, st.st_mtime_ns))
    return (cfg, tuple(files))


class Reloader:
    """Turns SIGHUPs into at most one validation at a time and a restart only for a change.

    A SIGHUP while a validation runs is coalesced into one more validation after it; a
    valid config that is the same as the running one (same file contents, same model
    files) restarts nothing, so SIGHUPs during start-up or a restart cost nothing.
    ``restart(new)`` restarts the service with ``new``; ``count(result)`` counts
    ``accepted`` and ``rejected`` reloads.
    """

    def __init__(
        self,
        path: Path | None,
        overrides: Callable[[Config], Config] | None,
        running: Config,
        restart: Callable[[Config], None],
        count: Callable[[str], None],
    ) -> None:
        self._path = path
        self._overrides = overrides
        self._running = fingerprint(running)
        self._restart = restart
        self._count = count
        self._task: asyncio.Task[None] | None = None
        self._again = False

    def request(self) -> None:
        """A SIGHUP: validate the file (in the background) and restart if it changed."""
        if self._path is None:
            _log.warning("SIGHUP ignored: this run has no config file to reload")
        elif self._task is not None:
            self._again = True  # one more read once the one in progress is done
        else:
            self._task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        """Cancel a validation in progress."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        try:
            while True:
                self._again = False
                await self._once()
                if not self._again:
                    return
        finally:
            self._task = None

    async def _once(self) -> None:
        path = self._path
        assert path is not None
        loop = asyncio.get_running_loop()
        new, error = await loop.run_in_executor(None, validate_reload, path, self._overrides)
        if new is None:
            self._count("rejected")
            _log.error(
                "config reload rejected; keeping the running config", path=str(path), error=error
            )
            return
        latest = await loop.run_in_executor(None, fingerprint, new)
        if latest == self._running:
            _log.info("config reload: nothing changed; keeping the running config", path=str(path))
            return
        self._running = latest  # a second SIGHUP for the same change restarts nothing more
        self._count("accepted")
        _log.info("config reload accepted; restarting", path=str(path))
        self._restart(new)
