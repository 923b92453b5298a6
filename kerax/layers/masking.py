"""Masking: marks time steps whose features all equal ``mask_value`` as padding."""

from __future__ import annotations

import numbers

import jax.numpy as jnp

from kerax import errors
from kerax.core.layer import Layer


class Masking(Layer):
    """Skips padded time steps: creates the mask ``any(x != mask_value, axis=-1)``.

    The output is ``x`` with the masked steps zeroed (``x * mask``, as Keras); the mask
    reaches the layers after it that use masks (recurrent layers, attention, pooling).
    Any mask the input already had is replaced.

    Args:
      mask_value: the padding value (default 0.0).

    Input shape: ``(batch, timesteps, features)`` (any rank >= 2).
    Output shape: the same; output mask ``(batch, timesteps)``.

    Example: ``layers.Masking(mask_value=0.0)`` before an ``LSTM``.
    """

    mask_value: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.mask_value, bool) or not isinstance(self.mask_value, numbers.Real):
            raise self._error(
                errors.ConfigError, f"mask_value must be a number; received mask_value={self.mask_value!r}"
            )

    def _check(self, shape: tuple) -> None:
        if len(shape) < 2:
            raise self._error(
                errors.ShapeError,
                f"expected input of rank >= 2 (batch, ..., features); received input of shape "
                f"{errors.fmt_shape(shape)}",
            )

    def _mask(self, x):
        x = jnp.asarray(x)
        self._check(x.shape)
        return jnp.any(x != jnp.asarray(self.mask_value).astype(x.dtype), axis=-1)

    def init(self, rng, x):
        self._check(tuple(x.shape))
        return {}, {}

    def apply(self, params, state, x, *, rng=None, training=False):
        keep = self._mask(x)
        return x * keep[..., None].astype(x.dtype), state

    def compute_mask(self, x, mask):
        return self._mask(x)
