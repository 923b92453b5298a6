"""Merge layers: combine a list of inputs, ``layers.Add()([a, b])``.

Element-wise merges (Add, Subtract, Multiply, Average, Maximum, Minimum) need inputs of
the same shape, or shapes that broadcast through axes of size 1. ``Concatenate`` joins
along ``axis``; ``Dot`` takes batched dot products. Lower-case helpers
(``layers.add([a, b])``) call a fresh layer, as in Keras.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from kerax import errors
from kerax.core.layer import Layer


class _Merge(Layer):
    min_inputs = 2
    max_inputs = None

    def _shapes(self, xs: Any) -> list[tuple]:
        if not isinstance(xs, (list, tuple)):
            raise self._error(
                errors.InputStructureError,
                f"expects a list of inputs, e.g. {type(self).__name__}()([a, b]); received "
                f"{type(xs).__name__}",
            )
        n = len(xs)
        if n < self.min_inputs or (self.max_inputs is not None and n > self.max_inputs):
            want = (
                f"exactly {self.min_inputs}" if self.max_inputs == self.min_inputs
                else f"at least {self.min_inputs}"
            )
            raise self._error(
                errors.InputStructureError, f"expects {want} inputs; received {n}"
            )
        return [tuple(x.shape) for x in xs]

    def _check(self, xs: Any) -> None:
        shapes = self._shapes(xs)
        try:
            out = jnp.broadcast_shapes(*shapes)
        except ValueError:
            out = None
        if out is None or any(s[0] != shapes[0][0] for s in shapes):
            raise self._error(
                errors.ShapeError,
                "expects inputs of the same shape (or broadcastable through size-1 axes); "
                f"received shapes {[errors.fmt_shape(s) for s in shapes]}",
            )

    def compute_mask(self, x, mask):
        """The inputs' masks combined with AND (None when no input has one)."""
        if mask is None:
            return None
        masks = [m for m in mask if m is not None]
        return functools.reduce(jnp.logical_and, masks) if masks else None

    def init(self, rng, x):
        self._check(x)
        return {}, {}

    def apply(self, params, state, x, *, rng=None, training=False):
        self._check(x)
        dtype = functools.reduce(jnp.promote_types, [a.dtype for a in x])
        return self._op([jnp.asarray(a).astype(dtype) for a in x]), state


class Add(_Merge):
    """Sums the inputs element-wise."""

    def _op(self, xs):
        return functools.reduce(jnp.add, xs)


class Subtract(_Merge):
    """Subtracts the second input from the first."""

    min_inputs = max_inputs = 2

    def _op(self, xs):
        return xs[0] - xs[1]


class Multiply(_Merge):
    """Multiplies the inputs element-wise."""

    def _op(self, xs):
        return functools.reduce(jnp.multiply, xs)


class Average(_Merge):
    """Averages the inputs element-wise."""

    def _op(self, xs):
        return functools.reduce(jnp.add, xs) / len(xs)


class Maximum(_Merge):
    """Element-wise maximum of the inputs."""

    def _op(self, xs):
        return functools.reduce(jnp.maximum, xs)


class Minimum(_Merge):
    """Element-wise minimum of the inputs."""

    def _op(self, xs):
        return functools.reduce(jnp.minimum, xs)


class Concatenate(_Merge):
    """Joins the inputs along ``axis`` (default -1); the other dims must agree.

    Input shapes: ``(batch, ..., d_i, ...)``. Output shape: ``(batch, ..., sum(d_i), ...)``.
    """

    axis: int = -1

    def _check(self, xs: Any) -> None:
        shapes = self._shapes(xs)
        ranks = {len(s) for s in shapes}
        bad = len(ranks) != 1
        if not bad:
            rank = ranks.pop()
            axis = self.axis % rank if -rank <= self.axis < rank else None
            bad = axis is None or axis == 0 or any(
                s[:axis] + s[axis + 1:] != shapes[0][:axis] + shapes[0][axis + 1:] for s in shapes
            )
        if bad:
            raise self._error(
                errors.ShapeError,
                f"expects inputs whose shapes agree except on the concatenation axis "
                f"{self.axis} (not the batch axis); received shapes "
                f"{[errors.fmt_shape(s) for s in shapes]}",
            )

    def _op(self, xs):
        return jnp.concatenate(xs, axis=self.axis)


class Dot(_Merge):
    """Batched dot product of two inputs along ``axes`` (an int or a pair), as Keras.

    ``normalize=True`` L2-normalizes along the axes first (cosine proximity).

    Input shapes: ``(batch, n)`` and ``(batch, n)`` with ``axes=1``. Output shape:
    ``(batch, 1)``; in general the remaining axes of the first input then of the second.
    """

    axes: Any = -1
    normalize: bool = False
    min_inputs = max_inputs = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        axes = self.axes
        pair = (axes, axes) if isinstance(axes, int) else tuple(axes)
        if len(pair) != 2 or not all(isinstance(a, int) for a in pair):
            raise self._error(errors.ConfigError, f"axes must be an int or a pair of ints; received {axes!r}")
        self._set("axes", axes if isinstance(axes, int) else list(pair))

    def _pair(self, shapes):
        axes = (self.axes, self.axes) if isinstance(self.axes, int) else self.axes
        return [a % len(s) for a, s in zip(axes, shapes)]

    def _check(self, xs: Any) -> None:
        shapes = self._shapes(xs)
        a0, a1 = self._pair(shapes)
        if a0 == 0 or a1 == 0 or shapes[0][a0] != shapes[1][a1] or shapes[0][0] != shapes[1][0]:
            raise self._error(
                errors.ShapeError,
                f"cannot take the dot product along axes {self.axes} of shapes "
                f"{errors.fmt_shape(shapes[0])} and {errors.fmt_shape(shapes[1])}: the "
                "contracted dims (and the batch dims) must be equal",
            )

    def _op(self, xs):
        a, b = xs
        a0, a1 = self._pair([a.shape, b.shape])
        if self.normalize:
            a = a / jnp.maximum(jnp.linalg.norm(a, axis=a0, keepdims=True), 1e-12)
            b = b / jnp.maximum(jnp.linalg.norm(b, axis=a1, keepdims=True), 1e-12)
        y = jax.lax.dot_general(a, b, (((a0,), (a1,)), ((0,), (0,))))
        return y[:, None] if y.ndim == 1 else y


def _helper(cls: type, doc: str):
    def merge(inputs: list, **kwargs: Any) -> Any:
        return cls(**kwargs)(inputs)

    merge.__doc__ = doc
    merge.__name__ = cls.__name__.lower()
    return merge


add = _helper(Add, "Functional form of :class:`Add`: ``add([a, b])``.")
subtract = _helper(Subtract, "Functional form of :class:`Subtract`.")
multiply = _helper(Multiply, "Functional form of :class:`Multiply`.")
average = _helper(Average, "Functional form of :class:`Average`.")
maximum = _helper(Maximum, "Functional form of :class:`Maximum`.")
minimum = _helper(Minimum, "Functional form of :class:`Minimum`.")
concatenate = _helper(Concatenate, "Functional form of :class:`Concatenate`: ``concatenate([a, b], axis=-1)``.")
dot = _helper(Dot, "Functional form of :class:`Dot`: ``dot([a, b], axes=1)``.")
