"""MQTT sink: state on change for Home Assistant and Node-RED, events, discovery, availability.

The sink derives messages from events; three modules beside it do the rest:

* ``emit`` (on the event loop, never blocking) turns events into messages (with
  ``sinks/derive.py``) and puts them into a bounded :class:`~edgeyolo.sinks.outbox.Outbox`.
* :class:`~edgeyolo.sinks.link.Link` (the only aiomqtt importer) publishes the outbox and
  reconnects. After each (re)connect it publishes availability and discovery first and the
  sink re-queues every current state, so a broker that restarted without persistence gets
  the latest state of every topic back.
* Topic names and which model counts what come from ``sinks/topics.py`` (:class:`Layout`).
* Counts and occupancy are state: published when they change (at most once per
  ``state_min_interval_s`` per topic, the latest value always following) and re-published
  every ``heartbeat_s``. The per-frame stream has its own topic and rate limit.

About 430 lines, a little over the house's ~400: what is left here is the one job of turning
every event kind (detections, stats, pose, tracks, zones, lines, snapshots) into messages,
and each kind's few lines read best next to the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import structlog

from edgeyolo.events import DetectionEvent, LineEvent, StatsEvent, TrackEvent, ZoneEvent
from edgeyolo.sinks.derive import count_label, header, pose_summary
from edgeyolo.sinks.discovery import CameraEntities, DiscoveryOptions, discovery_configs
from edgeyolo.sinks.embedded_broker import EmbeddedBroker
from edgeyolo.sinks.link import Link
from edgeyolo.sinks.objects import CameraObjects, ObjectMessages, Out
from edgeyolo.sinks.outbox import Message, Outbox
from edgeyolo.sinks.topics import Layout, Topics
from edgeyolo.tasks import TaskGroup

if TYPE_CHECKING:
    from collections.abc import Sequence

    from edgeyolo.config.mqtt import MessageKind, MqttConfig
    from edgeyolo.events import Event
    from edgeyolo.sinks.topics import Route

ONLINE = b"online"
OFFLINE = b"offline"
_TICK_S = 0.1
_DROP_LOG_EVERY_S = 5.0
_UNSENT: Any = object()


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

    ``routes`` lists every model on every camera: they decide the count, occupancy and pose
    topics and the Home Assistant entities.
    """

    def __init__(
        self,
        config: MqttConfig,
        routes: Sequence[Route],
        *,
        configuration_url: str | None = None,
        objects: Sequence[CameraObjects] = (),
    ) -> None:
        self.config = config
        self._configuration_url = configuration_url
        self._log = structlog.get_logger("edgeyolo.mqtt")
        self._device_id = config.resolved_device_id()
        self._topics = Topics.for_config(config)
        self._routes = list(routes)
        self._snapshots: dict[str, Message] = {}  # topic -> latest snapshot (re-sent)
        self._layout = Layout(routes, config.count_labels, config.occupancy_label)
        self._objects = ObjectMessages(
            objects, routes, config.count_labels, self._topics, self._layout
        )
        self._cameras = [self._entities(camera) for camera in self._layout.cameras]
        if self._layout.missing and routes:
            self._log.warning(
                "mqtt: labels configured for counts/occupancy are in no model",
                labels=self._layout.missing,
            )
        self._outbox = Outbox(config.outbox.size, config.outbox.policy)
        self._embedded = EmbeddedBroker(config.embedded_port) if config.is_embedded else None
        availability = self._topics.availability
        status = config.discovery.status_topic
        self._link = Link(
            config,
            self._outbox,
            embedded=self._embedded,
            will=Message(availability, OFFLINE, 1, True),
            greeting=self._greeting,
            subscriptions={
                availability: self._on_own_availability,
                **({status: self._on_ha_status} if config.discovery.enabled else {}),
            },
            on_connect=self._requeue_state,
            farewell=Message(availability, OFFLINE, 1, True),
        )
        self._subscriber_url = "" if config.is_embedded else self._link.url
        self._slots: dict[str, _Slot] = {}
        self._stats_payloads: dict[str, dict[str, Any]] = {}
        self._stream_last: dict[tuple[str, str], float] = {}
        self._last_seq: dict[str, int] = {}
        self._logged_dropped = 0
        self._last_drop_log = -math.inf
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._object_messages(self._objects.initial())

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
            connected=self._link.connected,
            reconnects=self._link.reconnects,
            outbox=len(self._outbox),
            dropped=self._outbox.dropped,
            published=self._link.published,
        )

    @property
    def down_since(self) -> float | None:
        """``time.monotonic()`` since when the broker is not connected; None while it is."""
        return self._link.down_since

    async def start(self) -> None:
        """Start the embedded broker if configured, then the connection task (no waiting:
        an unreachable broker is retried in the background, never fatal)."""
        if self._embedded is not None:
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
        self._task = asyncio.create_task(self._run(), name="mqtt-sink")

    async def emit(self, event: Event) -> None:
        """Derive messages from ``event`` into the outbox; never waits for the network."""
        if isinstance(event, StatsEvent):
            self._on_stats(event)
        elif isinstance(event, DetectionEvent):
            self._on_detections(event)
        elif isinstance(event, TrackEvent | ZoneEvent | LineEvent):
            self._object_messages(self._objects.on_event(event))

    async def close(self) -> None:
        """Flush the latest state, publish 'offline' and disconnect, within close_timeout_s."""
        task, self._task = self._task, None
        try:
            if task is None:
                self._flush(time.monotonic(), force=True)
            else:
                self._closing.set()
                await self._join(task)
            self._log.info("mqtt sink closed", **self.stats().to_dict())
        finally:
            if self._embedded is not None:
                await self._embedded.stop()

    async def _join(self, task: asyncio.Task[None]) -> None:
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

    async def _run(self) -> None:
        """The connection and the ticker, until ``close``: then the ticker stops, the latest
        state is flushed and the link drains the outbox and says 'offline'."""
        async with TaskGroup() as tg:
            link = tg.start(self._link.run(), name="mqtt-client")
            ticker = tg.start(self._tick(), name="mqtt-ticker")
            await self._closing.wait()
            ticker.cancel()  # no yield before the flush: the ticker cannot run again
            self._flush(time.monotonic(), force=True)
            self._link.close()
            await link

    # ------------------------------------------------------------------ the link's hooks

    def _greeting(self) -> list[Message]:
        msgs = [Message(self._topics.availability, ONLINE, 1, True)]
        if self.config.discovery.enabled:
            msgs.extend(self.discovery_messages())
        return msgs

    def _on_own_availability(self, payload: bytes, retained: bool) -> None:
        # 'offline' while this service is connected is a last will that lost the race: the
        # broker dropping a connection of ours it still held (after a reconnect took its
        # client id over, or one that went stale) publishes it after our 'online'.
        del retained
        if payload == OFFLINE and not self._closing.is_set():
            self._log.warning("mqtt: a stale 'offline' of this service appeared; re-sending online")
            self._outbox.put(Message(self._topics.availability, ONLINE, 1, True, state=True))

    def _on_ha_status(self, payload: bytes, retained: bool) -> None:
        # A retained 'online' arrives on every subscribe; discovery was just sent then.
        if payload == ONLINE and not retained:
            self._log.info("home assistant online, re-sending discovery and state")
            for msg in self.discovery_messages():
                self._outbox.put(msg)
            self._requeue_state()

    def _requeue_state(self) -> None:
        """Queue the current value of every retained topic (after a (re)connect)."""
        for topic, slot in self._slots.items():
            if slot.kind == "state" and slot.payload is not None:
                self._put(topic, slot.payload, "state")
        for topic, payload in self._stats_payloads.items():
            self._put(topic, payload, "stats")
        for msg in self._snapshots.values():
            self._outbox.put(msg)

    def discovery_messages(self) -> list[Message]:
        """The retained Home Assistant discovery messages: the service device, then cameras."""
        name = self.config.device_name or f"edgeyolo {self._device_id}"
        msgs = self.config.messages
        options = DiscoveryOptions(
            posture=self.config.posture,
            qos_state=msgs.state.qos,
            qos_pose=msgs.pose.qos,
            qos_stats=msgs.stats.qos,
            configuration_url=self._configuration_url,
        )
        configs = discovery_configs(self._topics, name, self._cameras, options)
        return [
            Message(topic, _json(payload), qos=1, retain=True, state=True)
            for topic, payload in configs.items()
        ]

    def _entities(self, camera: str) -> CameraEntities:
        lay = self._layout
        return CameraEntities(
            camera=camera,
            segment=lay.camera(camera),
            counts=[(label, lay.label(label)) for label in lay.counted(camera)],
            occupancy=lay.occupancy_model(camera) is not None,
            pose_models=[(m, lay.model(m)) for m in lay.pose_models(camera)],
            zones=[
                (z, self._objects.zone_segment(camera, z), label, lay.label(label))
                for z, label in self._objects.zone_entities.get(camera, [])
            ],
            lines=[
                (ln, self._objects.line_segment(camera, ln))
                for ln in self._objects.line_entities.get(camera, [])
            ],
            snapshots=[(label, lay.label(label)) for label in self._snapshot_labels(camera)],
        )

    def _object_messages(self, msgs: list[Out]) -> None:
        """Publish messages derived from tracked objects (sinks/objects.py)."""
        now = time.monotonic()
        for out in msgs:
            if out.kind == "state":
                self._update(out.topic, "state", out.key, out.payload, now)
            else:
                self._put(out.topic, out.payload, "pose")

    def _snapshot_labels(self, camera: str) -> list[str]:
        """The configured snapshot labels that a (selected) model on ``camera`` reports."""
        snap = self.config.snapshots
        if not snap.enabled:
            return []
        known = {
            label
            for r in self._routes
            if r.camera == camera and (snap.models is None or r.model in snap.models)
            for label in r.labels
        }
        return [label for label in snap.labels if label in known]

    def publish_snapshot(self, camera: str, label: str, jpeg: bytes) -> None:
        """Queue ``jpeg`` (raw bytes) retained on the snapshot topic of ``camera``/``label``.

        State: a newer snapshot replaces a queued one of the same topic, and the latest is
        re-sent after a reconnect. Called by ``edgeyolo.snapshots.SnapshotStage``.
        """
        lay = self._layout
        topic = self._topics.snapshot(lay.camera(camera), lay.label(label))
        msg = Message(topic, jpeg, self.config.messages.state.qos, retain=True, state=True)
        self._snapshots[topic] = msg
        self._outbox.put(msg)

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
        lay = self._layout
        self._last_seq[ev.camera] = max(ev.seq, self._last_seq.get(ev.camera, ev.seq))
        cam, model = lay.camera(ev.camera), lay.model(ev.model)
        stream = self.config.stream
        if stream.enabled:
            last = self._stream_last.get((cam, model), -math.inf)
            if stream.max_hz <= 0 or now - last >= 1.0 / stream.max_hz:
                self._stream_last[(cam, model)] = now
                self._put(self._topics.detections(cam, model), ev.to_dict(), "stream")
        for label in lay.counts(ev.camera, ev.model):
            n = count_label(ev.detections, label)
            payload = header(ev, "count") | {"label": label, "count": n}
            self._update(self._topics.count(cam, lay.label(label)), "state", n, payload, now)
        if lay.occupancy_model(ev.camera) == ev.model:
            label = self.config.occupancy_label
            n = count_label(ev.detections, label)
            payload = header(ev, "occupancy") | {"label": label, "occupied": n > 0, "count": n}
            self._update(self._topics.occupancy(cam), "state", n > 0, payload, now)
        # A tracked pose model's pose events come per track and posture change (_objects).
        if ev.task == "pose" and not ev.tracked:
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
        topic = self._topics.stats(self._layout.camera(ev.camera))
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
                    connected=self._link.connected,
                )
                self._logged_dropped, self._last_drop_log = dropped, now
