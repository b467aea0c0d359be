"""Arguments of ``edgeyolo bench soak|mqtt|drift|view|tracking``; the tools: edgeyolo.benchmarks.

Only argparse here: a tool's module (ONNX Runtime, aiomqtt, numpy) is imported when that
tool runs, so ``edgeyolo --help`` stays fast. docs/benchmarks.md says what each one measures.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from edgeyolo.commands._common import DEMO_VIDEO, config_path, non_negative_int, positive_int

if TYPE_CHECKING:
    from collections.abc import Callable

    Tools = argparse._SubParsersAction[argparse.ArgumentParser]


def _runs(module: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        if getattr(args, "config", None) is None and "config" in vars(args):
            args.config = config_path(None)  # the bundled demo (an error if not a checkout)
        main: Callable[[argparse.Namespace], int] = importlib.import_module(module).main
        return main(args)

    return run


def _parser(tools: Tools, name: str, summary: str, description: str) -> argparse.ArgumentParser:
    p = tools.add_parser(
        name,
        help=summary,
        description=f"{summary}.\n\n{description}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=_runs(f"edgeyolo.benchmarks.{name}"))
    return p


def register(tools: Tools) -> None:
    """Add the ``soak``, ``mqtt``, ``drift``, ``view`` and ``tracking`` tools."""
    _soak(tools)
    _mqtt(tools)
    _drift(tools)
    _view(tools)
    _tracking(tools)


def _soak(tools: Tools) -> None:
    p = _parser(
        tools,
        "soak",
        "run the service for a while, watching its memory, fds and threads (JSON report)",
        "Runs `edgeyolo run --loop -c CONFIG`, samples /proc/PID, stops it with SIGTERM and\n"
        "times the shutdown. Growth is judged on the last half of the run after the warm-up.\n"
        "Exit 0: no growth over the limits and a clean stop; 1: growth over a limit;\n"
        "2: the service died early or did not stop cleanly on SIGTERM, or bad arguments.\n"
        "Linux only (reads /proc).",
    )
    p.add_argument("-c", "--config", required=True, type=Path, help="service config file")
    p.add_argument("--duration", type=float, default=120.0, help="seconds to run (120)")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between samples (2)")
    p.add_argument(
        "--warmup", type=float, default=None, help="seconds ignored for growth (duration/4)"
    )
    p.add_argument(
        "--max-rss-growth-mb",
        type=float,
        default=8.0,
        help="most RSS growth over the last half, MiB (8)",
    )
    p.add_argument("--max-fd-growth", type=int, default=0, help="most fd growth (0)")
    p.add_argument("--max-thread-growth", type=int, default=0, help="most thread growth (0)")
    p.add_argument(
        "--stop-timeout", type=float, default=15.0, help="seconds allowed for SIGTERM (15)"
    )
    p.add_argument(
        "--min-events", type=int, default=1, help="fewest events on stdout to call it working (1)"
    )
    p.add_argument("--python", default=sys.executable, help="interpreter that runs edgeyolo")
    p.add_argument("--samples", type=Path, help="also write every sample as JSON lines here")
    p.add_argument("--log", type=Path, help="keep the service's stderr (logs) in this file")
    p.add_argument(
        "extra", nargs=argparse.REMAINDER, help="after --: more arguments for `edgeyolo run`"
    )


def _mqtt(tools: Tools) -> None:
    p = _parser(
        tools,
        "mqtt",
        "MQTT delivery latency, messages per second per topic and outage loss (JSON report)",
        "Runs `edgeyolo run --loop` on the config (default: the bundled demo), publishing to a\n"
        "mosquitto started on a free loopback port (or the embedded broker), and subscribes to\n"
        "everything. With --outage S the broker is stopped for S seconds mid-run. Needs\n"
        "mosquitto (apt-get install mosquitto) unless --broker embedded.",
    )
    p.add_argument("--seconds", type=float, default=30.0, help="steady run before any outage")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds left out of the numbers")
    p.add_argument("--outage", type=float, default=0.0, help="stop mosquitto this long")
    p.add_argument(
        "--broker",
        choices=["mosquitto", "embedded"],
        default="mosquitto",
        help="the broker to measure through: a mosquitto the bench starts (default), or the "
        "service's embedded broker (no mosquitto needed)",
    )
    p.add_argument(
        "-c", "--config", type=Path, default=None, help="config file (default: the bundled demo)"
    )


def _drift(tools: Tools) -> None:
    p = _parser(
        tools,
        "drift",
        "how far INT8 models drift from their FP32 parent, and their CPU speed (JSON lines)",
        "On every --step-th frame of the video the FP32 model's detections are the reference;\n"
        "reported: precision and recall of each INT8 model against it, mean IoU and confidence\n"
        "difference of matches, keypoint error for pose; then the median milliseconds of one\n"
        "ONNX Runtime CPU run per model and intra-op thread count.",
    )
    p.add_argument("fp32", type=Path, help="the FP32 parent model (.onnx)")
    p.add_argument("int8", type=Path, nargs="+", help="INT8 variants of it (.onnx)")
    p.add_argument("--video", type=Path, default=DEMO_VIDEO, help="frames (the demo video)")
    p.add_argument("--step", type=int, default=5, help="every Nth frame (5)")
    p.add_argument("--conf", type=float, default=0.25, help="confidence threshold (0.25)")
    p.add_argument("--iou", type=float, default=0.7, help="NMS IoU threshold (0.7)")
    p.add_argument("--speed-runs", type=int, default=20, help="runs per round; 0 skips speed")
    p.add_argument("--rounds", type=int, default=3, help="speed rounds, interleaved (3)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="intra-op threads")
    p.add_argument("--no-drift", action="store_true", help="only the speed test")
    p.add_argument(
        "--reference-decode",
        action="store_true",
        help="use the tool's own reference decode/NMS instead of edgeyolo.postprocess",
    )


def _view(tools: Tools) -> None:
    p = _parser(
        tools,
        "view",
        "what seeing costs: annotate + JPEG per frame, the service with HTTP off/on/viewed (JSON)",
        "1. draw: the config's models on its first camera's frames; per frame the median and\n"
        "p95 ms of annotate, of the JPEG encode and of both, and the live view's idle tap.\n"
        "2. service: the config run flat out for --frames frames, in alternating rounds: HTTP\n"
        "off, HTTP on with no viewer, HTTP on with one MJPEG viewer; per-frame ms and fps.",
    )
    p.add_argument(
        "-c", "--config", type=Path, default=None, help="config file (default: the bundled demo)"
    )
    p.add_argument("--frames", type=positive_int, default=60, help="frames per service run (60)")
    p.add_argument(
        "--warmup", type=non_negative_int, default=5, help="frames not counted per run (5)"
    )
    p.add_argument("--rounds", type=positive_int, default=2, help="alternating rounds (2)")
    p.add_argument(
        "--draw-frames", type=positive_int, default=30, help="frames for the draw part (30)"
    )


def _tracking(tools: Tools) -> None:
    p = _parser(
        tools,
        "tracking",
        "what tracking costs per frame: the tracker alone, and with zones, lines, lifecycle (JSON)",
        "A synthetic scene of --objects walkers at constant velocity with pixel noise, some of\n"
        "them crossing, over --frames frames of 960x540; per variant the microseconds of one\n"
        "frame's update after a warm-up (what the tracking stage adds per model).",
    )
    p.add_argument("--objects", type=positive_int, default=20, help="walkers in the scene (20)")
    p.add_argument("--frames", type=positive_int, default=600, help="frames (600)")
    p.add_argument("--warmup", type=non_negative_int, default=30, help="frames not counted (30)")
    p.add_argument("--seed", type=int, default=1, help="seed of the scene (1)")
