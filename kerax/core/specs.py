"""Shape specs: turning inputs into ``jax.ShapeDtypeStruct`` and checking shapes.

Declared shapes (from ``kx.Input`` or ``input_shape=``) use ``None`` for unknown
dimensions, the batch axis first, as Keras prints them: ``(None, 28, 28, 1)``.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kerax import errors

Shape = tuple  # of int | None


def is_arraylike(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, jax.ShapeDtypeStruct, np.generic)) or (
        hasattr(x, "shape") and hasattr(x, "dtype")
    )


def to_spec(x: Any) -> Any:
    """Maps a pytree of arrays (or specs) to a pytree of ``ShapeDtypeStruct``."""

    def one(a: Any) -> jax.ShapeDtypeStruct:
        if isinstance(a, jax.ShapeDtypeStruct):
            return a
        if hasattr(a, "shape") and hasattr(a, "dtype"):
            return jax.ShapeDtypeStruct(tuple(a.shape), a.dtype)
        a = np.asarray(a)
        return jax.ShapeDtypeStruct(a.shape, a.dtype)

    return jax.tree.map(one, x)


def compatible(expected: Sequence[int | None], actual: Sequence[int | None]) -> bool:
    """True when ranks agree and every known expected dim equals the actual one."""
    if len(expected) != len(actual):
        return False
    return all(e is None or a is None or e == a for e, a in zip(expected, actual))


def check_input(
    expected: Sequence[int | None], actual: Sequence[int], what: str
) -> None:
    """Raises ShapeError when ``actual`` does not fit the declared ``expected`` shape."""
    expected, actual = tuple(expected), tuple(actual)
    if compatible(expected, actual):
        return
    hint = ""
    if len(actual) == len(expected) - 1 and compatible(expected[1:], actual):
        hint = " It looks like the batch axis is missing: pass x[None] for one example."
    elif len(actual) != len(expected):
        hint = f" (rank {len(expected)} expected, rank {len(actual)} received)"
    raise errors.ShapeError(
        f"{what} expected shape {errors.fmt_shape(expected)}; received shape "
        f"{errors.fmt_shape(actual)}.{hint}"
    )


def with_batch(shape: Sequence[int | None], batch: int = 1, fill: int | None = None) -> tuple:
    """Replaces the batch dim with ``batch`` (and other ``None`` dims with ``fill``)."""
    dims = [batch] + [fill if d is None else d for d in list(shape)[1:]]
    if any(d is None for d in dims):
        raise errors.ShapeError(
            f"shape {errors.fmt_shape(shape)} has unknown dimensions besides the batch "
            "axis; pass a sample input to init() (or call fit, which builds from the "
            "first batch)"
        )
    return tuple(dims)


def leading_dim(x: Any) -> int | None:
    """The size of the leading (batch) axis shared by all leaves, or None."""
    sizes = {int(a.shape[0]) for a in jax.tree.leaves(x) if len(getattr(a, "shape", ())) > 0}
    return sizes.pop() if len(sizes) == 1 else None


def float_dtype(dtype: Any) -> Any:
    return jnp.dtype(dtype)


def path_str(path: tuple) -> str:
    """A pytree key path as a weight path: ``dense/kernel`` (sequence keys as numbers)."""
    parts = []
    for k in path:
        for attr in ("key", "idx", "name"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts)


def flat_paths(tree: Any) -> dict[str, Any]:
    """``{"dense/kernel": leaf, ...}`` for a params or state tree."""
    return {path_str(p): v for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}
