"""``edgeyolo mqtt``: MQTT housekeeping (Home Assistant discovery)."""

from __future__ import annotations

import argparse
import asyncio

from edgeyolo.commands._common import add_config_arg, load
from edgeyolo.errors import ConfigError, EdgeYoloError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "mqtt",
        help="MQTT housekeeping (remove the Home Assistant device)",
        description="MQTT housekeeping for the broker configured in sinks.mqtt.",
    )
    msub = p.add_subparsers(dest="mqtt_command", metavar="ACTION", required=True)
    r = msub.add_parser(
        "remove-discovery",
        help="remove this device and its entities from Home Assistant",
        description="Publish an empty retained discovery config for this device, so Home "
        "Assistant removes it and its entities. Stop the service first, or it publishes the "
        "config again on its next (re)connect.",
    )
    add_config_arg(r)
    r.add_argument(
        "--mqtt-url",
        default=None,
        metavar="URL",
        help="broker as mqtt[s]://[user:pass@]host[:port] (overrides sinks.mqtt.url)",
    )
    r.add_argument(
        "--clear-state",
        action="store_true",
        help="also empty the retained state topics under <prefix>/<device>/",
    )
    r.add_argument(
        "--timeout", type=float, default=10.0, metavar="S", help="broker timeout in seconds"
    )
    r.set_defaults(func=remove_discovery_main)


def remove_discovery_main(args: argparse.Namespace) -> int:
    from edgeyolo.config.mqtt import with_broker_url  # noqa: PLC0415
    from edgeyolo.sinks.mqtt import MqttError, remove_discovery  # noqa: PLC0415 - aiomqtt

    cfg = load(args.config)
    mqtt = cfg.sinks.mqtt
    if args.mqtt_url:
        mqtt = with_broker_url(mqtt, args.mqtt_url)
    if mqtt is None:
        raise ConfigError("the config has no sinks.mqtt section: pass --mqtt-url URL")
    try:
        cleared = asyncio.run(
            remove_discovery(mqtt, clear_state=args.clear_state, timeout=args.timeout)
        )
    except MqttError as exc:
        where = mqtt.broker.display() if mqtt.broker else "embedded"
        raise EdgeYoloError(f"MQTT broker {where}: {exc}") from exc
    for topic in cleared:
        print(f"cleared {topic}")
    return 0
