"""User-facing batching: in-memory arrays to NumPy batches, and any iterable to ``fit``'s batches.

``batches`` cuts arrays (or lists / dicts of arrays, as ``fit`` takes them) into batches in
the same order ``fit`` uses: epoch ``e`` of ``batches(..., shuffle=True, seed=s)`` is
``epoch_order(n, True, s, e)``, exactly what ``fit(..., shuffle=True, seed=s)`` trains on.

``from_iterable`` is the bridge from other libraries' loaders (grain, a PyTorch DataLoader,
``tf.data`` through ``.as_numpy_iterator()``, a generator) to NumPy batches.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

import jax
import numpy as np

from kerax import errors
from kerax.data.arrays import ArrayData, as_arrays, epoch_order


def batches(x: Any, y: Any = None, batch_size: int = 32, shuffle: bool = False, seed: int = 0,
            drop_remainder: bool = False, epochs: int = 1) -> Iterator[tuple[Any, Any]]:
    """Cuts in-memory data into ``(x, y)`` NumPy batches, epoch after epoch.

    Args:
      x: an array, a nested list of numbers, or a list / dict of arrays (several inputs).
      y: targets of the same number of rows, in the same forms, or ``None``.
      batch_size: rows per batch; the last batch of an epoch may be smaller.
      shuffle: a new seeded permutation each epoch, the one ``fit(shuffle=True, seed=seed)``
        uses for the same epoch.
      seed: the shuffling seed.
      drop_remainder: leave out each epoch's last batch when it has fewer than
        ``batch_size`` rows.
      epochs: how many passes to make over the data.

    Returns:
      An iterator of ``(x_batch, y_batch)``: each leaf of shape ``(batch, ...)``, the same
      structure as ``x`` and ``y`` (``y_batch`` is ``None`` when ``y`` is).

    Raises:
      DataError: ``x`` and ``y`` differ in length, the data is empty, ``batch_size`` or
        ``epochs`` is not a positive int, or ``drop_remainder`` leaves no batch.

    Example:
      >>> for xb, yb in kx.data.batches(x, y, batch_size=64, shuffle=True, seed=1, epochs=3):
      ...     ts, logs = train_step(ts, (xb, yb))
    """
    for value, name in ((batch_size, "batch_size"), (epochs, "epochs")):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise errors.DataError(f"batches: {name} must be a positive int; received {name}={value!r}")
    data = ArrayData(as_arrays(x, "x"), as_arrays(y, "y"))  # checks lengths and emptiness
    if drop_remainder and data.n < batch_size:
        raise errors.DataError(
            f"batches: drop_remainder=True with batch_size={batch_size} leaves no batch of "
            f"the {data.n} samples; expected at least {batch_size} samples"
        )
    # Checked above, eagerly: the generator below would only raise on the first next().
    return _generate(data, int(batch_size), bool(shuffle), int(seed), bool(drop_remainder), int(epochs))


def _generate(data: ArrayData, batch_size: int, shuffle: bool, seed: int, drop_remainder: bool,
              epochs: int) -> Iterator[tuple[Any, Any]]:
    stop = data.n - data.n % batch_size if drop_remainder else data.n
    pick = lambda tree, rows: None if tree is None else jax.tree.map(lambda a: a[rows], tree)
    for epoch in range(epochs):
        order = epoch_order(data.n, shuffle, seed, epoch)
        for start in range(0, stop, batch_size):
            rows = order[start:start + batch_size]
            yield pick(data.x, rows), pick(data.y, rows)


def from_iterable(iterable: Iterable[Any], map_fn: Callable[[Any], Any] | None = None) -> Iterable[Any]:
    """Wraps any iterable of batches so that it yields NumPy batches ``fit`` accepts.

    Each batch is a tuple ``(x, y[, sample_weight])`` (or a list, or a dict with an ``"x"``
    key); its leaves may be NumPy or JAX arrays or tensors with a ``.numpy()`` method
    (PyTorch, TensorFlow); lists and dicts inside (several inputs) keep their structure.
    ``map_fn``, if given, is applied to each batch after the conversion to NumPy, for
    batches of another shape (``lambda b: (b["image"], b["label"])``).

    Args:
      iterable: a DataLoader, a grain loader, ``ds.as_numpy_iterator()``, a generator, a list.
      map_fn: ``batch -> (x, y[, sample_weight])``, run on the host.

    Returns:
      A re-iterable (each ``iter()`` restarts the source, so ``fit`` runs every epoch over
      it) when the source is re-iterable; a one-shot iterator when the source is one (a
      generator: pass ``fit`` a ``steps_per_epoch``, it then draws across epochs).

    Raises:
      DataError: (while iterating) a batch, after ``map_fn``, is not ``(x, y[, sample_weight])``.

    Example:
      >>> model.fit(kx.data.from_iterable(torch_loader), epochs=3)
    """
    if map_fn is not None and not callable(map_fn):
        raise errors.DataError(f"from_iterable: map_fn must be callable; received {type(map_fn).__name__}")
    if not hasattr(iterable, "__iter__"):
        raise errors.DataError(
            f"from_iterable: expected an iterable of batches; received {type(iterable).__name__}"
        )
    if iter(iterable) is iterable:
        return _OneShotBatches(iterable, map_fn)
    return IterableBatches(iterable, map_fn)


class IterableBatches:
    """A re-iterable view of ``source`` that yields converted batches (see ``from_iterable``)."""

    def __init__(self, source: Iterable[Any], map_fn: Callable[[Any], Any] | None = None) -> None:
        self.source, self.map_fn = source, map_fn

    def __iter__(self) -> Iterator[Any]:
        for i, batch in enumerate(self.source):
            yield convert_batch(batch, i, self.map_fn)

    def __len__(self) -> int:
        return len(self.source)  # type: ignore[arg-type]  # a TypeError when the source has none


class _OneShotBatches:
    """A one-shot iterator over converted batches; ``iter()`` gives itself, like its source."""

    def __init__(self, source: Iterator[Any], map_fn: Callable[[Any], Any] | None) -> None:
        self.source, self.map_fn, self.count = source, map_fn, 0

    def __iter__(self) -> "_OneShotBatches":
        return self

    def __next__(self) -> Any:
        batch = convert_batch(next(self.source), self.count, self.map_fn)
        self.count += 1
        return batch


def convert_batch(batch: Any, index: int, map_fn: Callable[[Any], Any] | None = None) -> Any:
    """One source batch -> ``(x, y[, sample_weight])`` of NumPy arrays (``map_fn`` applied)."""
    batch = _outer(batch)
    if map_fn is not None:
        batch = _outer(map_fn(batch))
    if isinstance(batch, dict) and "x" in batch:
        return batch
    if not isinstance(batch, (tuple, list)) or not 1 <= len(batch) <= 3:
        what = f"a {type(batch).__name__}" + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
        if isinstance(batch, dict):
            what += f" with keys {sorted(map(str, batch))}"
        raise errors.DataError(
            f"from_iterable: batch {index} must be (x, y) or (x, y, sample_weight); received "
            f"{what}. Pass map_fn to rearrange it, e.g. map_fn=lambda b: (b['image'], b['label'])"
        )
    return tuple(batch)


def _outer(batch: Any) -> Any:
    """The batch's own tuple or dict holds separate parts (x, y, ...), never one array."""
    if isinstance(batch, dict):
        return {k: _structure(v) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_structure(v) for v in batch)
    return _structure(batch)


def _structure(value: Any) -> Any:
    """Converts the leaves of a batch part to NumPy, keeping lists and dicts of arrays
    (several inputs); a nested list of plain numbers becomes one array."""
    if isinstance(value, dict):
        return {k: _structure(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        if _holds_arrays(value):
            return type(value)(_structure(v) for v in value)
        return np.asarray(value)
    return _to_numpy(value)


def _holds_arrays(value: Any) -> bool:
    if isinstance(value, np.generic):
        return False  # a NumPy scalar has a shape, but is a number
    if isinstance(value, dict) or hasattr(value, "shape") or hasattr(value, "numpy"):
        return True
    return isinstance(value, (tuple, list)) and any(_holds_arrays(v) for v in value)


def _to_numpy(value: Any) -> Any:
    if value is None or isinstance(value, np.ndarray):
        return value
    if isinstance(value, jax.Array):
        return np.asarray(value)
    if hasattr(value, "numpy") and callable(value.numpy):
        # PyTorch: leave the autograd graph and the GPU first; TensorFlow: .numpy() alone.
        if hasattr(value, "detach") and callable(value.detach):
            value = value.detach()
            if hasattr(value, "cpu") and callable(value.cpu):
                value = value.cpu()
        return np.asarray(value.numpy())
    return np.asarray(value)
