"""The MQTT sink's outbox: a bounded, ordered queue of messages waiting for the broker.

A message leaves the outbox only once the broker took it (``ack`` after PUBACK for QoS 1),
so a connection lost mid-publish re-sends it after reconnecting. No MQTT library here: the
link (``sinks/link.py``) reads the outbox, the sink (``sinks/mqtt.py``) fills it.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import OrderedDict
from dataclasses import dataclass

OutboxKey = tuple[str, object]
"""Where a message sits in the outbox; hand it back to ``Outbox.ack``."""


@dataclass(frozen=True, slots=True)
class Message:
    """One MQTT publish waiting in the outbox."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    state: bool = False
    """State messages keep only their newest version under the 'latest_state' policy."""


class Outbox:
    """A bounded, ordered queue of messages for the broker.

    ``latest_state``: a state message replaces the queued one of the same topic (moved to the
    end), so state cannot be lost while the bound holds; when full, the oldest non-state
    message (event, stream) is dropped, else the oldest state. ``drop_oldest``: one FIFO,
    the oldest message is dropped when full. Drops are counted in ``dropped``.
    """

    def __init__(self, size: int, policy: str = "latest_state") -> None:
        self.size = size
        self.policy = policy
        self.dropped = 0
        self._items: OrderedDict[OutboxKey, Message] = OrderedDict()
        self._seq = itertools.count()
        self._event = asyncio.Event()
        self._woken = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, msg: Message) -> None:
        """Queue ``msg``, dropping per the policy if the outbox is full. Never blocks."""
        if msg.state and self.policy == "latest_state":
            key: OutboxKey = ("s", msg.topic)
            self._items.pop(key, None)
        else:
            key = ("e", next(self._seq))
        self._items[key] = msg
        while len(self._items) > self.size:
            self._drop_one()
        self._event.set()

    def _drop_one(self) -> None:
        if self.policy == "latest_state":
            for key in self._items:
                if key[0] == "e":
                    del self._items[key]
                    self.dropped += 1
                    return
        self._items.popitem(last=False)
        self.dropped += 1

    def peek(self, n: int) -> list[tuple[OutboxKey, Message]]:
        """The ``n`` oldest messages, left in place until acknowledged."""
        return list(itertools.islice(self._items.items(), n))

    def ack(self, key: OutboxKey, msg: Message) -> None:
        """Remove a published message, unless a newer state replaced it meanwhile."""
        if self._items.get(key) is msg:
            del self._items[key]

    def wake(self) -> None:
        """Make a pending ``wait`` return even if empty (used on close)."""
        self._woken = True
        self._event.set()

    async def wait(self) -> None:
        """Return when there is something to send, or after ``wake``."""
        while not self._items and not self._woken:
            self._event.clear()
            await self._event.wait()
