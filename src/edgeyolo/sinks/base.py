"""The sink protocol: where events go."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from edgeyolo.events import Event


@runtime_checkable
class Sink(Protocol):
    """Receives events from every camera's pipeline.

    ``emit`` is called on the event loop for every event and must not block it: a sink that
    does I/O buffers in a bounded queue of its own and says what it drops when full.
    """

    async def start(self) -> None:
        """Connect or open; called once before the first event."""
        ...

    async def emit(self, event: Event) -> None:
        """Take one event."""
        ...

    async def close(self) -> None:
        """Flush what is buffered (within the caller's time limit) and release resources."""
        ...
