"""Configuration: pydantic models of the YAML file, and loading with clear errors.

Layout: ``models`` (cameras, models, backends, logging, sinks, the whole ``Config``),
``mqtt`` and ``broker`` (the MQTT sink's settings and its broker url), ``names`` (what
topic segments and Home Assistant ids may hold), ``snapshots``
(pictures over MQTT), ``http`` (health, metrics, status page, live view), ``load`` (read,
validate, resolve paths, check files).
Nothing here imports an implementation module: the sinks, the HTTP server and the engines
import their settings from here, never the other way round.
"""

from edgeyolo.config.broker import BrokerUrl, parse_url
from edgeyolo.config.http import HttpConfig
from edgeyolo.config.load import (
    ConfigIssue,
    ConfigValidationError,
    check_files,
    config_warnings,
    load_config,
    parse_config,
)
from edgeyolo.config.models import (
    BackendName,
    CameraConfig,
    Config,
    GpuPathConfig,
    JsonlSinkConfig,
    LoggingConfig,
    ModelConfig,
    OnnxRuntimeConfig,
    PipelineConfig,
    ReconnectConfig,
    SinksConfig,
    TensorRTConfig,
)
from edgeyolo.config.mqtt import MqttConfig, with_broker_url
from edgeyolo.config.snapshots import SnapshotConfig
from edgeyolo.config.tracking import LineConfig, TrackingConfig, ZoneConfig

__all__ = [
    "BackendName",
    "BrokerUrl",
    "CameraConfig",
    "Config",
    "ConfigIssue",
    "ConfigValidationError",
    "GpuPathConfig",
    "HttpConfig",
    "JsonlSinkConfig",
    "LineConfig",
    "LoggingConfig",
    "ModelConfig",
    "MqttConfig",
    "OnnxRuntimeConfig",
    "PipelineConfig",
    "ReconnectConfig",
    "SinksConfig",
    "SnapshotConfig",
    "TensorRTConfig",
    "TrackingConfig",
    "ZoneConfig",
    "check_files",
    "config_warnings",
    "load_config",
    "parse_config",
    "parse_url",
    "with_broker_url",
]
