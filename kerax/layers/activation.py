"""Activation layers with hyperparameters: ReLU, LeakyReLU, PReLU, ELU, Softmax (Keras 3).

They keep the input's dtype (``PReLU`` casts to its weight's), and hand the input's mask
on. ``Softmax`` also uses the mask: masked positions get probability 0.

``PReLU``'s weight ``alpha`` has the input's shape without the batch axis, with size 1 on
``shared_axes`` (Keras's layout).
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp

from kerax import errors, initializers, mixed_precision
from kerax.core.layer import Layer
from kerax.core.rng import derive
from kerax.layers._util import cast_input, min_rank


def _number(layer: Layer, field: str, value: Any, *, minimum: float | None = 0.0,
            optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or (
            minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise layer._error(
            errors.ConfigError, f"{field} must be a number{bound}; received {field}={value!r}"
        )


class _Elementwise(Layer):
    """Weightless elementwise activations (not a layer)."""

    propagates_mask = True

    def init(self, rng, x):
        return {}, {}


class ReLU(_Elementwise):
    """Rectified linear unit with Keras's options, computed exactly as Keras computes it.

    ``f(x) = max_value`` for ``x >= max_value``; ``x`` for ``threshold < x < max_value``;
    ``negative_slope * (x - threshold)`` otherwise.

    Args:
      max_value: the largest output (``None``: unbounded), >= 0.
      negative_slope: the slope below the threshold, >= 0 (default 0).
      threshold: where the activation starts, >= 0 (default 0).

    Input shape: any. Output shape: the same.
    """

    max_value: float | None = None
    negative_slope: float = 0.0
    threshold: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _number(self, "max_value", self.max_value, optional=True)
        _number(self, "negative_slope", self.negative_slope)
        _number(self, "threshold", self.threshold)

    def apply(self, params, state, x, *, rng=None, training=False):
        slope, top, threshold = self.negative_slope, self.max_value, self.threshold
        if slope != 0 and top is None and threshold == 0:
            return jax.nn.leaky_relu(x, slope), state
        y = jnp.where(x > threshold, x, jnp.zeros((), x.dtype)) if threshold != 0 else jax.nn.relu(x)
        if top is not None:
            y = jnp.clip(y, 0.0, top)
        if slope != 0:
            y = y - slope * jax.nn.relu(threshold - x)
        return y, state


class LeakyReLU(_Elementwise):
    """Leaky rectified linear unit: ``x`` for ``x >= 0``, ``negative_slope * x`` otherwise.

    Input shape: any. Output shape: the same.
    """

    negative_slope: float = 0.3

    def __post_init__(self) -> None:
        super().__post_init__()
        _number(self, "negative_slope", self.negative_slope)

    def apply(self, params, state, x, *, rng=None, training=False):
        return jax.nn.leaky_relu(x, self.negative_slope), state


class ELU(_Elementwise):
    """Exponential linear unit: ``x`` for ``x > 0``, ``alpha * (exp(x) - 1)`` otherwise.

    Input shape: any. Output shape: the same.
    """

    alpha: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _number(self, "alpha", self.alpha, minimum=None)

    def apply(self, params, state, x, *, rng=None, training=False):
        return jax.nn.elu(x, self.alpha), state


class PReLU(Layer):
    """Parametric ReLU: ``x`` for ``x >= 0``, ``alpha * x`` otherwise, with ``alpha`` learned.

    Args:
      alpha_initializer: initializer of ``alpha`` (default ``"zeros"``: starts as ReLU).
      alpha_regularizer: penalty on ``alpha``.
      shared_axes: input axes (1-based: axis 0 is the batch) along which one ``alpha`` is
        shared, e.g. ``[1, 2]`` for one slope per channel of an image.

    Weights: ``alpha`` shaped like one input example, with 1 on ``shared_axes``.

    Input shape: ``(batch, ...)``. Output shape: the same.
    """

    propagates_mask = True

    alpha_initializer: Any = "zeros"
    alpha_regularizer: Any = None
    shared_axes: Any = None

    def __post_init__(self) -> None:
        super().__post_init__()
        initializers.get(self.alpha_initializer)
        axes = self.shared_axes
        if axes is not None:
            axes = (axes,) if isinstance(axes, int) and not isinstance(axes, bool) else axes
            if not (isinstance(axes, (tuple, list)) and all(
                    isinstance(a, int) and not isinstance(a, bool) and a >= 1 for a in axes)):
                raise self._error(
                    errors.ConfigError,
                    "shared_axes must be None, a positive int or a list of positive ints (input "
                    f"axes, 1-based: axis 0 is the batch); received shared_axes={self.shared_axes!r}",
                )
            self._set("shared_axes", tuple(axes))

    def _alpha_shape(self, shape: tuple) -> tuple:
        min_rank(self, shape, 2)
        out = list(shape[1:])
        for a in self.shared_axes or ():
            if a >= len(shape):
                raise self._error(
                    errors.ShapeError,
                    f"shared_axes {self.shared_axes} must be input axes 1..{len(shape) - 1}; "
                    f"received input of shape {errors.fmt_shape(shape)}",
                )
            out[a - 1] = 1
        return tuple(int(d) for d in out)

    def init(self, rng, x):
        shape = self._alpha_shape(tuple(x.shape))
        alpha = initializers.get(self.alpha_initializer)(
            derive(rng, "alpha"), shape, jnp.dtype(self.param_dtype))
        return {"alpha": alpha}, {}

    def apply(self, params, state, x, *, rng=None, training=False):
        alpha = params["alpha"]
        if self._alpha_shape(tuple(x.shape)) != tuple(alpha.shape):
            shared = self.shared_axes or ()
            expected = (None, *(None if i in shared else s for i, s in enumerate(alpha.shape, 1)))
            raise self._error(
                errors.ShapeError,
                f"expected input shape {errors.fmt_shape(expected)} (alpha of shape "
                f"{errors.fmt_shape(alpha.shape)}); received input of shape {errors.fmt_shape(x.shape)}",
            )
        x = cast_input(x, alpha.dtype)
        return jax.nn.relu(x) - alpha * jax.nn.relu(-x), state


class Softmax(Layer):
    """Softmax over ``axis`` (an int or a tuple of ints; default -1).

    With a mask (``mask=``, True for kept positions), masked positions get a large negative
    logit before the softmax and probability 0 after it, as Keras 3 does. The mask
    broadcasts against the input from the right (Keras's rule, e.g. an attention mask); a
    padding mask ``(batch, time)`` over inputs ``(batch, time, ...)`` applies to whole steps.

    Input shape: any. Output shape: the same.
    """

    uses_mask = True
    propagates_mask = True

    axis: Any = -1

    def __post_init__(self) -> None:
        super().__post_init__()
        axis = self.axis
        ok = (isinstance(axis, int) and not isinstance(axis, bool)) or (
            isinstance(axis, (tuple, list)) and len(axis) > 0
            and all(isinstance(a, int) and not isinstance(a, bool) for a in axis))
        if not ok:
            raise self._error(
                errors.ConfigError, f"axis must be an int or a tuple of ints; received axis={axis!r}"
            )
        if isinstance(axis, list):
            self._set("axis", tuple(axis))

    def init(self, rng, x):
        return {}, {}

    def _mask(self, x: Any, mask: Any) -> Any:
        mask = jnp.asarray(mask)
        if mask.dtype != jnp.bool_:
            mask = mask > 0.5
        xs, ms = tuple(x.shape), tuple(mask.shape)
        if len(ms) <= len(xs) and all(m in (1, i) for m, i in zip(ms[::-1], xs[::-1])):
            return mask
        if len(ms) < len(xs) and all(m in (1, i) for m, i in zip(ms, xs)):
            return mask.reshape(ms + (1,) * (len(xs) - len(ms)))
        raise self._error(
            errors.ShapeError,
            f"the mask must broadcast against the input (from the right, or a (batch, time) "
            f"padding mask from the left); received input of shape {errors.fmt_shape(xs)} and "
            f"mask of shape {errors.fmt_shape(ms)}",
        )

    def apply(self, params, state, x, *, rng=None, training=False, mask=None):
        axes = self.axis if isinstance(self.axis, tuple) else (self.axis,)
        if any(a < -x.ndim or a >= x.ndim for a in axes):
            raise self._error(
                errors.ShapeError,
                f"axis {self.axis} is out of range for input of shape {errors.fmt_shape(x.shape)}",
            )
        x = mixed_precision.upcast(self, x)  # softmax in float32 under a mixed policy
        if mask is not None:
            mask = self._mask(x, mask)
            big = -3e4 if x.dtype == jnp.float16 else -1e9
            x = jnp.where(mask, x, jnp.asarray(big, x.dtype))
        y = jax.nn.softmax(x, axis=axes if len(axes) > 1 else axes[0])
        if mask is not None:
            y = jnp.where(mask, y, jnp.zeros((), y.dtype))
        return y, state
