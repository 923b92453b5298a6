"""Any iterable of ``(x, y[, sample_weight])`` batches: generators, grain, tf.data as NumPy,
a PyTorch DataLoader. A re-iterable (list, DataLoader) restarts every epoch; a one-shot
iterator (generator) is drawn from continuously, ``steps_per_epoch`` batches at a time."""

from __future__ import annotations

import itertools
from typing import Any, Iterator

import numpy as np

from kerax import errors
from kerax.data.arrays import ArrayData, as_arrays, expand_rank1


def _to_numpy(tree: Any, name: str) -> Any:
    # torch tensors and tf tensors expose .numpy(); jax and numpy arrays go through asarray
    if hasattr(tree, "numpy") and callable(tree.numpy) and not isinstance(tree, np.ndarray):
        tree = tree.numpy()
    if isinstance(tree, dict):
        return {k: _to_numpy(v, f"{name}[{k!r}]") for k, v in tree.items()}
    if isinstance(tree, (list, tuple)) and tree and hasattr(tree[0], "shape"):
        return [_to_numpy(v, f"{name}[{i}]") for i, v in enumerate(tree)]
    return as_arrays(tree, name)


class IterableData:
    """Batches from an iterable; each batch is checked like in-memory data."""

    def __init__(self, source: Any, name: str = "dataset", expand: bool = True) -> None:
        self.source, self.name, self.expand = source, name, expand
        self._pending: Any = None
        self.one_shot = iter(source) is source

    def peek(self) -> ArrayData:
        """The first batch, without losing it (a one-shot iterator keeps it for later)."""
        if self.one_shot:
            if self._pending is None:
                try:
                    self._pending = next(self.source)
                except StopIteration:
                    raise errors.DataError(f"{self.name} yielded no batches") from None
            return self._batch(self._pending, 0)
        for batch in self.source:
            return self._batch(batch, 0)
        raise errors.DataError(f"{self.name} yielded no batches")

    def epoch(self, steps: int | None) -> Iterator[ArrayData]:
        """Yields this epoch's batches (``steps`` of them if given)."""
        if self.one_shot:
            it = self.source
            if self._pending is not None:
                it, self._pending = itertools.chain([self._pending], it), None
        else:
            it = iter(self.source)
        count = 0
        for batch in it:
            yield self._batch(batch, count)
            count += 1
            if steps is not None and count >= steps:
                return
        if count == 0:
            raise errors.DataError(f"{self.name} yielded no batches" + (
                " (a generator is used up after one pass; pass steps_per_epoch or a re-iterable)"
                if self.one_shot else ""))

    def _batch(self, batch: Any, i: int) -> ArrayData:
        if isinstance(batch, dict) and "x" in batch:
            batch = (batch["x"], batch.get("y"), batch.get("sample_weight"))
        if not isinstance(batch, (tuple, list)) or not 1 <= len(batch) <= 3:
            raise errors.DataError(
                f"{self.name}: batch {i} must be a tuple (x, y) or (x, y, sample_weight); "
                f"received {type(batch).__name__}"
            )
        x, y, sw = (list(batch) + [None, None])[:3]
        x = _to_numpy(x, f"{self.name} batch {i} x")
        x = expand_rank1(x) if self.expand else x
        y = None if y is None else _to_numpy(y, f"{self.name} batch {i} y")
        sw = None if sw is None else _to_numpy(sw, f"{self.name} batch {i} sample_weight")
        return ArrayData(x, y, sw, name=f"{self.name} batch {i}")


def as_data(x: Any, y: Any = None, sample_weight: Any = None, name: str = "x",
            expand: bool = True) -> ArrayData | IterableData:
    """In-memory arrays -> ArrayData; an iterable of batches -> IterableData.

    ``expand``: turn 1-D inputs of n values into n examples of one feature (Keras 2).
    """
    is_iterable = (
        x is not None
        and not isinstance(x, (np.ndarray, list, tuple, dict))
        and not hasattr(x, "shape")
        and hasattr(x, "__iter__")
    )
    if is_iterable:
        if y is not None or sample_weight is not None:
            raise errors.DataError(
                "when x is an iterable of batches, y and sample_weight must come inside the "
                "batches, not as separate arguments"
            )
        return IterableData(x, name=f"{name} ({type(x).__name__})", expand=expand)
    x = as_arrays(x, "x")
    x = expand_rank1(x) if expand else x
    return ArrayData(x, as_arrays(y, "y"), as_arrays(sample_weight, "sample_weight"), name=name)
