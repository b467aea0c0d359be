"""``Closing``: context-manager use for any resource with an explicit ``close()``.

Resources (CUDA streams and buffers, sockets) are released by their owner calling
``close()``, in reverse order of creation, never in ``__del__``; ``with`` is the short form.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self


class Closing:
    """Mixin: ``with obj:`` calls ``obj.close()`` on exit."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
