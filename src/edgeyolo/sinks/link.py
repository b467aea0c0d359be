"""The connection to the MQTT broker: the only module that imports aiomqtt.

It publishes messages from an :class:`~edgeyolo.sinks.outbox.Outbox` and knows nothing about
events (the sink, ``sinks/mqtt.py``, turns events into messages):

* aiomqtt 2.x does not reconnect in place: :meth:`Link.run` leaves the client context on an
  error and enters a fresh client after a capped, jittered backoff, logging every attempt
  once, with a hint for the usual causes (credentials, reachability, TLS).
* Each connection publishes the caller's greeting first (availability, discovery), makes the
  subscriptions, calls ``on_connect`` (the sink re-queues every current state), then runs a
  reader and a writer in one task group: whichever fails ends the connection.
* The writer keeps up to ``_BATCH`` publishes in flight and removes a message from the
  outbox only once the broker took it; on :meth:`Link.close` it drains the outbox, publishes
  the farewell and disconnects cleanly (a clean DISCONNECT does not trigger the will).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from typing import TYPE_CHECKING, Any

import aiomqtt
import structlog

from edgeyolo.errors import ConfigError
from edgeyolo.tasks import TaskGroup

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from edgeyolo.config.mqtt import MqttConfig
    from edgeyolo.sinks.embedded_broker import EmbeddedBroker
    from edgeyolo.sinks.outbox import Message, Outbox, OutboxKey

MqttError = aiomqtt.MqttError
"""What a failed broker operation raises (re-exported: only this module imports aiomqtt)."""

_BATCH = 64  # messages in flight at once: pipelines QoS 1 round trips on slow links
# A connection that ends this soon after it opened, this many times in a row: the broker is
# closing it on purpose, almost always for another client with the same client id.
_SHORT_SESSION_S = 5.0
_KICKED_AFTER = 3
# Connect attempts this soon after a lost connection get the "connection lost" hint, not
# "is the broker running?": it was there a moment ago (a paused process that resumed may
# need a few attempts while its broker drops the stale session).
_RECENT_LOSS_S = 30.0


def tls_context(config: MqttConfig) -> ssl.SSLContext:
    """The TLS context ``sinks.mqtt.tls`` asks for; ConfigError naming the files if unusable."""
    tls = config.tls
    try:
        ctx = ssl.create_default_context(cafile=str(tls.ca) if tls and tls.ca else None)
        if tls and tls.cert and tls.key:
            ctx.load_cert_chain(str(tls.cert), str(tls.key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"sinks.mqtt.tls: cannot load the TLS files ({tls!r}): {exc}") from exc
    if tls is not None and tls.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def display_url(config: MqttConfig) -> str:
    """The configured broker as subscribers may use it (user name, never the password)."""
    url = config.broker
    if url is None:
        return ""
    return url.model_copy(update={"username": url.username or config.username}).display()


def client(
    config: MqttConfig,
    *,
    embedded: EmbeddedBroker | None = None,
    tls: ssl.SSLContext | None = None,
    will: Message | None = None,
    admin: bool = False,
) -> aiomqtt.Client:
    """A new, not yet connected client for the configured broker (or ``embedded``).

    ``admin``: another client id (a running service is not kicked off the broker) and no
    will (its going away says nothing about the service).
    """
    url = config.broker
    if url is None:
        if embedded is None:
            raise ConfigError("sinks.mqtt.url is 'embedded' but no embedded broker runs")
        host, port, username, secret = "127.0.0.1", embedded.port, config.username, config.password
    else:
        host, port = url.host, url.port
        username = url.username or config.username
        secret = url.password or config.password
    if tls is None and config.is_tls:
        tls = tls_context(config)
    c = aiomqtt.Client(
        host,
        port,
        # paho logs each socket error at ERROR through it; the link logs every failure
        # itself (with a hint), so the library's copy would only say it twice.
        logger=_quiet_logger(),
        username=username,
        password=None if secret is None else secret.get_secret_value(),
        identifier=config.resolved_client_id() + ("-admin" if admin else ""),
        will=None
        if admin or will is None
        else aiomqtt.Will(will.topic, will.payload, will.qos, will.retain),
        keepalive=config.keepalive_s,
        timeout=10.0,
        tls_context=tls,
    )
    # The writer keeps up to _BATCH publishes in flight on purpose; aiomqtt warns above 10.
    c.pending_calls_threshold = _BATCH + 8
    return c


class Link:
    """Keeps a connection to the broker and publishes ``outbox`` through it; see the module.

    ``greeting()``: messages published (in order, awaited) right after each connect, before
    anything queued. ``subscriptions``: topic filter -> handler of ``(payload, retained)``.
    ``farewell``: published after the outbox drained on close. ``will``: the last will.
    """

    def __init__(
        self,
        config: MqttConfig,
        outbox: Outbox,
        *,
        embedded: EmbeddedBroker | None = None,
        will: Message | None = None,
        greeting: Callable[[], Sequence[Message]] = list,
        subscriptions: Mapping[str, Callable[[bytes, bool], None]] | None = None,
        on_connect: Callable[[], None] = lambda: None,
        farewell: Message | None = None,
    ) -> None:
        self.config = config
        self._outbox = outbox
        self._embedded = embedded
        self._will = will
        self._greeting = greeting
        self._subscriptions = dict(subscriptions or {})
        self._on_connect = on_connect
        self._farewell = farewell
        self._tls = tls_context(config) if config.is_tls else None
        self._display = display_url(config)
        self._log = structlog.get_logger("edgeyolo.mqtt")
        self._closing = asyncio.Event()
        self.connected = False
        """True while a connection is up."""
        self.reconnects = 0
        """Connections made after the first one."""
        self.published = 0
        """Messages the broker took (outbox messages and the farewell)."""
        self.down_since: float | None = time.monotonic()
        """``time.monotonic()`` since when there is no connection; None while connected."""
        self.refused = 0
        """Messages the client refused (a topic too long, say): dropped, not retried."""
        self._ever_connected = False
        self._short_sessions = 0
        self._kick_logged = False

    @property
    def url(self) -> str:
        """The broker as subscribers may use it (no password)."""
        return self._embedded.url if self._embedded is not None else self._display

    def close(self) -> None:
        """Stop reconnecting; the running connection drains the outbox, says farewell and
        disconnects, then :meth:`run` returns."""
        self._closing.set()
        self._outbox.wake()

    async def run(self) -> None:
        """Connect, publish, reconnect on errors; return after :meth:`close` (never raises for
        a broker that is away: an unreachable broker is retried, never fatal)."""
        loop = asyncio.get_running_loop()
        previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(self._loop_exception)
        try:
            await self._connect_loop()
        finally:
            loop.set_exception_handler(previous_handler)

    async def _connect_loop(self) -> None:
        attempt = 0
        while not self._closing.is_set():
            attempt += 1
            # A fresh client per attempt: aiomqtt 2.x does not reconnect in place, and a new
            # paho client carries no half-sent state from the lost connection.
            c = client(self.config, embedded=self._embedded, tls=self._tls, will=self._will)
            opened = None
            try:
                async with c:
                    opened = time.monotonic()
                    self._up()
                    self._log.info(
                        "mqtt connected",
                        url=self.url,
                        attempt=attempt,
                        reconnects=self.reconnects,
                        outbox=len(self._outbox),
                    )
                    await self._session(c)
                    return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                lost = self.connected
                self._down()
                if self._closing.is_set():
                    return
                if lost:
                    self._log.warning("mqtt connection lost", error=describe(exc))
                    # Back off again only when the broker keeps closing it at once.
                    attempt = self._after_lost(opened, attempt)
                delay = self.backoff(attempt)
                recent_loss = (
                    self._ever_connected
                    and self.down_since is not None
                    and time.monotonic() - self.down_since < _RECENT_LOSS_S
                )
                self._log.error(
                    "mqtt connect failed" if not lost else "mqtt reconnecting",
                    url=self.url,
                    attempt=attempt,
                    error=describe(exc),
                    hint=hint(exc, lost=lost or recent_loss, tls=self._tls is not None),
                    retry_in_s=round(delay, 2),
                    outbox=len(self._outbox),
                )
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), delay)
            finally:
                self._down()

    def _after_lost(self, opened: float | None, attempt: int) -> int:
        """Count short sessions; the attempt number the next backoff uses."""
        if opened is None or time.monotonic() - opened >= _SHORT_SESSION_S:
            self._short_sessions = 0
            return 1
        self._short_sessions += 1
        if self._short_sessions >= _KICKED_AFTER and not self._kick_logged:
            self._kick_logged = True
            self._log.error(
                "mqtt: the broker keeps closing the connection right after it opens; another "
                "client is using the same client id (two edgeyolo services with the same "
                "device id?)",
                client_id=self.config.resolved_client_id(),
                device_id=self.config.resolved_device_id(),
                short_sessions=self._short_sessions,
                fix="give each service its own sinks.mqtt.device_id (or client_id)",
            )
        return attempt + 1

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # aiomqtt schedules add_reader/add_writer for its socket with call_soon_threadsafe;
        # when the connection died meanwhile (a paused process resumed, say) the call hits a
        # closed descriptor and asyncio would print a traceback. The link reconnects anyway.
        handle = repr(context.get("handle", ""))
        if isinstance(context.get("exception"), (KeyError, OSError, ValueError)) and any(
            f"{verb}_{kind}" in handle
            for verb in ("add", "remove")
            for kind in ("reader", "writer")
        ):
            self._log.debug("mqtt: socket callback after the socket closed", handle=handle)
            return
        loop.default_exception_handler(context)

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before connect attempt ``attempt`` (1, 2, ...) is retried."""
        b = self.config.backoff
        cap = min(b.max_s, b.initial_s * 2.0 ** min(attempt - 1, 30))
        # "Equal jitter": never below half the step, so a flapping broker is not hammered.
        return cap / 2 + random.uniform(0, cap / 2)

    def _up(self) -> None:
        self.connected = True
        self.down_since = None
        if self._ever_connected:
            self.reconnects += 1
        self._ever_connected = True

    def _down(self) -> None:
        if self.connected or self.down_since is None:
            self.down_since = time.monotonic()
        self.connected = False

    async def _session(self, c: aiomqtt.Client) -> None:
        """One connection: greet, then publish the outbox until closing or an error."""
        for msg in self._greeting():
            try:
                await c.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain)
            except (ValueError, TypeError) as exc:  # refused by the client: see _refuse
                self._refused(msg, exc)
        for topic in self._subscriptions:
            await c.subscribe(topic, qos=1)
        self._on_connect()
        async with TaskGroup() as tg:
            tg.start(self._reader(c), name="mqtt-reader")
            await tg.start(self._writer(c), name="mqtt-writer")
        # Closing and the outbox is drained: say goodbye before a clean DISCONNECT.
        if self._farewell is not None:
            m = self._farewell
            await c.publish(m.topic, m.payload, qos=m.qos, retain=m.retain)
            self.published += 1

    async def _reader(self, c: aiomqtt.Client) -> None:
        """Hand subscribed messages to their handlers; ends with an error when the link drops."""
        async for msg in c.messages:
            # Received payloads are bytes; the other types aiomqtt allows are for publishing.
            data = bytes(msg.payload) if isinstance(msg.payload, (bytes, bytearray)) else b""
            for topic_filter, handler in self._subscriptions.items():
                if msg.topic.matches(topic_filter):
                    handler(data, msg.retain)
        raise aiomqtt.MqttError("connection closed")

    async def _writer(self, c: aiomqtt.Client) -> None:
        """Publish the outbox in order; return once drained while closing."""
        while True:
            batch = self._outbox.peek(_BATCH)
            if not batch:
                if self._closing.is_set():
                    return
                await self._outbox.wait()
                continue
            results = await asyncio.gather(
                *(c.publish(m.topic, m.payload, qos=m.qos, retain=m.retain) for _, m in batch),
                return_exceptions=True,
            )
            error: BaseException | None = None
            for (key, msg), result in zip(batch, results, strict=True):
                if isinstance(result, (ValueError, TypeError)):
                    self._refuse(key, msg, result)
                elif isinstance(result, BaseException):
                    error = error or result
                else:
                    self._outbox.ack(key, msg)
                    self.published += 1
            if error is not None:
                raise error

    def _refuse(self, key: OutboxKey, msg: Message, exc: BaseException) -> None:
        # The client will never send this one (paho checks topics before sending): retrying
        # it would block everything queued behind it. Dropped, counted, logged.
        self._outbox.ack(key, msg)
        self._outbox.dropped += 1
        self._refused(msg, exc)

    def _refused(self, msg: Message, exc: BaseException) -> None:
        self.refused += 1
        self._log.error(
            "mqtt message refused by the client; dropped",
            topic=msg.topic[:120] + ("..." if len(msg.topic) > 120 else ""),
            topic_bytes=len(msg.topic.encode()),
            error=describe(exc),
            refused_total=self.refused,
        )


async def clear_retained(
    config: MqttConfig,
    topics: Sequence[str],
    *,
    found_under: str | None,
    timeout: float,
    matching: Sequence[tuple[str, Callable[[bytes], bool]]] = (),
) -> list[str]:
    """Publish an empty retained message to each of ``topics`` and, with ``found_under`` (a
    topic filter), to every topic the broker holds a retained message for under it; for each
    ``(filter, accept)`` of ``matching``, to the retained topics under it whose payload
    ``accept`` takes.

    Uses an admin client (see :func:`client`). Returns the topics cleared; raises
    :data:`MqttError` when the broker cannot be reached or does not acknowledge in time.
    """
    cleared = list(topics)
    wanted = list(matching)
    if found_under is not None:
        wanted.append((found_under, lambda _payload: True))
    async with client(config, admin=True) as c:
        for pattern, accept in wanted:
            found = await _retained_under(c, pattern, accept)
            cleared += [t for t in found if t not in cleared]
        for topic in cleared:
            await c.publish(topic, b"", qos=1, retain=True, timeout=timeout)
    return cleared


async def _retained_under(
    c: aiomqtt.Client, pattern: str, accept: Callable[[bytes], bool]
) -> list[str]:
    await c.subscribe(pattern, qos=1)
    found: list[str] = []

    async def collect() -> None:
        async for msg in c.messages:
            payload = msg.payload
            # A late message of an earlier filter may still be queued: match this one.
            if not (msg.retain and msg.topic.matches(pattern) and isinstance(payload, bytes)):
                continue
            if payload and accept(payload):
                found.append(str(msg.topic))

    # Retained messages arrive right after the subscribe; a second is plenty.
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(collect(), 1.0)
    await c.unsubscribe(pattern)
    return sorted(set(found))


def _quiet_logger() -> logging.Logger:
    log = logging.getLogger("edgeyolo.mqtt.client")
    log.setLevel(logging.CRITICAL)
    return log


def describe(exc: BaseException) -> str:
    """``Type: message`` of a broker error, for log lines."""
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


_CREDENTIALS = (
    "the broker refused the credentials: check sinks.mqtt.username/password or --mqtt-url"
)
_TLS_FILES = "TLS failed: check sinks.mqtt.tls (ca, cert, key) and the broker's certificate"
_NOT_TLS = (
    "the broker may not speak TLS on this port: mqtts:// needs a TLS listener (usually 8883); "
    "for plain MQTT use mqtt:// (usually 1883)"
)
_LOST = (
    "the connection was lost (network, a broker restart, or this process was paused); reconnecting"
)
_UNREACHABLE = "is the broker running and reachable at this host and port?"


def hint(exc: BaseException, *, lost: bool = False, tls: bool = False) -> str | None:
    """What to check for a broker error, when the message says enough to tell.

    ``lost``: the connection was up and went away (the broker was there: no "is it
    running?"); ``tls``: the url is mqtts://.
    """
    text = f"{type(exc).__name__} {exc}".lower()
    rules: list[tuple[bool, str]] = [
        (any(s in text for s in ("authori", "password", "bad user")), _CREDENTIALS),
        ("certificate" in text or "verify" in text, _TLS_FILES),
        (
            tls and any(s in text for s in ("reset by peer", "wrong version", "eof", "record")),
            _NOT_TLS,
        ),
        (lost, _LOST),
        (any(s in text for s in ("refused", "unreachable", "timed out", "name")), _UNREACHABLE),
        ("ssl" in text or "tls" in text, _TLS_FILES),
    ]
    return next((why for matched, why in rules if matched), None)
