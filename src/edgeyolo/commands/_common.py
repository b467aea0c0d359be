"""Helpers shared by subcommands: finding and loading the config, setting up logs."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgeyolo.config import Config, load_config
from edgeyolo.errors import ConfigError
from edgeyolo.log import configure_logging

# The repository's demo config and video; present in a source checkout (what `make demo` uses).
DEMO_CONFIG = Path(__file__).resolve().parents[3] / "config" / "demo.yaml"
DEMO_VIDEO = DEMO_CONFIG.parents[1] / "media" / "demo-scene.mp4"


def add_config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        default=None,
        help=f"config file (default: the bundled demo, {DEMO_CONFIG.name})",
    )


def _whole_number(text: str, low: int, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"{value}; expected {expected}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number of at least 0 (frames left out of a measurement...)."""
    return _whole_number(text, 0, "0 or more")


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (a count of frames, rounds...)."""
    return _whole_number(text, 1, "at least 1")


def config_path(arg: Path | None) -> Path:
    if arg is not None:
        return arg
    if not DEMO_CONFIG.is_file():
        raise ConfigError(
            f"no -c CONFIG given and the bundled demo config is not here ({DEMO_CONFIG}); "
            "it ships with a source checkout: run from the repository, or pass -c"
        )
    return DEMO_CONFIG


def load(arg: Path | None, log_format: str | None = None, log_level: str | None = None) -> Config:
    """Load the config and configure logging from it (command-line values win)."""
    cfg = load_config(config_path(arg))
    configure_logging(log_format or cfg.logging.format, log_level or cfg.logging.level)  # type: ignore[arg-type]
    return cfg
