"""``edgeyolo bench soak``: run the service for a while, watching its memory, fds and threads.

Runs ``python -m edgeyolo run --loop -c CONFIG`` (looped video keeps it busy), samples
/proc/PID every few seconds, then stops it with SIGTERM and times the shutdown. Prints one
JSON report on stdout and exits:

  0  no unbounded growth, clean shutdown (exit 0 within --stop-timeout)
  1  growth over a threshold (RSS over the last half, any fd or thread growth by default)
  2  the service died early, or did not stop cleanly on SIGTERM; or bad arguments

Growth is judged on the last half of the run after the warm-up, because the first frames
legitimately grow arenas and caches: RSS growth is the median of the last three samples minus
the median of the first three samples of that half; fd and thread growth is the highest value
in that half minus its first value.

Example: edgeyolo bench soak -c config/demo.yaml --duration 600 --samples soak.jsonl
Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

from edgeyolo.errors import ConfigError


def read_sample(pid: int) -> dict[str, float] | None:
    """RSS (MiB), open fds, OS threads and CPU seconds of ``pid``; None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
        fds = sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if "VmRSS" not in fields:  # a zombie has no memory lines any more
        return None
    # Fields after the ")" that ends the command name: utime and stime are the 12th and 13th.
    after = stat.rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return {
        "rss_mb": int(fields["VmRSS"].split()[0]) / 1024,
        "fds": fds,
        "threads": int(fields["Threads"]),
        "cpu_s": (int(after[11]) + int(after[12])) / ticks,
    }


def _count_lines(stream: IO[bytes], counter: list[int]) -> None:
    # Events go to stdout as JSON lines; counting them proves the service did work.
    for _ in stream:
        counter[0] += 1


def _series(samples: list[dict[str, Any]], key: str) -> list[float]:
    return [s[key] for s in samples]


def _slope_per_hour(samples: list[dict[str, Any]], key: str) -> float:
    if len(samples) < 2:
        return 0.0
    xs = [float(s["t"]) for s in samples]
    ys = [float(s[key]) for s in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    if den == 0:
        return 0.0
    num: float = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    return num / den * 3600


def analyse(samples: list[dict[str, Any]], warmup_s: float) -> dict[str, Any]:
    """Start/end/max and growth over the last half (after ``warmup_s``) per quantity."""
    steady = [s for s in samples if s["t"] >= warmup_s] or samples
    mid_t = steady[0]["t"] + (steady[-1]["t"] - steady[0]["t"]) / 2
    last_half = [s for s in steady if s["t"] >= mid_t] or steady[-1:]
    out: dict[str, Any] = {}
    for key in ("rss_mb", "fds", "threads"):
        values = _series(samples, key)
        half = _series(last_half, key)
        if key == "rss_mb":
            growth = statistics.median(half[-3:]) - statistics.median(half[:3])
        else:
            growth = max(half) - half[0]
        out[key] = {
            "start": round(values[0], 2),
            "after_warmup": round(steady[0][key], 2),
            "mid": round(half[0], 2),
            "end": round(values[-1], 2),
            "max": round(max(values), 2),
            "growth_last_half": round(growth, 2),
            "slope_per_hour_last_half": round(_slope_per_hour(last_half, key), 2),
        }
    return out


def _check_args(args: argparse.Namespace) -> None:
    if args.duration <= 0 or args.interval <= 0:
        raise ConfigError(
            f"--duration {args.duration} and --interval {args.interval} must be positive"
        )
    if not args.config.is_file():
        raise ConfigError(f"--config {args.config}: no such file")
    if args.warmup is None:
        args.warmup = args.duration / 4
    args.extra = [a for a in args.extra if a != "--"] if args.extra else []


def main(args: argparse.Namespace) -> int:
    """Run, sample, stop; print the JSON report; 0 when nothing grew and it stopped cleanly."""
    _check_args(args)
    cmd = [args.python, "-m", "edgeyolo", "run", "--loop", "-c", str(args.config), *args.extra]
    log_file = args.log or Path(tempfile.mkstemp(prefix="edgeyolo-soak-", suffix=".log")[1])
    failures: list[str] = []
    samples: list[dict[str, Any]] = []
    events = [0]
    with log_file.open("wb") as log:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, start_new_session=True)
        assert proc.stdout is not None
        reader = threading.Thread(target=_count_lines, args=(proc.stdout, events), daemon=True)
        reader.start()
        died_early = False
        try:
            while (t := time.monotonic() - t0) < args.duration:
                sample = read_sample(proc.pid) if proc.poll() is None else None
                if sample is None:
                    died_early = True
                    failures.append(f"service exited early with code {proc.wait()} after {t:.1f} s")
                    break
                samples.append({"t": round(t, 2), **sample, "events": events[0]})
                time.sleep(min(args.interval, max(0.0, args.duration - t)))
            shutdown: dict[str, Any] = {}
            if not died_early:
                last = read_sample(proc.pid)
                if last is not None:
                    samples.append(
                        {"t": round(time.monotonic() - t0, 2), **last, "events": events[0]}
                    )
                ts = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                try:
                    code = proc.wait(timeout=args.stop_timeout)
                    shutdown = {"seconds": round(time.monotonic() - ts, 3), "exit_code": code}
                    if code != 0:
                        failures.append(f"exit code {code} after SIGTERM (expected 0)")
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    shutdown = {"seconds": None, "exit_code": None, "killed": True}
                    failures.append(f"did not stop within {args.stop_timeout} s of SIGTERM")
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            reader.join(timeout=5)
    code = 2 if failures else 0
    report: dict[str, Any] = {
        "command": cmd,
        "pid": proc.pid,
        "duration_s": round(samples[-1]["t"], 2) if samples else 0.0,
        "samples": len(samples),
        "events": events[0],
        "warmup_s": args.warmup,
        "log": str(log_file),
    }
    if samples:
        growth = analyse(samples, args.warmup)
        report.update(growth)
        limits = {
            "rss_mb": args.max_rss_growth_mb,
            "fds": args.max_fd_growth,
            "threads": args.max_thread_growth,
        }
        for key, limit in limits.items():
            g = growth[key]["growth_last_half"]
            if g > limit:
                failures.append(f"{key} grew by {g} over the last half (limit {limit})")
                code = code or 1
        report["thresholds"] = limits
        report["cpu_s"] = round(samples[-1]["cpu_s"], 2)
    if not died_early:
        report["shutdown"] = shutdown
    if events[0] < args.min_events:
        failures.append(f"the service emitted {events[0]} events (expected {args.min_events}+)")
        code = code or 2
    report["failures"] = failures
    report["ok"] = not failures
    if args.samples:
        with args.samples.open("w", encoding="utf-8") as fh:
            for s in samples:
                fh.write(json.dumps(s) + "\n")
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
    if failures:
        tail = log_file.read_text(encoding="utf-8", errors="replace").splitlines()[-20:]
        sys.stderr.write("soak failed: " + "; ".join(failures) + "\nlast log lines:\n")
        sys.stderr.write("\n".join(tail) + "\n")
    return code
