"""XLA's out-of-memory errors, re-raised as ``OutOfMemoryError`` with what the model holds.

XLA reports an allocation that does not fit as a ``JaxRuntimeError`` (``RESOURCE_EXHAUSTED:
Out of memory allocating N bytes``; XLA:CPU says ``INTERNAL: Error dispatching computation:
Out of memory ...`` for a step's buffers) and says nothing about why so much was needed. Building the
weights, ``fit``, ``evaluate`` and ``predict`` re-raise it (chained, so the original stays
in the traceback) with the model's parameter count and size, the batch size, and what
would need less memory.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import jax
import numpy as np

from kerax import errors

_HOLDS = {
    "fit": "training holds them, their gradients, the optimizer's state{opt} and the activations "
           "of {batch}",
    "evaluate": "evaluate holds them and the activations of {batch}",
    "predict": "predict holds them and the activations of {batch}",
}
_HINTS = {
    "fit": "a smaller batch_size; dtype_policy=\"mixed_bfloat16\" (activations in half the bytes); "
           "layers.Repeat(block, n, remat=True) (activations recomputed in the backward pass); "
           "compile(distribute=kx.distribute.DataParallel()) to split each batch over several devices",
    "evaluate": "a smaller batch_size, or dtype_policy=\"mixed_bfloat16\"",
    "predict": "a smaller batch_size, or dtype_policy=\"mixed_bfloat16\"",
    "build": "fewer or smaller layers: the weights alone need this much",
}


@contextlib.contextmanager
def memory_hints(model: Any, task: str, batch_size: int | None = None, weights: Any = None) -> Iterator[None]:
    """Re-raises XLA's out-of-memory errors inside the block as ``OutOfMemoryError``.

    ``task``: ``"build"``, ``"fit"``, ``"evaluate"`` or ``"predict"``. ``weights``: the
    params and state (arrays or shapes) when the model holds none yet (``"build"``).
    """
    try:
        yield
    except jax.errors.JaxRuntimeError as e:
        if "RESOURCE_EXHAUSTED" not in str(e) and "Out of memory" not in str(e):
            raise
        raise errors.OutOfMemoryError(_message(model, task, batch_size, weights, e)) from e


def _message(model: Any, task: str, batch_size: int | None, weights: Any, e: Exception) -> str:
    if weights is None:
        weights = (model._params, model._state) if model.built else None
    leaves = jax.tree.leaves(weights)
    count = sum(int(np.prod(a.shape, dtype=np.int64)) for a in leaves)
    size = sum(int(np.prod(a.shape, dtype=np.int64)) * np.dtype(a.dtype).itemsize for a in leaves)
    what = {"build": "building the weights"}.get(task, task)
    xla = str(e).strip().splitlines()[0]
    have = (f"The model has {count:,} parameters ({_size(size)})" if weights is not None
            else "The model is not built yet")
    holds = _HOLDS.get(task, "")
    if holds:
        batch = f"a batch of {batch_size} row{'s' if batch_size != 1 else ''}" if batch_size else "each batch"
        have += "; " + holds.format(batch=batch, opt=_optimizer_size(model))
    name = model.name or model.default_name()
    return (f"{what} of model {name!r} ran out of memory on the {jax.default_backend()} device "
            f"({xla}). {have}. To need less: {_HINTS[task]}.")


def _optimizer_size(model: Any) -> str:
    """`` (N values, S)`` of the compiled optimizer's state for the held params, or ""."""
    compiled = getattr(model, "_compiled", None)
    if compiled is None or not model.built:
        return ""
    try:
        leaves = jax.tree.leaves(jax.eval_shape(compiled.optimizer.init, model._params))
    except Exception:  # noqa: BLE001 - only a detail of an error message
        return ""
    count = sum(int(np.prod(a.shape, dtype=np.int64)) for a in leaves)
    size = sum(int(np.prod(a.shape, dtype=np.int64)) * np.dtype(a.dtype).itemsize for a in leaves)
    return f" ({count:,} values, {_size(size)})"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
