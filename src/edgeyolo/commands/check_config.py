"""``edgeyolo check-config``: validate a config file and the models it points at."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgeyolo.config import ConfigValidationError, config_warnings, load_config
from edgeyolo.errors import ConfigError
from edgeyolo.sources.kinds import source_kind


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "check-config",
        help="validate a config file",
        description="Check a config file: every error is printed as key path, value and "
        "message. Models are opened to check their task and classes (--no-models skips that).",
    )
    p.add_argument("file", type=Path)
    p.add_argument("--no-models", action="store_true", help="do not open the model files")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    path: Path = args.file
    try:
        cfg = load_config(path)
    except ConfigValidationError as exc:
        for issue in exc.issues:
            print(f"{path}: {issue}", file=sys.stderr)
        print(f"{path}: {len(exc.issues)} error(s)", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    for warning in config_warnings(cfg):
        print(f"{path}: warning: {warning}", file=sys.stderr)
    for i, cam in enumerate(cfg.cameras):  # `run` logs this when it starts (not in warnings)
        if not cfg.models_for(cam.name):
            print(
                f"{path}: warning: cameras[{i}] {cam.name!r}: no model runs on it "
                "(every model's cameras list leaves it out), so it is not run",
                file=sys.stderr,
            )
    problems = 0
    gstreamer = [i for i, c in enumerate(cfg.cameras) if source_kind(c.source) == "gstreamer"]
    if gstreamer:
        from edgeyolo.sources.opencv import no_gstreamer_message, opencv_info  # noqa: PLC0415

        if opencv_info().gstreamer is None:
            for i in gstreamer:
                print(f"{path}: cameras[{i}].source: {no_gstreamer_message()}", file=sys.stderr)
                problems += 1
    if not args.no_models:
        from edgeyolo.engines.check import model_problems  # noqa: PLC0415

        for problem in model_problems(cfg):
            print(f"{path}: {problem}", file=sys.stderr)
            problems += 1
    if problems:
        print(f"{path}: {problems} error(s)", file=sys.stderr)
        return 1
    print(
        f"{path}: ok ({len(cfg.cameras)} camera(s), {len(cfg.models)} model(s), "
        f"backend {cfg.backend})"
    )
    return 0
