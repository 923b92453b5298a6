"""Small helpers shared by the layer modules (not public)."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from kerax import errors


def cast_input(x: Any, dtype: Any) -> Any:
    """Casts a layer's input to its weights' dtype (Keras's autocast); ints included."""
    kind = getattr(getattr(x, "dtype", None), "kind", None)
    if kind is None or kind not in "biuf" and not str(x.dtype).startswith(("bfloat", "float")):
        raise errors.DTypeError(
            f"expected a numeric input; received dtype {getattr(x, 'dtype', type(x).__name__)}"
        )
    return x if x.dtype == dtype else x.astype(dtype)


def positive_int(layer: Any, field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int,)) or value <= 0:
        raise layer._error(
            errors.ConfigError, f"{field} must be a positive integer; received {field}={value!r}"
        )
    return int(value)


def min_rank(layer: Any, shape: tuple, rank: int, what: str = "input") -> None:
    if len(shape) < rank:
        hint = " Add a batch axis: x[None] for one example." if len(shape) == rank - 1 else ""
        raise layer._error(
            errors.ShapeError,
            f"expected {what} of rank >= {rank}; received shape {errors.fmt_shape(shape)}.{hint}",
        )
