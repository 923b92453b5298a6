"""Hand-written JAX with 16 optimizer steps per compiled call (``lax.scan`` over the steps;
2 with ``--quick``).

XLA:CPU runs a convolution inside a rolled loop many times slower than outside it (an open
JAX issue, jax-ml/jax#12868), so for convolutional models on CPU the scan is fully
unrolled, the same rule kerax's ``steps_per_execution`` follows.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from bench import workloads as wl
from bench.impls._common import loop_run, stacked
from bench.impls.handwritten import adam, model, one_step


def run(w: wl.Workload, weights: list[dict], data: tuple[np.ndarray, np.ndarray], steps: int) -> dict:
    """Trains ``w`` for a warm-up epoch and ``steps`` timed steps, ``w.spe`` steps per call."""
    started = time.perf_counter()
    params, apply = model(w, weights)
    tx = adam()
    one = one_step(apply, tx)
    unroll = w.arch == "cnn" and jax.default_backend() == "cpu"
    step = jax.jit(lambda carry, xs, ys: jax.lax.scan(one, carry, (xs, ys), unroll=unroll), donate_argnums=0)
    feeds = [jax.device_put(b) for b in stacked(wl.batches(*data, w.batch), w.spe)]
    carry = (params, tx.init(params))
    result = loop_run(lambda c, f: step(c, *f), carry, feeds, max(1, steps // w.steps), started, w.spe)
    if unroll:
        result["notes"].append("scan unrolled: convolution on CPU (jax-ml/jax#12868)")
    return result
