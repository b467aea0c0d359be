"""``edgeyolo mqtt``: MQTT housekeeping (Home Assistant discovery)."""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING

from edgeyolo.commands._common import add_config_arg, load
from edgeyolo.errors import ConfigError, EdgeYoloError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from edgeyolo.config.mqtt import MqttConfig


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
    from edgeyolo.sinks.link import MqttError, hint  # noqa: PLC0415 - aiomqtt only when used

    cfg = load(args.config)
    mqtt = cfg.sinks.mqtt
    if args.mqtt_url:
        mqtt = with_broker_url(mqtt, args.mqtt_url)
    if mqtt is None:
        raise ConfigError("the config has no sinks.mqtt section: pass --mqtt-url URL")
    try:
        cleared = asyncio.run(
            remove_discovery(
                mqtt,
                [c.name for c in cfg.cameras],
                clear_state=args.clear_state,
                timeout=args.timeout,
            )
        )
    except MqttError as exc:
        where = "embedded"
        if mqtt.broker is not None:  # the url holds no user: it is in username (see the run)
            user = f"{mqtt.username}@" if mqtt.username else ""
            where = mqtt.broker.display_host().replace("://", f"://{user}", 1)
        why = hint(exc, tls=mqtt.is_tls)
        raise EdgeYoloError(f"MQTT broker {where}: {exc}" + (f" ({why})" if why else "")) from exc
    for topic in cleared:
        print(f"cleared {topic}")
    return 0


async def remove_discovery(
    config: MqttConfig,
    cameras: Sequence[str] = (),
    *,
    clear_state: bool = False,
    timeout: float = 10.0,
) -> list[str]:
    """Remove this service's devices from Home Assistant: empty retained discovery configs
    for the service device, the device of each of ``cameras``, and every other retained
    camera device whose ``via_device`` is this service (a camera since removed from the config).

    With ``clear_state`` also empties every retained topic under ``<prefix>/<device>/``
    (counts, occupancy, stats, availability). Returns the topics cleared. Raises
    ``MqttError`` when the broker cannot be reached within ``timeout``.
    """
    from edgeyolo.sinks.discovery import camera_topics, linked_to  # noqa: PLC0415
    from edgeyolo.sinks.link import clear_retained  # noqa: PLC0415 - aiomqtt only when used
    from edgeyolo.sinks.topics import Topics  # noqa: PLC0415

    if config.is_embedded:
        raise ConfigError(
            "sinks.mqtt.url is 'embedded': that broker keeps nothing after the service stops, "
            "so there is no discovery to remove; pass --mqtt-url for a real broker"
        )
    topics = Topics.for_config(config)
    return await clear_retained(
        config,
        [topics.discovery, *camera_topics(topics, cameras)],
        found_under=f"{topics.base}/#" if clear_state else None,
        timeout=timeout,
        matching=[(f"{topics.discovery_prefix}/device/+/config", linked_to(topics))],
    )
