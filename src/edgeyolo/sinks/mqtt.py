"""MQTT sink: state on change for Home Assistant and Node-RED, events, discovery, availability.

The only module that imports aiomqtt. One long-lived task owns the connection:

* ``emit`` (on the event loop, never blocking) derives messages from events and puts them
  into a bounded :class:`Outbox`; a message leaves the outbox only once the broker took it
  (PUBACK for QoS 1), so a connection lost mid-publish re-sends it after reconnecting.
* aiomqtt 2.x does not reconnect in place: the task leaves the client context on an error
  and enters a fresh client after a capped, jittered backoff, logging every attempt. After
  each (re)connect it publishes availability, discovery and every current state first, so a
  broker that restarted without persistence gets the latest state of every topic back.
* Counts and occupancy are state: published when they change (at most once per
  ``state_min_interval_s`` per topic, the latest value always following) and re-published
  every ``heartbeat_s``. The per-frame stream has its own topic and rate limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import random
import ssl
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import aiomqtt
import structlog

from edgeyolo.config.mqtt import MessageKind, MqttConfig
from edgeyolo.embedded_broker import EmbeddedBroker
from edgeyolo.errors import ConfigError
from edgeyolo.events import DetectionEvent, StatsEvent
from edgeyolo.sinks.derive import count_label, header, pose_summary
from edgeyolo.sinks.discovery import CameraEntities, discovery_payload
from edgeyolo.sinks.topics import RESERVED_UNDER_CAMERA, Topics, sanitize_segment

if TYPE_CHECKING:
    from edgeyolo.events import Event

MqttError = aiomqtt.MqttError
"""What a failed broker operation raises (re-exported: only this module imports aiomqtt)."""

Topology = list[tuple[str, str, str, list[str]]]
"""(camera, model, task, labels) for every model that runs on every camera."""

ONLINE = b"online"
OFFLINE = b"offline"
_BATCH = 64  # messages in flight at once: pipelines QoS 1 round trips on slow links
_TICK_S = 0.1
_DROP_LOG_EVERY_S = 5.0
_UNSENT: Any = object()


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
        self._items: OrderedDict[tuple[str, object], Message] = OrderedDict()
        self._seq = itertools.count()
        self._event = asyncio.Event()
        self._woken = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, msg: Message) -> None:
        """Queue ``msg``, dropping per the policy if the outbox is full. Never blocks."""
        if msg.state and self.policy == "latest_state":
            key: tuple[str, object] = ("s", msg.topic)
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

    def peek(self, n: int) -> list[tuple[tuple[str, object], Message]]:
        """The ``n`` oldest messages, left in place until acknowledged."""
        return list(itertools.islice(self._items.items(), n))

    def ack(self, key: tuple[str, object], msg: Message) -> None:
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


@dataclass(frozen=True, slots=True)
class MqttSinkStats:
    """A snapshot of the sink's connection and outbox, for metrics and the stats topic."""

    connected: bool
    reconnects: int
    outbox: int
    dropped: int
    published: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class _Slot:
    """One state (or pose event) topic: the latest value and what subscribers last got."""

    kind: str  # "state" or "pose"
    key: Any = None
    payload: dict[str, Any] | None = None
    sent_key: Any = _UNSENT
    last_sent: float = -math.inf
    dirty: bool = False


def _json(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


class MqttSink:
    """Publishes events to an MQTT broker (or an embedded one); see docs/mqtt.md.

    ``topology`` lists (camera, model, task, labels) for every model on every camera:
    it decides the count, occupancy and pose topics and the Home Assistant entities.
    """

    def __init__(self, config: MqttConfig, topology: Topology) -> None:
        self.config = config
        self._log = structlog.get_logger("edgeyolo.mqtt")
        self._device_id = config.resolved_device_id()
        self._topics = Topics(config.prefix, self._device_id, config.discovery.prefix)
        self._broker_url = config.broker
        self._tls = self._tls_context() if config.is_tls else None
        self._embedded: EmbeddedBroker | None = None
        self._subscriber_url = "" if config.is_embedded else self._broker_url_display()

        # Names -> topic segments, unique per level, stable for a given topology.
        self._cam_seg: dict[str, str] = {}
        self._model_seg: dict[str, str] = {}
        self._label_seg: dict[str, str] = {}
        self._count_src: dict[tuple[str, str], list[str]] = {}
        self._occ_src: dict[str, str] = {}
        self._cameras: list[CameraEntities] = []
        self._build(topology)

        self._outbox = Outbox(config.outbox.size, config.outbox.policy)
        self._slots: dict[str, _Slot] = {}
        self._stats_payloads: dict[str, dict[str, Any]] = {}
        self._stream_last: dict[tuple[str, str], float] = {}
        self._last_seq: dict[str, int] = {}
        self._connected = False
        self._ever_connected = False
        self._reconnects = 0
        self._published = 0
        self._logged_dropped = 0
        self._last_drop_log = -math.inf
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- public surface

    @property
    def subscriber_url(self) -> str:
        """The broker url subscribers can use (no password); known after ``start``."""
        return self._subscriber_url

    @property
    def topics(self) -> Topics:
        """The topic layout of this sink."""
        return self._topics

    def stats(self) -> MqttSinkStats:
        """Connection state and outbox counters."""
        return MqttSinkStats(
            connected=self._connected,
            reconnects=self._reconnects,
            outbox=len(self._outbox),
            dropped=self._outbox.dropped,
            published=self._published,
        )

    async def start(self) -> None:
        """Start the embedded broker if configured, then the connection task (no waiting:
        an unreachable broker is retried in the background, never fatal)."""
        if self.config.is_embedded:
            self._embedded = EmbeddedBroker(self.config.embedded_port)
            await self._embedded.start()
            self._subscriber_url = self._embedded.url
        self._log.info(
            "mqtt publishing; subscribers connect to",
            url=self._subscriber_url,
            example=f"mosquitto_sub -L '{self._subscriber_url}/{self._topics.base}/#' -v",
            base_topic=self._topics.base,
            discovery_topic=self._topics.discovery if self.config.discovery.enabled else None,
            client_id=self.config.resolved_client_id(),
        )
        self._task = asyncio.create_task(self._run(), name="mqtt-client")
        self._ticker = asyncio.create_task(self._tick(), name="mqtt-ticker")

    async def emit(self, event: Event) -> None:
        """Derive messages from ``event`` into the outbox; never waits for the network."""
        if isinstance(event, StatsEvent):
            self._on_stats(event)
        else:
            self._on_detections(event)

    async def close(self) -> None:
        """Flush the latest state, publish 'offline' and disconnect, within close_timeout_s."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        self._flush(time.monotonic(), force=True)
        self._closing.set()
        self._outbox.wake()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), self.config.close_timeout_s)
            except asyncio.TimeoutError:
                self._log.warning(
                    "mqtt close timed out, disconnecting without flushing",
                    timeout_s=self.config.close_timeout_s,
                    outbox=len(self._outbox),
                )
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._log.info("mqtt sink closed", **self.stats().to_dict())
        if self._embedded is not None:
            await self._embedded.stop()
            self._embedded = None

    # ------------------------------------------------------------ naming and topology

    @staticmethod
    def _segment(table: dict[str, str], name: str, reserved: frozenset[str]) -> str:
        seg = table.get(name)
        if seg is None:
            base = sanitize_segment(name)
            taken = set(table.values()) | reserved
            seg, n = base, 1
            while seg in taken:
                n += 1
                seg = f"{base}_{n}"
            table[name] = seg
        return seg

    def _cam(self, name: str) -> str:
        return self._segment(self._cam_seg, name, frozenset())

    def _model(self, name: str) -> str:
        return self._segment(self._model_seg, name, RESERVED_UNDER_CAMERA)

    def _label(self, name: str) -> str:
        return self._segment(self._label_seg, name, frozenset())

    def _build(self, topology: Topology) -> None:
        cfg = self.config
        by_cam: dict[str, list[tuple[str, str, list[str]]]] = {}
        for camera, model, task, labels in topology:
            by_cam.setdefault(camera, []).append((model, task, labels))
            self._cam(camera)
            self._model(model)
        wanted = list(dict.fromkeys([*cfg.count_labels, cfg.occupancy_label]))
        for camera, models in by_cam.items():
            ent = CameraEntities(camera=camera, segment=self._cam(camera))
            for label in wanted:
                # A detection model is the better counter; a pose model counts people only
                # when no detection model on this camera knows the label.
                src = [m for m, t, labels in models if label in labels and t == "detect"] or [
                    m for m, _t, labels in models if label in labels
                ]
                if not src:
                    continue
                if label in cfg.count_labels:
                    self._count_src.setdefault((camera, src[0]), []).append(label)
                    ent.counts.append((label, self._label(label)))
                if label == cfg.occupancy_label:
                    self._occ_src[camera] = src[0]
            ent.occupancy = camera in self._occ_src
            ent.pose_models.extend((m, self._model(m)) for m, t, _l in models if t == "pose")
            self._cameras.append(ent)
        known = {label for _c, _m, _t, labels in topology for label in labels}
        missing = [label for label in wanted if label not in known]
        if missing and topology:
            self._log.warning(
                "mqtt: labels configured for counts/occupancy are in no model",
                labels=missing,
            )

    # ------------------------------------------------------------- deriving messages

    def _kind(self, kind: str) -> MessageKind:
        m = self.config.messages
        return {"state": m.state, "pose": m.pose, "stream": m.stream, "stats": m.stats}[kind]

    def _put(self, topic: str, payload: dict[str, Any], kind: str) -> None:
        k = self._kind(kind)
        self._outbox.put(
            Message(topic, _json(payload), k.qos, k.retain, state=kind in {"state", "stats"})
        )

    def _on_detections(self, ev: DetectionEvent) -> None:
        now = time.monotonic()
        self._last_seq[ev.camera] = max(ev.seq, self._last_seq.get(ev.camera, ev.seq))
        cam, model = self._cam(ev.camera), self._model(ev.model)
        stream = self.config.stream
        if stream.enabled:
            last = self._stream_last.get((cam, model), -math.inf)
            if stream.max_hz <= 0 or now - last >= 1.0 / stream.max_hz:
                self._stream_last[(cam, model)] = now
                self._put(self._topics.detections(cam, model), ev.to_dict(), "stream")
        for label in self._count_src.get((ev.camera, ev.model), ()):
            n = count_label(ev.detections, label)
            payload = header(ev, "count") | {"label": label, "count": n}
            self._update(self._topics.count(cam, self._label(label)), "state", n, payload, now)
        if self._occ_src.get(ev.camera) == ev.model:
            label = self.config.occupancy_label
            n = count_label(ev.detections, label)
            payload = header(ev, "occupancy") | {"label": label, "occupied": n > 0, "count": n}
            self._update(self._topics.occupancy(cam), "state", n > 0, payload, now)
        if ev.task == "pose":
            s = pose_summary(
                ev, with_posture=self.config.posture, label=self.config.occupancy_label
            )
            self._update(self._topics.pose(cam, model), "pose", s.key, s.payload, now)

    def _on_stats(self, ev: StatsEvent) -> None:
        payload = ev.to_dict()
        # Every payload names a model and a frame: stats cover all of the camera's models,
        # up to the last frame seen.
        payload["model"] = None
        payload["seq"] = self._last_seq.get(ev.camera)
        e2e = ev.stages_ms.get("e2e", {})
        payload["latency_ms"] = e2e.get("p50")
        payload["device"] = self._device_id
        payload["mqtt"] = self.stats().to_dict()
        topic = self._topics.stats(self._cam(ev.camera))
        self._stats_payloads[topic] = payload
        self._put(topic, payload, "stats")

    def _update(self, topic: str, kind: str, key: Any, payload: dict[str, Any], now: float) -> None:
        slot = self._slots.get(topic)
        if slot is None:
            slot = self._slots[topic] = _Slot(kind)
        slot.key, slot.payload = key, payload
        # Back at what subscribers already have (a flicker shorter than the interval): quiet.
        slot.dirty = key != slot.sent_key
        if slot.dirty and now - slot.last_sent >= self.config.state_min_interval_s:
            self._send(topic, slot, now)

    def _send(self, topic: str, slot: _Slot, now: float) -> None:
        if slot.payload is None:
            return
        self._put(topic, slot.payload, slot.kind)
        slot.sent_key, slot.last_sent, slot.dirty = slot.key, now, False

    def _flush(self, now: float, *, force: bool = False) -> None:
        """Send state whose interval has passed, and heartbeats."""
        interval, heartbeat = self.config.state_min_interval_s, self.config.heartbeat_s
        for topic, slot in self._slots.items():
            due = slot.dirty and (force or now - slot.last_sent >= interval)
            beat = slot.kind == "state" and now - slot.last_sent >= heartbeat
            if due or beat:
                self._send(topic, slot, now)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(_TICK_S)
            now = time.monotonic()
            self._flush(now)
            dropped = self._outbox.dropped
            if dropped > self._logged_dropped and now - self._last_drop_log >= _DROP_LOG_EVERY_S:
                self._log.warning(
                    "mqtt outbox full, messages dropped",
                    dropped_total=dropped,
                    dropped_since_last=dropped - self._logged_dropped,
                    outbox_size=self.config.outbox.size,
                    policy=self.config.outbox.policy,
                    connected=self._connected,
                )
                self._logged_dropped, self._last_drop_log = dropped, now

    def _requeue_state(self) -> None:
        """Queue the current value of every retained topic (after a (re)connect)."""
        for topic, slot in self._slots.items():
            if slot.kind == "state" and slot.payload is not None:
                self._put(topic, slot.payload, "state")
        for topic, payload in self._stats_payloads.items():
            self._put(topic, payload, "stats")

    def discovery_message(self) -> Message:
        """The retained Home Assistant device discovery message."""
        name = self.config.device_name or f"edgeyolo {self._device_id}"
        payload = discovery_payload(self._topics, name, self._cameras, posture=self.config.posture)
        return Message(self._topics.discovery, _json(payload), qos=1, retain=True, state=True)

    # ------------------------------------------------------------------ connection

    def _broker_url_display(self) -> str:
        assert self._broker_url is not None
        user = self._broker_url.username or self.config.username
        url = self._broker_url.model_copy(update={"username": user})
        return url.display()

    def _tls_context(self) -> ssl.SSLContext:
        tls = self.config.tls
        try:
            ctx = ssl.create_default_context(cafile=str(tls.ca) if tls and tls.ca else None)
            if tls and tls.cert and tls.key:
                ctx.load_cert_chain(str(tls.cert), str(tls.key))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"sinks.mqtt.tls: cannot load the TLS files ({tls!r}): {exc}"
            ) from exc
        if tls is not None and tls.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def _client(self, *, admin: bool = False) -> aiomqtt.Client:
        """A new client; ``admin``: another id (a running service is not kicked off) and no
        will (its going away says nothing about the service)."""
        url = self._broker_url
        if url is None:
            assert self._embedded is not None
            host, port = "127.0.0.1", self._embedded.port
        else:
            host, port = url.host, url.port
        username = (url.username if url else None) or self.config.username
        secret = (url.password if url else None) or self.config.password
        client = aiomqtt.Client(
            host,
            port,
            # paho logs each socket error at ERROR through it; the sink logs every failure
            # itself (with a hint), so the library's copy would only say it twice.
            logger=_quiet_logger(),
            username=username,
            password=None if secret is None else secret.get_secret_value(),
            identifier=self.config.resolved_client_id() + ("-admin" if admin else ""),
            will=None if admin else aiomqtt.Will(self._topics.availability, OFFLINE, 1, True),
            keepalive=self.config.keepalive_s,
            timeout=10.0,
            tls_context=self._tls,
        )
        # The writer keeps up to _BATCH publishes in flight on purpose; aiomqtt warns above 10.
        client.pending_calls_threshold = _BATCH + 8
        return client

    def _backoff(self, attempt: int) -> float:
        b = self.config.backoff
        cap = min(b.max_s, b.initial_s * 2.0 ** min(attempt - 1, 30))
        # "Equal jitter": never below half the step, so a flapping broker is not hammered.
        return cap / 2 + random.uniform(0, cap / 2)

    async def _run(self) -> None:
        attempt = 0
        while not self._closing.is_set():
            attempt += 1
            # A fresh client per attempt: aiomqtt 2.x does not reconnect in place, and a new
            # paho client carries no half-sent state from the lost connection.
            client = self._client()
            try:
                async with client:
                    self._connected = True
                    if self._ever_connected:
                        self._reconnects += 1
                    self._ever_connected = True
                    self._log.info(
                        "mqtt connected",
                        url=self._subscriber_url,
                        attempt=attempt,
                        reconnects=self._reconnects,
                        outbox=len(self._outbox),
                    )
                    attempt = 0
                    await self._session(client)
                    return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                lost = self._connected
                self._connected = False
                if self._closing.is_set():
                    return
                if lost:
                    self._log.warning("mqtt connection lost", error=_describe(exc))
                    attempt = max(attempt, 1)
                delay = self._backoff(attempt)
                self._log.error(
                    "mqtt connect failed" if not lost else "mqtt reconnecting",
                    url=self._subscriber_url,
                    attempt=attempt,
                    error=_describe(exc),
                    hint=_hint(exc),
                    retry_in_s=round(delay, 2),
                    outbox=len(self._outbox),
                )
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), delay)
            finally:
                self._connected = False

    async def _session(self, client: aiomqtt.Client) -> None:
        """One connection: announce, then publish the outbox until closing or an error."""
        await client.publish(self._topics.availability, ONLINE, qos=1, retain=True)
        if self.config.discovery.enabled:
            disc = self.discovery_message()
            await client.publish(disc.topic, disc.payload, qos=1, retain=True)
            await client.subscribe(self.config.discovery.status_topic, qos=1)
        self._requeue_state()
        reader = asyncio.create_task(self._reader(client), name="mqtt-reader")
        writer = asyncio.create_task(self._writer(client), name="mqtt-writer")
        try:
            done, _ = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (reader, writer):
                t.cancel()
            await asyncio.gather(reader, writer, return_exceptions=True)
        if writer in done and writer.exception() is None:
            # Closing and the outbox is drained: say goodbye before a clean DISCONNECT (which
            # does not trigger the will).
            await client.publish(self._topics.availability, OFFLINE, qos=1, retain=True)
            self._published += 1
            return
        for t in done:
            exc = t.exception()
            if exc is not None:
                raise exc
        raise aiomqtt.MqttError("connection closed")

    async def _reader(self, client: aiomqtt.Client) -> None:
        """Watch Home Assistant's birth message; ends with an error when the link drops."""
        status = self.config.discovery.status_topic
        async for msg in client.messages:
            # A retained 'online' arrives on every subscribe; discovery was just sent then.
            if msg.topic.matches(status) and msg.payload == ONLINE and not msg.retain:
                self._log.info("home assistant online, re-sending discovery and state")
                self._outbox.put(self.discovery_message())
                self._requeue_state()

    async def _writer(self, client: aiomqtt.Client) -> None:
        """Publish the outbox in order; return once drained while closing."""
        while True:
            batch = self._outbox.peek(_BATCH)
            if not batch:
                if self._closing.is_set():
                    return
                await self._outbox.wait()
                continue
            results = await asyncio.gather(
                *(client.publish(m.topic, m.payload, qos=m.qos, retain=m.retain) for _, m in batch),
                return_exceptions=True,
            )
            error: BaseException | None = None
            for (key, msg), result in zip(batch, results, strict=True):
                if isinstance(result, BaseException):
                    error = error or result
                else:
                    self._outbox.ack(key, msg)
                    self._published += 1
            if error is not None:
                raise error


def _quiet_logger() -> logging.Logger:
    log = logging.getLogger("edgeyolo.mqtt.client")
    log.setLevel(logging.CRITICAL)
    return log


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


def _hint(exc: BaseException) -> str | None:
    text = str(exc).lower()
    if "authori" in text or "password" in text or "bad user" in text:
        return (
            "the broker refused the credentials: check sinks.mqtt.username/password or --mqtt-url"
        )
    if "refused" in text or "unreachable" in text or "timed out" in text or "name" in text:
        return "is the broker running and reachable at this host and port?"
    if "certificate" in text or "ssl" in text or "tls" in text:
        return "TLS failed: check sinks.mqtt.tls (ca, cert, key) and the broker's certificate"
    return None


async def remove_discovery(
    config: MqttConfig, *, clear_state: bool = False, timeout: float = 10.0
) -> list[str]:
    """Remove this device from Home Assistant: an empty retained discovery config.

    With ``clear_state`` also empties every retained topic under ``<prefix>/<device>/``
    (counts, occupancy, stats, availability). Returns the topics cleared. Raises
    ``aiomqtt.MqttError`` when the broker cannot be reached within ``timeout``.
    """
    if config.is_embedded:
        raise ConfigError(
            "sinks.mqtt.url is 'embedded': that broker keeps nothing after the service stops, "
            "so there is no discovery to remove; pass --mqtt-url for a real broker"
        )
    sink = MqttSink(config, [])
    topics = sink.topics
    cleared = [topics.discovery]
    client = sink._client(admin=True)
    async with client:
        if clear_state:
            await client.subscribe(f"{topics.base}/#", qos=1)
            found: list[str] = []

            async def collect() -> None:
                async for msg in client.messages:
                    if msg.retain and msg.payload:
                        found.append(str(msg.topic))  # noqa: PERF401 - endless stream

            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(collect(), 1.0)
            cleared += sorted(set(found))
        for topic in cleared:
            await client.publish(topic, b"", qos=1, retain=True, timeout=timeout)
    return cleared
