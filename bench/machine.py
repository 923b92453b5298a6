"""The machine a benchmark ran on, and waiting for it to be idle before a measurement.

``cpu_busy`` samples ``/proc/stat`` (Linux); elsewhere the 1-minute load average stands in.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import sys
import time

PACKAGES = ("jax", "jaxlib", "optax", "flax", "equinox", "keras", "numpy", "kerax")


def _cpu_times() -> tuple[int, int] | None:
    """(idle, total) jiffies of all CPUs since boot, or None where /proc/stat is missing."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return idle, sum(fields[:8])


def cpu_busy(interval: float = 0.5) -> float:
    """The fraction of all CPUs' time spent busy over the next ``interval`` seconds (0..1)."""
    a = _cpu_times()
    if a is None:
        time.sleep(interval)
        return min(os.getloadavg()[0] / (os.cpu_count() or 1), 1.0)
    time.sleep(interval)
    b = _cpu_times()
    total = b[1] - a[1]
    return 0.0 if total <= 0 else 1.0 - (b[0] - a[0]) / total


def wait_idle(threshold: float = 0.15, cap: float = 5.0, interval: float = 0.5) -> dict:
    """Waits until the CPUs are less than ``threshold`` busy, at most ``cap`` seconds.

    Returns ``{"waited_s", "busy", "capped"}``: the time spent, the last busy fraction, and
    whether the cap was hit (the measurement then ran on a busy machine).
    """
    start = time.perf_counter()
    while True:
        busy = cpu_busy(interval)
        waited = time.perf_counter() - start
        if busy < threshold:
            return {"waited_s": waited, "busy": busy, "capped": False}
        if waited >= cap:
            return {"waited_s": waited, "busy": busy, "capped": True}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict[str, str]:
    """Installed versions of the packages that matter here ("-" where absent); nothing is imported."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "-"
    return out


def describe() -> dict:
    """CPU model, core count, platform, package versions, the date and the command line."""
    return {
        "cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
        "versions": versions(), "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
        "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
