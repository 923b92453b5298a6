"""Regularization layers that act only in training: Dropout."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from kerax import errors
from kerax.core.layer import Layer


def require_rng(layer: Layer, rng: Any) -> None:
    if rng is None:
        raise layer._error(
            errors.MissingRNGError,
            "needs a random key when training; call apply(..., training=True, "
            "rng=jax.random.key(seed)) (fit passes one for you)",
        )


class Dropout(Layer):
    """Zeroes inputs with probability ``rate`` in training and scales the rest by ``1/(1-rate)``.

    ``noise_shape`` (with ``None`` for "same as the input") shares one mask along axes of
    size 1, as in Keras. Does nothing when ``training=False``.

    Input shape: any. Output shape: the same.
    """

    propagates_mask = True

    rate: float = 0.5
    noise_shape: tuple | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.rate, bool) or not isinstance(self.rate, (int, float)) or not 0 <= self.rate < 1:
            raise self._error(
                errors.ConfigError, f"rate must be a number in [0, 1); received rate={self.rate!r}"
            )
        if self.noise_shape is not None:
            self._set("noise_shape", tuple(self.noise_shape))

    def init(self, rng, x):
        return {}, {}

    def apply(self, params, state, x, *, rng=None, training=False):
        if not training or self.rate == 0:
            return x, state
        require_rng(self, rng)
        shape = x.shape
        if self.noise_shape is not None:
            if len(self.noise_shape) != x.ndim:
                raise self._error(
                    errors.ShapeError,
                    f"noise_shape {self.noise_shape} must have the input's rank {x.ndim}; "
                    f"received input of shape {errors.fmt_shape(x.shape)}",
                )
            shape = tuple(s if n is None else n for s, n in zip(x.shape, self.noise_shape))
        if self.seed is not None:
            rng = jax.random.fold_in(rng, self.seed)
        keep = jax.random.bernoulli(rng, 1.0 - self.rate, shape)
        return jnp.where(keep, x / (1.0 - self.rate), jnp.zeros((), x.dtype)).astype(x.dtype), state
