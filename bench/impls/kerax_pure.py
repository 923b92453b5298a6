"""kerax's pure level: a ``kx.make_train_step`` loop over batches already on the device,
with an optax optimizer as research code writes it (Keras's Adam formula, see ``_adam``)."""

from __future__ import annotations

import time

import jax
import numpy as np

import kerax as kx

from bench import workloads as wl
from bench.impls import _kerax_models
from bench.impls._common import loop_run
from bench.impls.handwritten import adam


def run(w: wl.Workload, weights: list[dict], data: tuple[np.ndarray, np.ndarray], steps: int) -> dict:
    """Trains ``w`` for a warm-up epoch and ``steps`` timed steps; see ``_common``."""
    started = time.perf_counter()
    model = _kerax_models.build(w, weights)
    ts = kx.TrainState.create(model, model.params, model.state, adam(), rng=jax.random.key(0))
    step = kx.make_train_step(model, loss=_kerax_models.loss())
    feeds = [jax.device_put(b) for b in wl.batches(*data, w.batch)]

    def call(ts, batch):
        ts, logs = step(ts, batch)
        return ts, logs["loss"]

    return loop_run(call, ts, feeds, max(1, steps // w.steps), started)
