"""Runs ONE (implementation, workload) in this process and prints its result as one JSON line.

    python bench/worker.py IMPL WORKLOAD [--quick] [--steps N] [--epochs E] [--fast-compile]

The runner (``bench/run.py``) starts one fresh process of this per measurement, so
compilation caches, allocator state and imports never carry from one run to the next.
Fields: impl, workload, first_step_s, step_s (median, min, max over the timed epochs),
steps_per_s and samples_per_s (from the median), peak_rss_mb (``ru_maxrss``), epoch_losses,
losses, notes; or ``skipped`` / ``error`` with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import traceback
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``bench`` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("KERAS_BACKEND", "jax")  # Keras 3 reads it once, at import

from bench import impls, workloads  # noqa: E402
from bench.impls._common import Unsupported, skip_settling  # noqa: E402


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def _device() -> str:
    import jax

    d = jax.devices()[0]
    return f"{jax.default_backend()}: {d.device_kind} x{jax.device_count()}"


def run_one(impl: str, workload: str, quick: bool = False, steps: int | None = None,
            epochs: int | None = None) -> dict:
    """Measures ``impl`` on ``workload`` in this process; the result dict (see module doc)."""
    w = workloads.get(workload, quick).with_steps(steps, epochs)
    out: dict = {"impl": impl, "workload": w.name, "quick": quick, "batch": w.batch,
                 "steps_per_epoch": w.steps, "timed_epochs": w.epochs}
    try:
        fn = impls.load(impl)
        with skip_settling(quick):  # quick mode times nothing
            result = fn(w, workloads.make_weights(w), workloads.make_data(w), w.steps * w.epochs)
    except (impls.Skipped, Unsupported) as e:
        return {**out, "skipped": str(e)}
    times = result.pop("step_times_s")
    med = statistics.median(times)
    out.update(result)
    out.update({
        "step_s": {"median": med, "min": min(times), "max": max(times), "samples": times},
        "steps_per_s": 1.0 / med, "samples_per_s": w.batch / med,
        "peak_rss_mb": peak_rss_mb(), "device": _device(),
    })
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("impl", choices=sorted(impls.IMPLS))
    parser.add_argument("workload", choices=sorted(workloads.WORKLOADS))
    parser.add_argument("--quick", action="store_true", help="toy sizes")
    parser.add_argument("--steps", type=int, default=None, help="steps per epoch (a multiple of 16)")
    parser.add_argument("--epochs", type=int, default=None, help="timed epochs after the warm-up one")
    parser.add_argument("--fast-compile", action="store_true", help="XLA with most optimizations off (no timings)")
    args = parser.parse_args(argv)
    if args.fast_compile:
        import jax

        jax.config.update("jax_disable_most_optimizations", True)
    try:
        out = run_one(args.impl, args.workload, args.quick, args.steps, args.epochs)
    except Exception as e:  # reported to the runner as data, with the traceback's end
        out = {"impl": args.impl, "workload": args.workload, "error": f"{type(e).__name__}: {e}",
               "traceback": traceback.format_exc()[-2000:]}
    out["python"] = platform.python_version()
    print(json.dumps(out), flush=True)
    return 0 if "error" not in out else 1


if __name__ == "__main__":
    sys.exit(main())
