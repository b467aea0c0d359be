"""Configuration of the MQTT sink (pure pydantic: importing it never imports aiomqtt).

See docs/mqtt.md for what each setting does to the topics and payloads.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from edgeyolo.config.base import Strict
from edgeyolo.config.broker import BrokerUrl, parse_url, redact_url
from edgeyolo.config.names import check_prefix, sanitize_id
from edgeyolo.config.snapshots import SnapshotConfig
from edgeyolo.errors import ConfigError

EMBEDDED = "embedded"


class TlsConfig(Strict):
    """TLS settings, used when the url is mqtts://."""

    ca: Path | None = Field(
        None, description="CA certificate(s) (PEM) to verify the broker. None: the system's CAs."
    )
    cert: Path | None = Field(None, description="Client certificate (PEM) for mutual TLS.")
    key: Path | None = Field(None, description="Private key (PEM, unencrypted) of the client cert.")
    insecure: bool = Field(
        default=False,
        description=(
            "Skip verifying the broker's certificate and hostname (self-signed brokers you "
            "cannot get a CA file for). Encrypts, but does not authenticate the broker."
        ),
    )

    @model_validator(mode="after")
    def _cert_and_key(self) -> TlsConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("tls.cert and tls.key go together: give both or neither")
        return self


class MessageKind(Strict):
    """Delivery settings of one kind of message."""

    qos: Literal[0, 1, 2] = Field(description="MQTT QoS level of these messages.")
    retain: bool = Field(description="Ask the broker to keep the last message for new subscribers.")


# Per kind of message; a partial override (`stream: {qos: 1}`) is merged with these.
_MESSAGE_DEFAULTS: dict[str, dict[str, Any]] = {
    "state": {"qos": 1, "retain": True},
    "pose": {"qos": 1, "retain": False},
    "stream": {"qos": 0, "retain": False},
    "stats": {"qos": 0, "retain": True},
}


class MessagesConfig(Strict):
    """QoS and retain per kind of message (availability, discovery: always QoS 1, retained)."""

    state: MessageKind = Field(
        default_factory=lambda: MessageKind(**_MESSAGE_DEFAULTS["state"]),
        description="Counts and occupancy: state that dashboards read on connect.",
    )
    pose: MessageKind = Field(
        default_factory=lambda: MessageKind(**_MESSAGE_DEFAULTS["pose"]),
        description="Pose events. Home Assistant ignores retained event messages: keep False.",
    )
    stream: MessageKind = Field(
        default_factory=lambda: MessageKind(**_MESSAGE_DEFAULTS["stream"]),
        description="The full per-frame detection stream.",
    )
    stats: MessageKind = Field(
        default_factory=lambda: MessageKind(**_MESSAGE_DEFAULTS["stats"]),
        description="Periodic pipeline statistics (fps, latencies, drops).",
    )

    @model_validator(mode="before")
    @classmethod
    def _merge_with_defaults(cls, data: object) -> object:
        # `stream: {qos: 1}` overrides only the qos; retain keeps the kind's default.
        if not isinstance(data, dict):
            return data
        merged = dict(data)
        for kind, value in data.items():
            default = _MESSAGE_DEFAULTS.get(kind)
            if default is not None and isinstance(value, dict):
                merged[kind] = {**default, **value}
        return merged


class StreamConfig(Strict):
    """The full per-frame detection stream (one topic per camera and model)."""

    enabled: bool = Field(default=True, description="Publish every frame's detections.")
    max_hz: float = Field(
        0.0,
        ge=0.0,
        description="At most this many messages per second per camera and model (0: every frame).",
    )


class DiscoveryConfig(Strict):
    """Home Assistant MQTT discovery (device-based)."""

    enabled: bool = Field(default=True, description="Publish Home Assistant discovery config.")
    prefix: str = Field(
        "homeassistant", min_length=1, description="Home Assistant's discovery topic prefix."
    )
    status_topic: str = Field(
        "homeassistant/status",
        min_length=1,
        description="Home Assistant's birth topic: discovery is re-sent when it says 'online'.",
    )

    @field_validator("prefix", "status_topic")
    @classmethod
    def _topic_ok(cls, v: str) -> str:
        check_prefix(v)
        return v


class OutboxConfig(Strict):
    """The bounded queue between the pipeline and the broker connection."""

    size: int = Field(1000, ge=10, description="Most messages held while the broker is slow/away.")
    policy: Literal["latest_state", "drop_oldest"] = Field(
        "latest_state",
        description=(
            "'latest_state': state topics (counts, occupancy, stats) keep only their newest "
            "message, so state is never lost; events and the stream drop oldest when full. "
            "'drop_oldest': one FIFO of every message, oldest dropped when full."
        ),
    )


class BackoffConfig(Strict):
    """Waits between reconnection attempts (doubling, capped, with jitter)."""

    initial_s: float = Field(0.5, gt=0, description="First wait after a failed attempt.")
    max_s: float = Field(30.0, gt=0, description="Cap of the doubling wait.")


class MqttConfig(Strict):
    """MQTT output: topics under <prefix>/<device_id>/, Home Assistant discovery, availability."""

    url: str = Field(
        EMBEDDED,
        description=(
            "Broker as mqtt[s]://[user:pass@]host[:port], or 'embedded' for an in-process "
            "broker on 127.0.0.1 (demo, no system service needed)."
        ),
    )
    embedded_port: int = Field(
        1883,
        ge=0,
        le=65535,
        description="Port of the embedded broker on 127.0.0.1 (0: any free port; taken: any free).",
    )
    username: str | None = Field(None, description="Username (overridden by one in url).")
    password: SecretStr | None = Field(
        None,
        description=(
            "Password (overridden by one in url). Never logged. A number (918273645) is taken "
            "as its digits; quote it when it starts with 0 (YAML reads 0123 as octal)."
        ),
    )

    @field_validator("username", "password", mode="before")
    @classmethod
    def _numbers_as_text(cls, v: object) -> object:
        # YAML reads `password: 918273645` as an int; the broker wants the digits.
        if isinstance(v, int) and not isinstance(v, bool):
            return str(v)
        return v

    client_id: str | None = Field(
        None, description="MQTT client id. None: 'edgeyolo-<device_id>', stable across restarts."
    )
    prefix: str = Field("edgeyolo", min_length=1, description="Topic prefix (may contain '/').")
    device_id: str | None = Field(
        None,
        description="Device id in topics and Home Assistant. None: the hostname, sanitized.",
    )
    device_name: str | None = Field(
        None, description="Device name shown in Home Assistant. None: 'edgeyolo <device_id>'."
    )
    keepalive_s: int = Field(30, ge=5, le=65535, description="MQTT keepalive in seconds.")
    tls: TlsConfig | None = Field(None, description="TLS files and options for mqtts:// urls.")
    messages: MessagesConfig = Field(
        default_factory=MessagesConfig,
        description="QoS and retain per kind of message.",
    )
    outbox: OutboxConfig = Field(
        default_factory=OutboxConfig,
        description="Bounded queue while the broker is away.",
    )
    backoff: BackoffConfig = Field(
        default_factory=BackoffConfig,
        description="Reconnection waits.",
    )
    heartbeat_s: float = Field(
        60.0, gt=0, description="Re-publish every state topic at least this often."
    )
    state_min_interval_s: float = Field(
        1.0,
        ge=0.0,
        description=(
            "At most one state (or pose event) message per topic per this many seconds; the "
            "latest value is always sent when the interval ends (flicker-proof, nothing lost)."
        ),
    )
    stream: StreamConfig = Field(
        default_factory=StreamConfig,
        description="The full per-frame stream.",
    )
    discovery: DiscoveryConfig = Field(
        default_factory=DiscoveryConfig,
        description="Home Assistant discovery.",
    )
    count_labels: list[str] = Field(
        default_factory=lambda: ["person", "car"],
        description="Labels that get a count topic and sensor per camera (if a model has them).",
    )
    occupancy_label: str = Field(
        "person", min_length=1, description="Label whose presence makes a camera 'occupied'."
    )
    snapshots: SnapshotConfig = Field(
        default_factory=SnapshotConfig,
        description="Best picture per camera and label as a retained JPEG (an HA image entity).",
    )
    posture: bool = Field(
        default=True,
        description="Derive a posture (standing, sitting, lying) per person from pose keypoints.",
    )
    close_timeout_s: float = Field(
        5.0, gt=0, description="On stop, longest wait to flush and publish 'offline'."
    )

    @field_validator("url")
    @classmethod
    def _url_ok(cls, v: str) -> str:
        if v != EMBEDDED:
            parse_url(v)
        return v

    @field_validator("prefix")
    @classmethod
    def _prefix_ok(cls, v: str) -> str:
        check_prefix(v)
        return v

    @field_validator("device_id")
    @classmethod
    def _device_id_ok(cls, v: str | None) -> str | None:
        if v is not None and sanitize_id(v) != v:
            raise ValueError(
                f"device_id {v!r} may only contain letters, digits, '_' and '-' "
                f"(for example {sanitize_id(v)!r})"
            )
        return v

    @model_validator(mode="after")
    def _tls_matches_url(self) -> MqttConfig:
        if self.tls is not None and not self.is_tls:
            raise ValueError("tls is set but the url is not mqtts://: use mqtts://host:8883")
        return self

    # Derived values, computed here so that the sink, the CLI and tests agree.

    @property
    def is_embedded(self) -> bool:
        """True when the sink runs its own broker."""
        return self.url == EMBEDDED

    @property
    def broker(self) -> BrokerUrl | None:
        """The parsed url (None for the embedded broker); what the sink and the CLI read."""
        return None if self.is_embedded else parse_url(self.url)

    @property
    def is_tls(self) -> bool:
        """True for mqtts:// urls."""
        return self.broker is not None and self.broker.tls

    def resolved_device_id(self) -> str:
        """The device id: configured, or the hostname sanitized to [A-Za-z0-9_-]."""
        return self.device_id or sanitize_id(socket.gethostname() or "edgeyolo")

    def resolved_client_id(self) -> str:
        """The MQTT client id: configured, or 'edgeyolo-<device_id>'."""
        return self.client_id or f"edgeyolo-{self.resolved_device_id()}"


def with_broker_url(config: MqttConfig | None, url: str) -> MqttConfig:
    """Apply ``--mqtt-url``: a copy of ``config`` (or of the defaults) pointing at ``url``.

    Credentials in the url replace the configured ones. Raises ``ConfigError`` naming the
    option and the (password-free) value when the url is not valid.
    """
    base = config if config is not None else MqttConfig.model_validate({})
    if url == EMBEDDED:
        return base.model_copy(update={"url": EMBEDDED, "tls": None})
    try:
        parsed = parse_url(url)
    except ValueError as exc:
        raise ConfigError(f"--mqtt-url {redact_url(url)!r}: {exc}") from None
    # The stored url carries no credentials: they live in username/password (SecretStr).
    update: dict[str, object] = {"url": parsed.display_host()}
    if parsed.username is not None:
        update["username"] = parsed.username
    if parsed.password is not None:
        update["password"] = parsed.password
    if not parsed.tls:
        update["tls"] = None
    data = base.model_dump()
    data.update(update)
    # Validate again, so that the result obeys the same rules as a config file.
    try:
        return MqttConfig.model_validate(data)
    except ValueError as exc:
        raise ConfigError(f"--mqtt-url {redact_url(url)!r}: {exc}") from None
