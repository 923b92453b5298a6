"""Keras 3 ``model.fit`` on the JAX backend, one optimizer step per compiled call."""

from __future__ import annotations

import numpy as np

from bench import workloads as wl
from bench.impls import _keras_models


def run(w: wl.Workload, weights: list[dict], data: tuple[np.ndarray, np.ndarray], steps: int) -> dict:
    """``fit`` for a warm-up epoch and ``steps`` timed steps; see ``_common.fit_result``."""
    return _keras_models.fit(w, weights, data, steps, k=1)
