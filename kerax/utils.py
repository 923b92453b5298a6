"""Keras's everyday helpers: ``set_random_seed``, ``to_categorical``, ``normalize``.

``set_random_seed`` sets the default seed of the Keras shell (model building, ``fit``).
It lives here, in the shell; the pure core takes explicit keys and has no global seed.
"""

from __future__ import annotations

import secrets
from typing import Any

import jax
import numpy as np

from kerax import errors

_seed: list[int | None] = [None]  # the shell's default seed; the pure core never reads it


def set_random_seed(seed: int) -> None:
    """Makes model building, shuffling and dropout in ``fit`` reproducible by default."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise errors.ConfigError(f"set_random_seed expects a non-negative int; received {seed!r}")
    _seed[0] = int(seed)
    np.random.seed(int(seed) % 2**32)


def default_seed() -> int:
    """The seed from ``set_random_seed``, or a fresh random one if none was set."""
    return _seed[0] if _seed[0] is not None else secrets.randbelow(2**31)


def make_key(seed: int | jax.Array | None = None) -> jax.Array:
    """A typed PRNG key from an int seed, a key, or (None) the default seed."""
    if seed is None:
        seed = default_seed()
    if isinstance(seed, (int, np.integer)):
        return jax.random.key(int(seed))
    return seed


def to_categorical(y: Any, num_classes: int | None = None, dtype: Any = "float32") -> np.ndarray:
    """One-hot encodes integer labels: ``(n,)`` -> ``(n, num_classes)``."""
    y = np.asarray(y)
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise errors.LabelError("to_categorical expects integer labels; received non-integers")
        y = y.astype(np.int64)
    if y.ndim > 1 and y.shape[-1] == 1:
        y = y[..., 0]
    n = int(y.max()) + 1 if num_classes is None else int(num_classes)
    if y.size and (y.min() < 0 or y.max() >= n):
        raise errors.LabelError(
            f"to_categorical: label {int(y.max()) if y.max() >= n else int(y.min())} out of "
            f"range [0, {n})"
        )
    return np.eye(n, dtype=dtype)[y]


def normalize(x: Any, axis: int = -1, order: int = 2) -> np.ndarray:
    """Scales ``x`` to unit ``order``-norm along ``axis`` (zero vectors stay zero)."""
    x = np.asarray(x, dtype=np.float32) if not np.issubdtype(np.asarray(x).dtype, np.floating) else np.asarray(x)
    norm = np.linalg.norm(x, ord=order, axis=axis, keepdims=True)
    return x / np.where(norm == 0, 1, norm)
