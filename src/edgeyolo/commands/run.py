"""``edgeyolo run``: the service."""

from __future__ import annotations

import argparse

import structlog

from edgeyolo.commands._common import add_config_arg, config_path, load, positive_int
from edgeyolo.config import Config, config_warnings
from edgeyolo.errors import ConfigError

_log = structlog.get_logger("edgeyolo.config")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        help="run the service (default: the bundled demo)",
        description="Run every camera through its models and publish events. Events go to "
        "stdout as JSON lines (sinks.jsonl), logs to stderr. Stops at the end of file sources, "
        "or on SIGINT/SIGTERM.",
    )
    add_config_arg(p)
    p.add_argument(
        "--max-frames",
        type=positive_int,
        default=None,
        metavar="N",
        help="stop each camera after N frames",
    )
    p.add_argument(
        "--loop",
        action="store_true",
        default=None,
        help="loop file sources instead of stopping at their end",
    )
    p.add_argument(
        "--fast",
        action="store_true",
        help="read file sources as fast as possible instead of at their native fps",
    )
    p.add_argument(
        "--mqtt-url",
        default=None,
        metavar="URL",
        help="publish to this MQTT broker, mqtt[s]://[user:pass@]host[:port] or 'embedded' "
        "(overrides sinks.mqtt.url; turns MQTT on if the config has it off)",
    )
    p.add_argument(
        "--http",
        default=None,
        metavar="HOST:PORT",
        help="serve /healthz and /metrics here (overrides the config's http section)",
    )
    p.add_argument(
        "--log-format",
        choices=["auto", "json", "console"],
        default=None,
        help="logs on stderr: JSON lines, or readable text (auto: text on a terminal; "
        "overrides logging.format)",
    )
    p.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default=None,
        help="least level logged (overrides logging.level)",
    )
    p.set_defaults(func=main)


def apply_overrides(cfg: Config, *, mqtt_url: str | None, http: str | None) -> Config:
    """Command-line options that replace parts of the config."""
    if mqtt_url is not None:
        from edgeyolo.config.mqtt import with_broker_url  # noqa: PLC0415

        sinks = cfg.sinks.model_copy(update={"mqtt": with_broker_url(cfg.sinks.mqtt, mqtt_url)})
        cfg = cfg.model_copy(update={"sinks": sinks})
    if http is not None:
        from edgeyolo.health import parse_http_address  # noqa: PLC0415

        try:
            host, port = parse_http_address(http)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None  # it names the option and the value
        cfg = cfg.model_copy(
            update={
                "http": cfg.http.model_copy(update={"enabled": True, "host": host, "port": port})
            }
        )
    return cfg


def main(args: argparse.Namespace) -> int:
    path = config_path(args.config)
    # Logging first: it sets the native libraries' log levels, which OpenCV reads on import.
    cfg = load(path, args.log_format, args.log_level)
    from edgeyolo.app import RunOptions, run  # noqa: PLC0415 - heavy imports after parsing

    def overrides(c: Config) -> Config:
        return apply_overrides(c, mqtt_url=args.mqtt_url, http=args.http)

    cfg = overrides(cfg)
    for warning in config_warnings(cfg):
        _log.warning("config", path=str(path), warning=warning)
    options = RunOptions(
        max_frames=args.max_frames,
        loop=args.loop,
        pace="fast" if args.fast else None,
        config_path=path,
        overrides=overrides,
        signals=args.signals,
    )
    return run(cfg, options).exit_code
