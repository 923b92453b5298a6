"""Noise and activity-regularization layers (Keras 3): SpatialDropout1D/2D/3D, GaussianNoise,
GaussianDropout, AlphaDropout, ActivityRegularization.

The noise layers are the identity when ``training=False`` and need ``rng`` when training
(``MissingRNGError`` otherwise); ``seed=`` folds a fixed number into that key, as in
:class:`~kerax.layers.Dropout`. All of them hand the input's mask on.

``ActivityRegularization`` returns its input unchanged and puts its penalty in its state
under ``"aux_loss"``; the step builders add it to the training (and evaluation) loss.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp

from kerax import errors
from kerax.core.layer import AUX_LOSS, Layer
from kerax.layers._spatial import check_data_format, check_rank
from kerax.layers._util import cast_input
from kerax.layers.regularization import require_rng

# SELU's constants (Klambauer et al., 2017), as Keras's AlphaDropout writes them.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _rate(layer: Layer, field: str, value: Any, upper_open: bool = True) -> None:
    bad = isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
        0 <= value < 1 if upper_open else 0 <= value <= 1)
    if bad:
        interval = "[0, 1)" if upper_open else "[0, 1]"
        raise layer._error(
            errors.ConfigError, f"{field} must be a number in {interval}; received {field}={value!r}"
        )


def _floating(layer: Layer, x: Any) -> Any:
    """Floating inputs keep their dtype; others are cast to the layer's dtype."""
    return x if jnp.issubdtype(x.dtype, jnp.floating) else cast_input(x, jnp.dtype(layer.compute_dtype))


class _Noise(Layer):
    """Plumbing shared by the noise layers (not a layer)."""

    propagates_mask = True

    def init(self, rng, x):
        return {}, {}

    def _key(self, rng: Any) -> Any:
        require_rng(self, rng)
        return rng if self.seed is None else jax.random.fold_in(rng, self.seed)


# -- SpatialDropout ------------------------------------------------------------------------------


class _SpatialDropout(_Noise):
    """Dropout of whole channels; see :class:`SpatialDropout2D`."""

    rank = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        _rate(self, "rate", self.rate)
        check_data_format(self, getattr(self, "data_format", None))

    def init(self, rng, x):
        check_rank(self, tuple(x.shape), self.rank)
        return {}, {}

    def apply(self, params, state, x, *, rng=None, training=False):
        check_rank(self, tuple(x.shape), self.rank)
        if not training or self.rate == 0:
            return x, state
        noise_shape = (x.shape[0],) + (1,) * self.rank + (x.shape[-1],)
        keep = jax.random.bernoulli(self._key(rng), 1.0 - self.rate, noise_shape)
        x = _floating(self, x)
        return jnp.where(keep, x / (1.0 - self.rate), jnp.zeros((), x.dtype)), state


class SpatialDropout1D(_SpatialDropout):
    """Dropout of whole channels of sequences: each ``(example, channel)`` is dropped
    entirely with probability ``rate``; kept ones are scaled by ``1 / (1 - rate)``.

    Input shape: ``(batch, steps, channels)``. Output shape: the same.
    """

    rank = 1

    rate: float
    seed: int | None = None


class SpatialDropout2D(_SpatialDropout):
    """Dropout of whole feature maps: each ``(example, channel)`` is dropped entirely with
    probability ``rate`` (noise shape ``(batch, 1, 1, channels)``); kept ones are scaled by
    ``1 / (1 - rate)``.

    Input shape: ``(batch, rows, cols, channels)``. Output shape: the same.
    """

    rank = 2

    rate: float
    data_format: str | None = None
    seed: int | None = None


class SpatialDropout3D(_SpatialDropout):
    """Dropout of whole 3D feature maps (noise shape ``(batch, 1, 1, 1, channels)``).

    Input shape: ``(batch, dim1, dim2, dim3, channels)``. Output shape: the same.
    """

    rank = 3

    rate: float
    data_format: str | None = None
    seed: int | None = None


# -- Gaussian noise ------------------------------------------------------------------------------


class GaussianNoise(_Noise):
    """Adds zero-mean Gaussian noise of standard deviation ``stddev`` (in training only).

    ``stddev`` is in ``[0, 1]``, as Keras requires.

    Input shape: any. Output shape: the same.
    """

    stddev: float
    seed: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _rate(self, "stddev", self.stddev, upper_open=False)

    def apply(self, params, state, x, *, rng=None, training=False):
        if not training or self.stddev == 0:
            return x, state
        key = self._key(rng)
        x = _floating(self, x)
        return x + self.stddev * jax.random.normal(key, x.shape, x.dtype), state


class GaussianDropout(_Noise):
    """Multiplies inputs by Gaussian noise of mean 1 and variance ``rate / (1 - rate)``
    (in training only).

    Input shape: any. Output shape: the same.
    """

    rate: float
    seed: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _rate(self, "rate", self.rate)

    def apply(self, params, state, x, *, rng=None, training=False):
        if not training or self.rate == 0:
            return x, state
        key = self._key(rng)
        x = _floating(self, x)
        stddev = math.sqrt(self.rate / (1.0 - self.rate))
        return x * (1.0 + stddev * jax.random.normal(key, x.shape, x.dtype)), state


class AlphaDropout(_Noise):
    """Dropout that keeps the mean and variance of its inputs (for SELU networks).

    Dropped entries are set to SELU's negative saturation ``-alpha * scale``, then all are
    transformed by ``a * x + b`` with ``a = ((1 - rate) * (1 + rate * alpha_p ** 2)) ** -0.5``
    and ``b = -a * alpha_p * rate`` (Keras's formula), so zero-mean unit-variance inputs
    keep mean 0 and variance 1. ``noise_shape`` as :class:`~kerax.layers.Dropout`.

    Input shape: any. Output shape: the same.
    """

    rate: float
    noise_shape: tuple | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _rate(self, "rate", self.rate)
        if self.noise_shape is not None:
            shape = self.noise_shape
            if not (isinstance(shape, (tuple, list)) and all(
                    d is None or (isinstance(d, int) and not isinstance(d, bool) and d > 0) for d in shape)):
                raise self._error(
                    errors.ConfigError,
                    f"noise_shape must be a tuple of positive ints or None; received noise_shape={shape!r}",
                )
            self._set("noise_shape", tuple(shape))

    def apply(self, params, state, x, *, rng=None, training=False):
        if not training or self.rate == 0:
            return x, state
        shape = tuple(x.shape)
        if self.noise_shape is not None:
            if len(self.noise_shape) != len(shape):
                raise self._error(
                    errors.ShapeError,
                    f"noise_shape {self.noise_shape} must have the input's rank {len(shape)}; "
                    f"received input of shape {errors.fmt_shape(shape)}",
                )
            shape = tuple(s if n is None else n for s, n in zip(shape, self.noise_shape))
        key = self._key(rng)
        x = _floating(self, x)
        keep = jax.random.uniform(key, shape) >= self.rate
        alpha_p = -SELU_ALPHA * SELU_SCALE
        a = ((1 - self.rate) * (1 + self.rate * alpha_p ** 2)) ** -0.5
        b = -a * alpha_p * self.rate
        return a * jnp.where(keep, x, jnp.asarray(alpha_p, x.dtype)) + b, state


# -- ActivityRegularization ----------------------------------------------------------------------


def _aux_dtype(x: Any) -> Any:
    return jnp.float64 if jnp.dtype(x.dtype) == jnp.float64 else jnp.float32


class ActivityRegularization(Layer):
    """Returns its input unchanged and adds ``(l1 * sum|x| + l2 * sum x**2) / batch_size``
    to the loss, as Keras 3 does (it divides activity penalties by the batch size).

    The penalty is the layer's state entry ``"aux_loss"`` (a scalar; ``init`` gives 0):
    ``kerax.core.layer.aux_losses(state)`` sums such entries, and the step builders add
    them to the training and evaluation loss. It is computed in inference mode too.

    Input shape: ``(batch, ...)``. Output shape: the same.
    """

    propagates_mask = True

    l1: float = 0.0
    l2: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        for field in ("l1", "l2"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
                    math.isfinite(value) and value >= 0):
                raise self._error(
                    errors.ConfigError, f"{field} must be a finite number >= 0; received {field}={value!r}"
                )

    def init(self, rng, x):
        return {}, {AUX_LOSS: jnp.zeros((), _aux_dtype(x))}

    def apply(self, params, state, x, *, rng=None, training=False):
        dtype = _aux_dtype(x)
        xf = jnp.asarray(x).astype(dtype)
        loss = jnp.zeros((), dtype)
        if self.l1:
            loss = loss + self.l1 * jnp.sum(jnp.abs(xf))
        if self.l2:
            loss = loss + self.l2 * jnp.sum(jnp.square(xf))
        if x.ndim and x.shape[0]:
            loss = loss / x.shape[0]
        return x, {AUX_LOSS: loss}
