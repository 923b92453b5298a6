"""Reshaping layers: Flatten, Reshape, Permute, RepeatVector.

Shapes in the arguments exclude the batch axis, as in Keras.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from kerax import errors
from kerax.core.layer import Layer
from kerax.layers._util import min_rank, positive_int


class _Stateless(Layer):
    def init(self, rng, x):
        self.output_shape_for(tuple(x.shape))
        return {}, {}

    def output_shape_for(self, shape: tuple) -> tuple:
        return shape


class Flatten(_Stateless):
    """Flattens everything but the batch axis.

    Input shape: ``(batch, ...)``. Output shape: ``(batch, prod(...))``.
    """

    def apply(self, params, state, x, *, rng=None, training=False):
        min_rank(self, tuple(x.shape), 1)
        return x.reshape(x.shape[0], -1) if x.ndim != 1 else x[:, None], state


class Reshape(_Stateless):
    """Reshapes each example to ``target_shape`` (one dim may be -1).

    Input shape: ``(batch, ...)``. Output shape: ``(batch, *target_shape)``.
    """

    target_shape: tuple = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        shape = tuple(int(d) for d in self.target_shape)
        if sum(d == -1 for d in shape) > 1 or any(d < -1 or d == 0 for d in shape):
            raise self._error(
                errors.ConfigError,
                f"target_shape must have positive dims and at most one -1; received {shape}",
            )
        self._set("target_shape", shape)

    def output_shape_for(self, shape: tuple) -> tuple:
        size = math.prod(shape[1:])
        known = math.prod(d for d in self.target_shape if d != -1)
        if (-1 in self.target_shape and size % known) or (
            -1 not in self.target_shape and size != known
        ):
            raise self._error(
                errors.ShapeError,
                f"cannot reshape input of shape {errors.fmt_shape(shape)} ({size} values per "
                f"example) to target_shape {self.target_shape}",
            )
        return (shape[0], *(size // known if d == -1 else d for d in self.target_shape))

    def apply(self, params, state, x, *, rng=None, training=False):
        return x.reshape(self.output_shape_for(tuple(x.shape))), state


class Permute(_Stateless):
    """Permutes the non-batch axes; ``dims`` is 1-indexed, as in Keras: ``Permute((2, 1))``.

    Input shape: ``(batch, d1, ..., dn)``. Output shape: the dims reordered.
    """

    dims: tuple = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        dims = tuple(int(d) for d in self.dims)
        if sorted(dims) != list(range(1, len(dims) + 1)):
            raise self._error(
                errors.ConfigError,
                f"dims must be a permutation of 1..{len(dims)}; received {dims}",
            )
        self._set("dims", dims)

    def output_shape_for(self, shape: tuple) -> tuple:
        if len(shape) != len(self.dims) + 1:
            raise self._error(
                errors.ShapeError,
                f"dims {self.dims} expects inputs of rank {len(self.dims) + 1}; received "
                f"shape {errors.fmt_shape(shape)}",
            )
        return (shape[0], *(shape[d] for d in self.dims))

    def apply(self, params, state, x, *, rng=None, training=False):
        self.output_shape_for(tuple(x.shape))
        return jnp.transpose(x, (0, *self.dims)), state


class RepeatVector(_Stateless):
    """Repeats each example ``n`` times along a new axis 1.

    Input shape: ``(batch, features)``. Output shape: ``(batch, n, features)``.
    """

    n: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        positive_int(self, "n", self.n)

    def output_shape_for(self, shape: tuple) -> tuple:
        if len(shape) != 2:
            raise self._error(
                errors.ShapeError,
                f"expected input of rank 2 (batch, features); received shape {errors.fmt_shape(shape)}",
            )
        return (shape[0], self.n, shape[1])

    def apply(self, params, state, x, *, rng=None, training=False):
        self.output_shape_for(tuple(x.shape))
        return jnp.repeat(x[:, None, :], self.n, axis=1), state
