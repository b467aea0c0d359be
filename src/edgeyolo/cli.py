"""The ``edgeyolo`` command line: subcommands live in ``edgeyolo.commands``."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import threading

from edgeyolo import __version__
from edgeyolo.errors import EdgeYoloError
from edgeyolo.secrets import redact
from edgeyolo.signals import SignalRelay

# Order is the order shown in --help. Each module has register(subparsers).
COMMANDS = (
    "run",
    "check_config",
    "predict",
    "bench",
    "quantize",
    "mqtt",
    "build",
    "doctor",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgeyolo",
        description="Run several YOLO models at once on camera frames and publish what they see.",
    )
    parser.add_argument("--version", action="version", version=f"edgeyolo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"edgeyolo.commands.{name}").register(sub)
    return parser


NO_OPENCV = (
    "OpenCV (the cv2 module) is not importable. Install PyPI's build with "
    "pip install 'edgeyolo[opencv]', or use the system's (JetPack's libopencv-python, "
    "Debian's python3-opencv: needed for GStreamer cameras) from a venv made with "
    "--system-site-packages; see docs/deploy.md"
)


def _reserve_closed_std_fds() -> None:
    """Started with stdout or stderr closed (``2>&-``): put /dev/null on the descriptor, so that
    no file or socket opened later becomes fd 1 or 2 (where native libraries print), and give
    Python a stderr to log to (it had None, and the first log line raised). ``sys.stdout``
    stays None: the JSON-lines sink then says that stdout is closed."""
    for fd in (1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_WRONLY)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    if sys.stderr is None:
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115 - the process's stderr


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _reserve_closed_std_fds()
    relay = None
    if argv[:1] == ["run"] and threading.current_thread() is threading.main_thread():
        # Before the heavy imports: from here on a SIGHUP/SIGTERM/SIGINT never kills
        # the service unhandled (edgeyolo.signals).
        relay = SignalRelay()
        relay.install()
    try:
        return _main(argv, relay)
    finally:
        if relay is not None:
            relay.restore()


def _main(argv: list[str], relay: SignalRelay | None) -> int:
    # structlog (imported by edgeyolo.log) takes a good part of a second to import on a busy
    # small box: only after the signal handlers are in place.
    from edgeyolo.log import quiet_native_logs_early  # noqa: PLC0415

    quiet_native_logs_early()
    parser = build_parser()
    args = parser.parse_args(argv)
    args.signals = relay
    try:
        code: int = args.func(args)
    except EdgeYoloError as exc:
        print(f"edgeyolo {args.command}: error: {redact(str(exc))}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if exc.name != "cv2":
            raise
        print(f"edgeyolo {args.command}: error: {NO_OPENCV}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
