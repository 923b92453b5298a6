"""In-memory data: arrays checked once on the host, then batched by index.

``as_arrays`` converts what Keras's ``fit`` accepts (NumPy arrays, Python lists, lists or
dicts of them for several inputs) into NumPy pytrees and refuses what would fail later or
silently: strings and objects (``DTypeError``), different lengths (``DataError``), empty
data. ``ArrayData`` then gives each epoch's order (a seeded permutation) and batches.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from kerax import errors


def _leaf_array(value: Any, name: str) -> np.ndarray:
    if isinstance(value, jax.Array):
        value = np.asarray(value)
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as e:
        raise errors.DataError(f"{name} could not be read as an array: {e}") from None
    if arr.dtype.kind in "USO" or arr.dtype == object:
        raise errors.DTypeError(
            f"{name} has dtype {arr.dtype} ({'strings' if arr.dtype.kind in 'US' else 'Python objects'}); "
            "kerax needs numeric arrays: encode text as integer ids first"
        )
    if arr.dtype.kind == "f" and arr.dtype != np.float32 and arr.dtype.itemsize == 8:
        arr = arr.astype(np.float32)  # Keras's floatx; float64 only when asked for explicitly
    if arr.dtype.kind in "iu" and arr.dtype.itemsize == 8:
        arr = arr.astype(np.int32)
    if arr.ndim == 0:
        raise errors.DataError(f"{name} is a scalar; expected one row per example")
    return arr


def as_arrays(value: Any, name: str) -> Any:
    """Lists of numbers -> one array; a list/tuple of arrays or a dict -> a pytree of arrays."""
    if value is None:
        return None
    if isinstance(value, dict):
        return {k: _leaf_array(v, f"{name}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)) and value and all(
        hasattr(v, "shape") or (isinstance(v, (list, tuple)) and v and isinstance(v[0], (list, tuple)))
        for v in value
    ) and not _is_regular_nested_list(value):
        return [_leaf_array(v, f"{name}[{i}]") for i, v in enumerate(value)]
    return _leaf_array(value, name)


def _is_regular_nested_list(value: Any) -> bool:
    """True for a plain nested list of numbers such as [[1, 2], [3, 4]]."""
    if not isinstance(value, (list, tuple)) or any(hasattr(v, "shape") for v in value):
        return False
    try:
        return np.asarray(value).dtype != object
    except ValueError:
        return False


def num_samples(tree: Any, name: str) -> int:
    sizes = {int(a.shape[0]) for a in jax.tree.leaves(tree)}
    if len(sizes) > 1:
        raise errors.DataError(f"the arrays in {name} have different numbers of rows: {sorted(sizes)}")
    return sizes.pop() if sizes else 0


def expand_rank1(x: Any) -> Any:
    """Keras 2's rule: a 1-D input array of n values is n examples of one feature."""
    return jax.tree.map(lambda a: a[:, None] if a.ndim == 1 else a, x)


@dataclasses.dataclass
class ArrayData:
    """Checked in-memory ``(x, y, sample_weight)`` pytrees of equal length."""

    x: Any
    y: Any = None
    sample_weight: Any = None
    name: str = "x"

    def __post_init__(self) -> None:
        n = num_samples(self.x, "x")
        for other, label in ((self.y, "y"), (self.sample_weight, "sample_weight")):
            if other is not None:
                m = num_samples(other, label)
                if m != n:
                    raise errors.DataError(f"x has {n} samples, {label} has {m}; they must be equal")
        if n == 0:
            raise errors.DataError(f"dataset is empty: {self.name} has 0 samples")
        if self.sample_weight is not None and np.any(np.asarray(self.sample_weight) < 0):
            raise errors.DataError("sample_weight has negative values")
        self.n = n

    def take(self, index: np.ndarray) -> "ArrayData":
        pick = lambda t: None if t is None else jax.tree.map(lambda a: a[index], t)
        return ArrayData(pick(self.x), pick(self.y), pick(self.sample_weight), self.name)

    def split(self, fraction: float) -> tuple["ArrayData", "ArrayData"]:
        """Keras's ``validation_split``: the last ``fraction`` of rows, before shuffling."""
        if not 0.0 < fraction < 1.0:
            raise errors.ConfigError(f"validation_split must be in (0, 1); received {fraction!r}")
        cut = int(self.n * (1.0 - fraction))
        if cut == 0 or cut == self.n:
            raise errors.DataError(
                f"validation_split={fraction} of {self.n} samples leaves "
                f"{'no training' if cut == 0 else 'no validation'} data"
            )
        return self.take(np.arange(cut)), self.take(np.arange(cut, self.n))

    def check_finite(self) -> None:
        """Raises naming the first row whose inputs hold NaN or infinity."""
        bad = np.zeros(self.n, bool)
        for a in jax.tree.leaves(self.x):
            if a.dtype.kind == "f":
                bad |= ~np.isfinite(a.reshape(self.n, -1)).all(axis=1)
        if bad.any():
            row = int(np.argmax(bad))
            raise errors.DataError(f"x holds NaN or infinity in row {row} (and {int(bad.sum()) - 1} more rows)")


def epoch_order(n: int, shuffle: bool, seed: int, epoch: int) -> np.ndarray:
    """The row order of one epoch: a permutation that depends only on (seed, epoch)."""
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([seed, epoch]).permutation(n)
