"""kerax ``model.fit`` with ``compile(steps_per_execution=16)``: 16 steps per compiled call
(2 with ``--quick``)."""

from __future__ import annotations

import numpy as np

from bench import workloads as wl
from bench.impls import _kerax_models


def run(w: wl.Workload, weights: list[dict], data: tuple[np.ndarray, np.ndarray], steps: int) -> dict:
    """``fit`` for a warm-up epoch and ``steps`` timed steps; see ``_common.fit_result``."""
    return _kerax_models.fit(w, weights, data, steps, k=w.spe)
