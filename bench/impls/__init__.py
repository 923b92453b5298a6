"""The implementations: one module each, imported lazily by name.

Each module has ``run(workload, weights, data, steps) -> result`` (see ``_common`` for the
result's fields): it trains the workload from the neutral ``weights`` over ``data`` (one
epoch of NumPy arrays, no shuffling, no dropout) for one warm-up epoch and ``steps`` timed
steps. A peer framework that is not installed is skipped with a note, not an error.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Callable

# name -> (module, the packages it needs beyond jax/optax/numpy)
IMPLS: dict[str, tuple[str, tuple[str, ...]]] = {
    "handwritten": ("bench.impls.handwritten", ()),
    "handwritten_scan16": ("bench.impls.handwritten_scan16", ()),
    "kerax_fit": ("bench.impls.kerax_fit", ("kerax",)),
    "kerax_fit_spe16": ("bench.impls.kerax_fit_spe16", ("kerax",)),
    "kerax_pure": ("bench.impls.kerax_pure", ("kerax",)),
    "flax_nnx": ("bench.impls.flax_nnx", ("flax",)),
    "flax_linen": ("bench.impls.flax_linen", ("flax",)),
    "equinox": ("bench.impls.equinox_impl", ("equinox",)),
    "keras_fit": ("bench.impls.keras_fit", ("keras",)),
    "keras_fit_spe16": ("bench.impls.keras_fit_spe16", ("keras",)),
}
REFERENCE = "handwritten"


class Skipped(Exception):
    """The implementation cannot run here (a missing package, an unsupported workload)."""


def load(name: str) -> Callable:
    """The ``run`` function of implementation ``name``.

    Raises:
        KeyError: unknown name (the message lists the known ones).
        Skipped: a package it needs is not installed.
    """
    if name not in IMPLS:
        raise KeyError(f"unknown implementation {name!r}; expected one of {sorted(IMPLS)}")
    module, needs = IMPLS[name]
    for package in needs:
        if importlib.util.find_spec(package) is None:
            raise Skipped(f"{package} is not installed")
    try:
        return importlib.import_module(module).run
    except ImportError as e:
        raise Skipped(f"import failed: {e}") from e
