"""Keras 3 ``model.fit`` on the JAX backend with ``compile(steps_per_execution=16)`` (2 with
``--quick``).

Keras's JAX trainer runs the K steps as a Python loop of its one-step jitted function
(keras/src/backend/jax/trainer.py, ``_make_function``), not as one compiled program.
"""

from __future__ import annotations

import numpy as np

from bench import workloads as wl
from bench.impls import _keras_models


def run(w: wl.Workload, weights: list[dict], data: tuple[np.ndarray, np.ndarray], steps: int) -> dict:
    """``fit`` for a warm-up epoch and ``steps`` timed steps; see ``_common.fit_result``."""
    return _keras_models.fit(w, weights, data, steps, k=w.spe)
