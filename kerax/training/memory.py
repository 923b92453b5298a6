"""XLA's out-of-memory errors, re-raised as ``OutOfMemoryError`` with what the model holds.

XLA reports an allocation that does not fit as a ``JaxRuntimeError`` (``RESOURCE_EXHAUSTED:
Out of memory allocating N bytes``; XLA:CPU says ``INTERNAL: Error dispatching computation:
Out of memory ...`` for a step's buffers; CUDA ``CUDA_ERROR_OUT_OF_MEMORY``, cuDNN
``CUDNN_STATUS_ALLOC_FAILED``) and says nothing about why so much was needed. Building the
weights, ``fit``, ``evaluate`` and ``predict`` re-raise it (chained, so the original stays
in the traceback) with the model's parameter count and size, the batch size, and what
would need less memory; copying ``fit``'s data to the device says how large it is
(:func:`data_hints`). A step that fails takes the weights it was given with it (they were
donated to it): the message then says so, and later calls say that the weights are gone
instead of reporting a new shortage.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, Iterator

import jax
import numpy as np

from kerax import errors

# What XLA, CUDA and cuDNN say when an allocation fails (not a bare RESOURCE_EXHAUSTED:
# gRPC uses that for message-size limits).
_OOM = re.compile(r"out of memory|failed to allocate|CUDA_ERROR_OUT_OF_MEMORY|ALLOC_FAILED", re.IGNORECASE)

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


def is_out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` is XLA's report of an allocation that did not fit."""
    return isinstance(e, jax.errors.JaxRuntimeError) and _OOM.search(str(e)) is not None


@contextlib.contextmanager
def memory_hints(model: Any, task: str, batch_size: int | None = None, weights: Any = None) -> Iterator[None]:
    """Re-raises XLA's out-of-memory errors inside the block as ``OutOfMemoryError``.

    ``task``: ``"build"``, ``"fit"``, ``"evaluate"`` or ``"predict"``. ``weights``: the
    params and state (arrays or shapes) when the model holds none yet (``"build"``).
    """
    try:
        yield
    except jax.errors.JaxRuntimeError as e:
        if not is_out_of_memory(e):
            raise
        try:
            message = _message(model, task, batch_size, weights, e)
        except Exception:  # noqa: BLE001 - the sizes are extras: never hide XLA's error behind another
            message = f"{task} ran out of memory ({_first_line(e)})"
        raise errors.OutOfMemoryError(message) from e


@contextlib.contextmanager
def data_hints(what: str, nbytes: int) -> Iterator[None]:
    """Out of memory while copying ``nbytes`` of in-memory data to the device: names the data."""
    try:
        yield
    except jax.errors.JaxRuntimeError as e:
        if not is_out_of_memory(e):
            raise
        raise errors.OutOfMemoryError(
            f"copying {what} ({_size(nbytes)}) to the {jax.default_backend()} device ran out of memory "
            f"({_first_line(e)}). In-memory arrays go to the device whole; pass an iterable of batches "
            "instead (a generator, kx.data), which is sent batch by batch.") from e


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0]


def _message(model: Any, task: str, batch_size: int | None, weights: Any, e: Exception) -> str:
    name = model.name or model.default_name()
    where = f"model {name!r}"
    # Nothing here reads model._params / .built: while they follow the train state, that copies it.
    held_lost, state_lost = _lost(model) if task != "build" else (False, False)
    if (held_lost or state_lost) and getattr(model, "_lost_to_oom", False):  # an earlier step took them
        if held_lost:
            return (f"{task} of {where}: its weights are gone: an earlier step that ran out of memory had "
                    f"taken them over ({_first_line(e)}). Build the model again, or load it or a "
                    "checkpoint, before going on.")
        if task == "fit":
            return (f"fit of {where}: its train state (the optimizer's state) went with an earlier step "
                    f"that ran out of memory ({_first_line(e)}); the weights are fine. compile() again "
                    "to start a fresh one.")
    model._lost_to_oom = held_lost or state_lost
    if weights is None:  # their shapes only
        ts = getattr(model, "_ts", None)
        weights = ((ts.params, ts.state) if getattr(model, "_live", False) and ts is not None
                   else (model.__dict__.get("_held_params"), model.__dict__.get("_held_state")))
        weights = None if weights[0] is None else weights
    count, size = _count(weights)
    have = (f"The model has {count:,} parameters ({_size(size)})" if weights is not None
            else "The model is not built yet")
    holds = _HOLDS.get(task, "")
    if holds:
        batch = f"a batch of {batch_size} row{'s' if batch_size != 1 else ''}" if batch_size else "each batch"
        have += "; " + holds.format(batch=batch, opt=_optimizer_size(model, weights[0] if weights else None))
    what = {"build": "building the weights"}.get(task, task)
    hints = _HINTS[task]
    if getattr(getattr(model, "_compiled", None), "distribute", None) is not None:  # already split
        hints = hints.rsplit("; ", 1)[0]
    text = (f"{what} of {where} ran out of memory on the {jax.default_backend()} device "
            f"({_first_line(e)}). {have}. To need less: {hints}.")
    if held_lost:
        text += (" The failed step had taken over the weights (they are donated to each step): "
                 "they are lost with it; build the model again, or load it or a checkpoint.")
    return text


def _lost(model: Any) -> tuple[bool, bool]:
    """(the weights the model holds, its train state): whether each was deleted or carries a
    failed step's error. Reads the arrays as they are: nothing is copied or allocated."""
    state_lost = broken(getattr(model, "_ts", None))
    if getattr(model, "_live", False):  # the held weights are the train state's
        return state_lost, state_lost
    held = (model.__dict__.get("_held_params"), model.__dict__.get("_held_state"))
    return broken(held), state_lost


def broken(tree: Any) -> bool:
    """Whether an array of ``tree`` was deleted (donated) or holds a failed computation's error."""
    try:
        for a in jax.tree.leaves(tree):
            if isinstance(a, jax.Array):
                if a.is_deleted():
                    return True
                a.block_until_ready()
    except Exception:  # noqa: BLE001 - reading them failed: they hold an error
        return True
    return False


def _count(tree: Any) -> tuple[int, int]:
    """(values, bytes) of the numeric leaves of ``tree`` (random keys are left out)."""
    count = size = 0
    for a in jax.tree.leaves(tree):
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            continue
        n = int(np.prod(a.shape, dtype=np.int64))
        count, size = count + n, size + n * np.dtype(a.dtype).itemsize
    return count, size


def _optimizer_size(model: Any, params: Any) -> str:
    """`` (N values, S)`` of the compiled optimizer's state for ``params``' shapes, or ""."""
    compiled = getattr(model, "_compiled", None)
    if compiled is None or params is None:
        return ""
    try:
        shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), params)
        count, size = _count(jax.eval_shape(compiled.optimizer.init, shapes))
    except Exception:  # noqa: BLE001 - only a detail of an error message
        return ""
    return f" ({count:,} values, {_size(size)})"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
