"""The progress display of ``fit``/``evaluate``/``predict``: a per-epoch bar (tqdm) in a
terminal, one line per epoch otherwise, nothing with ``verbose=0``.

The bar refreshes at most every ``interval`` seconds; only then are the running metrics
copied from the device (``logs_fn``), so the display costs no host sync per step.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable

import numpy as np


def format_logs(logs: dict) -> str:
    parts = []
    for k, v in logs.items():
        try:
            v = float(np.asarray(v))
            parts.append(f"{k}: {v:.4g}" if abs(v) < 1e-3 and v != 0 else f"{k}: {v:.4f}")
        except (TypeError, ValueError):
            continue
    return " - ".join(parts)


def resolve_verbose(verbose: Any) -> int:
    if verbose == "auto":
        return 1 if sys.stdout.isatty() else 2
    return int(verbose)


class Progress:
    """One epoch's display: ``update(n, logs_fn)`` per execution, ``close(logs)`` at the end."""

    def __init__(self, verbose: int, total: int | None, desc: str, interval: float = 0.2,
                 stream: Any = None) -> None:
        self.verbose, self.total, self.desc = verbose, total, desc
        self.interval, self.stream = interval, stream or sys.stdout
        self.start = self.last = time.perf_counter()
        self.done = 0
        self.bar = None
        if verbose == 1:
            from tqdm.auto import tqdm

            print(desc, file=self.stream) if desc else None
            self.bar = tqdm(
                total=total, file=self.stream, unit="step", leave=True, dynamic_ncols=True,
                bar_format="{n_fmt}/{total_fmt} {bar:20} {elapsed}<{remaining} {rate_fmt}{postfix}"
                if total else "{n_fmt} steps {elapsed} {rate_fmt}{postfix}",
                mininterval=interval,
            )

    def update(self, n: int, logs_fn: Callable[[], dict] | None = None) -> None:
        self.done += n
        if self.bar is None:
            return
        now = time.perf_counter()
        if logs_fn is not None and now - self.last >= self.interval:
            self.last = now
            self.bar.set_postfix_str(format_logs(logs_fn()), refresh=False)
        self.bar.update(n)

    def close(self, logs: dict | None = None) -> None:
        elapsed = time.perf_counter() - self.start
        if self.bar is not None:
            if logs:
                self.bar.set_postfix_str(format_logs(logs), refresh=False)
            self.bar.close()
        elif self.verbose == 2:
            line = f"{self.desc} - {elapsed:.0f}s {per_step(elapsed / max(self.done, 1))}"
            if logs:
                line += " - " + format_logs(logs)
            print(line, file=self.stream, flush=True)


def per_step(seconds: float) -> str:
    """Keras's time-per-step unit: ``2s/step``, ``35ms/step`` or ``480us/step``."""
    if seconds >= 1:
        return f"{seconds:.0f}s/step"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.0f}ms/step"
    return f"{seconds * 1e6:.0f}us/step"
