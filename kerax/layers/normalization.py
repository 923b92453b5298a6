"""Normalization layers: Batch, Layer, Group, Unit and RMS normalization (Keras 3 semantics).

Weight names and layouts are Keras's: ``gamma``, ``beta`` (params) and, for
``BatchNormalization``, ``moving_mean``, ``moving_variance`` (state), each shaped like the
normalized feature axes; ``RMSNormalization`` has one weight, ``scale``. Statistics are
computed in float32 (float64 for float64 layers) even for bfloat16/float16 layers; the output
has the layer's dtype. An ``axis`` list is normalized to sorted non-negative axes, so its
weights are laid out in the order the axes appear in the input.
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp

from kerax import errors, initializers
from kerax.core.layer import Layer
from kerax.core.rng import derive
from kerax.layers._util import cast_input


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _compute_dtype(dtype: Any) -> Any:
    """float32 for float32 and narrower layers (bfloat16, float16), float64 for float64."""
    return jnp.dtype("float64") if jnp.dtype(dtype).itemsize > 4 else jnp.dtype("float32")


def axis_bound(axis_name: Any) -> bool:
    """Whether ``axis_name`` is a bound collective axis here (inside ``jax.pmap``,
    ``shard_map`` or ``vmap`` with that ``axis_name``). Decided at trace time:
    ``lax.axis_index`` raises ``NameError`` for an unbound name (plain ``jit``, or ``jit`` with
    shardings, where XLA already sees the whole global batch)."""
    try:
        jax.lax.axis_index(axis_name)
    except NameError:
        return False
    return True


class _Normalization(Layer):
    """Validation and helpers shared by the normalization layers (not a layer)."""

    propagates_mask = True
    axis_list = True  # whether ``axis`` may be a list of axes

    def __post_init__(self) -> None:
        super().__post_init__()
        axis = self.axis
        if self.axis_list and isinstance(axis, (list, tuple)):
            if not axis or not all(_is_int(a) for a in axis) or len(set(axis)) != len(axis):
                raise self._error(errors.ConfigError, "axis must be an integer or a non-empty "
                                  f"list of distinct integers; received axis={axis!r}")
            self._set("axis", tuple(int(a) for a in axis))
        elif not _is_int(axis):
            kind = "an integer or a list of integers" if self.axis_list else "an integer"
            raise self._error(errors.ConfigError, f"axis must be {kind}; received axis={axis!r}")
        for field in ("epsilon", "momentum"):
            value = getattr(self, field, 0.0)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0 or (
                    field == "momentum" and value > 1):
                bounds = "in [0, 1]" if field == "momentum" else ">= 0"
                raise self._error(errors.ConfigError,
                                  f"{field} must be a number {bounds}; received {field}={value!r}")
        for name in ("beta", "gamma", "moving_mean", "moving_variance", "scale"):
            if hasattr(self, f"{name}_initializer"):
                if initializers.get(getattr(self, f"{name}_initializer")) is None:
                    raise self._error(errors.ConfigError, f"{name}_initializer must not be None")

    def _axes(self, shape: tuple) -> tuple:
        """The normalized axes of an input of ``shape``: sorted, non-negative."""
        raw = self.axis if isinstance(self.axis, tuple) else (self.axis,)
        rank = len(shape)
        if any(not -rank <= a < rank for a in raw):
            raise self._error(
                errors.ShapeError,
                f"axis={self.axis!r} is out of bounds for an input of rank {rank}; received "
                f"input of shape {errors.fmt_shape(shape)}")
        axes = tuple(sorted(a % rank for a in raw))
        if len(set(axes)) != len(axes):
            raise self._error(errors.ShapeError, f"axis={self.axis!r} names the same axis twice "
                              f"for an input of rank {rank}")
        return axes

    def _check_features(self, shape: tuple, axes: tuple, expected: tuple) -> None:
        got = tuple(shape[a] for a in axes)
        if got != tuple(expected):
            want = [expected[axes.index(a)] if a in axes else None for a in range(len(shape))]
            raise self._error(
                errors.ShapeError,
                f"expected input shape {errors.fmt_shape(want)} (size {tuple(expected)} on axis "
                f"{axes}, as the layer was built); received input of shape "
                f"{errors.fmt_shape(shape)}")

    def _weight(self, rng: Any, name: str, shape: tuple) -> Any:
        init = initializers.get(getattr(self, f"{name}_initializer"))
        return init(derive(rng, name), shape, jnp.dtype(self.param_dtype))

    def _affine(self, rng: Any, shape: tuple, scale: bool, center: bool) -> dict:
        params = {}
        if scale:
            params["gamma"] = self._weight(rng, "gamma", shape)
        if center:
            params["beta"] = self._weight(rng, "beta", shape)
        return params

    def _input(self, x: Any) -> tuple[Any, Any]:
        """``x`` cast to the layer's compute dtype (Keras's autocast) and to the dtype the
        statistics use (float32 at least, also under a mixed policy)."""
        x = cast_input(x, jnp.dtype(self.compute_dtype))
        return x, x.astype(_compute_dtype(x.dtype))


def _broadcast(v: Any, ndim: int, axes: tuple, dtype: Any) -> Any:
    """A weight laid out over ``axes`` (sorted), reshaped to broadcast against the input."""
    if v is None:
        return None
    shape = [v.shape[axes.index(a)] if a in axes else 1 for a in range(ndim)]
    return v.reshape(shape).astype(dtype)


def _normalize(x: Any, mean: Any, variance: Any, epsilon: float, gamma: Any, beta: Any) -> Any:
    """``(x - mean) / sqrt(variance + epsilon) * gamma + beta``, in Keras's operation order."""
    inv = jax.lax.rsqrt(variance + epsilon)
    inv = inv if gamma is None else inv * gamma
    res = -mean * inv if beta is None else -mean * inv + beta
    return x * inv + res


class BatchNormalization(_Normalization):
    """Normalizes each feature with the batch's statistics in training, moving ones otherwise.

    ``training=True``: ``gamma * (x - mean(x)) / sqrt(var(x) + epsilon) + beta`` with the
    (biased) mean and variance over every axis but ``axis``, and the returned state holds
    ``moving = moving * momentum + batch_stat * (1 - momentum)``. ``training=False``: the moving
    statistics normalize, and the state comes back unchanged.

    Weights: ``gamma (features,)`` if ``scale``, ``beta (features,)`` if ``center``; state:
    ``moving_mean (features,)``, ``moving_variance (features,)``.

    ``synchronized=True``: when the collective axis ``axis_name`` is bound (inside
    ``jax.pmap`` / ``shard_map`` / ``vmap`` with that name, each device holding one shard of
    the batch) the batch moments are averaged over it with ``lax.psum``/``lax.pmean``, so every
    device normalizes with, and updates its moving statistics from, the global batch's
    statistics; the result is that of one device on the concatenated batch. When the axis is
    not bound (plain ``jit``, or ``jit`` with shardings, where XLA already sees the global
    batch) the moments are computed as usual. This is decided at trace time
    (:func:`axis_bound`). ``synchronized=False`` always uses each device's local batch. The
    variance is two-pass (global mean, then mean squared deviation from it: two all-reduces),
    which avoids the cancellation of ``E[x**2] - E[x]**2``.

    Masks: with ``mask`` (``x.shape[:-1]``, True = real), only unmasked positions count in the
    training moments (Keras's masked moments); the mask is handed on unchanged.

    Input shape: any, rank >= 1. Output shape: the same.
    """

    uses_mask = True
    axis_list = False

    axis: int = -1
    momentum: float = 0.99
    epsilon: float = 1e-3
    center: bool = True
    scale: bool = True
    beta_initializer: Any = "zeros"
    gamma_initializer: Any = "ones"
    moving_mean_initializer: Any = "zeros"
    moving_variance_initializer: Any = "ones"
    beta_regularizer: Any = None
    gamma_regularizer: Any = None
    synchronized: bool = False
    axis_name: Any = "data"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.axis_name, str) or not self.axis_name:
            raise self._error(errors.ConfigError, "axis_name must be a non-empty string (the "
                              f"pmap/shard_map axis); received axis_name={self.axis_name!r}")

    def init(self, rng, x):
        shape = tuple(x.shape)
        (axis,) = self._axes(shape)
        features = (int(shape[axis]),)
        params = self._affine(rng, features, self.scale, self.center)
        state = {name: self._weight(rng, name, features) for name in ("moving_mean", "moving_variance")}
        return params, state

    def apply(self, params, state, x, *, rng=None, training=False, mask=None):
        shape = tuple(x.shape)
        (axis,) = self._axes(shape)
        self._check_features(shape, (axis,), state["moving_mean"].shape)
        x, xc = self._input(x)
        cdt = xc.dtype
        reduce = tuple(a for a in range(len(shape)) if a != axis)
        if training:
            mean, variance = self._moments(xc, reduce, mask)
            m = self.momentum
            state = {**state, **{
                name: (state[name].astype(cdt) * m + stat * (1.0 - m)).astype(state[name].dtype)
                for name, stat in (("moving_mean", mean), ("moving_variance", variance))}}
        else:
            mean, variance = state["moving_mean"].astype(cdt), state["moving_variance"].astype(cdt)
        bc = lambda v: _broadcast(v, len(shape), (axis,), cdt)  # noqa: E731
        y = _normalize(xc, bc(mean), bc(variance), self.epsilon, bc(params.get("gamma")),
                       bc(params.get("beta")))
        return y.astype(x.dtype), state

    def _moments(self, x: Any, reduce: tuple, mask: Any) -> tuple[Any, Any]:
        """Biased mean and variance over ``reduce`` (globally when synchronized and bound)."""
        sync = self.synchronized and axis_bound(self.axis_name)
        if mask is None:
            pmean = (lambda v: jax.lax.pmean(v, self.axis_name)) if sync else (lambda v: v)
            mean = pmean(jnp.mean(x, reduce, keepdims=True))
            variance = pmean(jnp.mean(jnp.square(x - mean), reduce, keepdims=True))
            return mean.reshape(-1), variance.reshape(-1)
        psum = (lambda v: jax.lax.psum(v, self.axis_name)) if sync else (lambda v: v)
        w = self._mask_weights(x, mask)
        count = jnp.maximum(psum(jnp.sum(w.astype(x.dtype), reduce, keepdims=True)), 1.0)
        mean = psum(jnp.sum(jnp.where(w, x, 0.0), reduce, keepdims=True)) / count
        sq = jnp.where(w, jnp.square(x - mean), 0.0)
        variance = psum(jnp.sum(sq, reduce, keepdims=True)) / count
        return mean.reshape(-1), variance.reshape(-1)

    def _mask_weights(self, x: Any, mask: Any) -> Any:
        """The mask broadcast over the last axis (as Keras does): a boolean like ``x``."""
        mshape, shape = tuple(jnp.shape(mask)), tuple(x.shape)
        if len(mshape) != len(shape) - 1 or any(m not in (1, n) for m, n in zip(mshape, shape)):
            raise self._error(
                errors.ShapeError,
                f"expected a mask of shape {errors.fmt_shape(shape[:-1])} (the input's shape "
                f"without its last axis); received mask of shape {errors.fmt_shape(mshape)} "
                f"for input of shape {errors.fmt_shape(shape)}")
        return jnp.broadcast_to(jnp.asarray(mask).astype(bool)[..., None], shape)


class LayerNormalization(_Normalization):
    """Normalizes each example over ``axis`` (an int or a list): ``gamma * (x - mean) /
    sqrt(var + epsilon) + beta``, the statistics taken over the ``axis`` dimensions.

    ``rms_scaling=True`` (deprecated in Keras 3, kept for its configs) computes
    ``x * rsqrt(var(x) + epsilon) * gamma``, with no centering and no ``beta``: it scales by
    the variance, not the root mean square; for RMS normalization use ``RMSNormalization``.

    Weights: ``gamma`` (if ``scale`` or ``rms_scaling``) and ``beta`` (if ``center`` and not
    ``rms_scaling``), each shaped as the input's ``axis`` dimensions.

    Input shape: any. Output shape: the same.
    """

    axis: Any = -1
    epsilon: float = 1e-3
    center: bool = True
    scale: bool = True
    rms_scaling: bool = False
    beta_initializer: Any = "zeros"
    gamma_initializer: Any = "ones"
    beta_regularizer: Any = None
    gamma_regularizer: Any = None

    def init(self, rng, x):
        shape = tuple(x.shape)
        dims = tuple(int(shape[a]) for a in self._axes(shape))
        return self._affine(rng, dims, self.scale or self.rms_scaling,
                            self.center and not self.rms_scaling), {}

    def apply(self, params, state, x, *, rng=None, training=False):
        shape = tuple(x.shape)
        axes = self._axes(shape)
        for w in params.values():
            self._check_features(shape, axes, w.shape)
        x, xc = self._input(x)
        bc = lambda v: _broadcast(v, len(shape), axes, xc.dtype)  # noqa: E731
        gamma, beta = bc(params.get("gamma")), bc(params.get("beta"))
        variance = jnp.var(xc, axes, keepdims=True)
        if self.rms_scaling:
            y = xc * jax.lax.rsqrt(variance + self.epsilon)
            y = y if gamma is None else y * gamma
        else:
            y = _normalize(xc, jnp.mean(xc, axes, keepdims=True), variance, self.epsilon, gamma, beta)
        return y.astype(x.dtype), state


class GroupNormalization(_Normalization):
    """Splits the channels (``axis``) into ``groups`` and normalizes each example's groups.

    Each group of ``channels // groups`` consecutive channels is normalized over itself and
    every non-batch axis; then ``gamma`` and ``beta`` apply per channel. ``groups=-1`` is
    instance normalization (one group per channel); ``groups=1`` is layer normalization over
    all non-batch axes. ``groups`` must divide the number of channels.

    Weights: ``gamma (channels,)`` if ``scale``, ``beta (channels,)`` if ``center``.

    Input shape: ``(batch, ..., channels)`` (channels on ``axis``). Output shape: the same.
    """

    axis_list = False

    groups: int = 32
    axis: int = -1
    epsilon: float = 1e-3
    center: bool = True
    scale: bool = True
    beta_initializer: Any = "zeros"
    gamma_initializer: Any = "ones"
    beta_regularizer: Any = None
    gamma_regularizer: Any = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not _is_int(self.groups) or (self.groups <= 0 and self.groups != -1):
            raise self._error(errors.ConfigError, "groups must be a positive integer (or -1 for "
                              f"instance normalization); received groups={self.groups!r}")

    def _layout(self, shape: tuple) -> tuple[int, int]:
        """The channel axis and the number of groups for an input of ``shape``."""
        (axis,) = self._axes(shape)
        if axis == 0:
            raise self._error(errors.ShapeError, f"axis={self.axis} is the batch axis; "
                              "GroupNormalization normalizes within each example "
                              f"(received input of shape {errors.fmt_shape(shape)})")
        channels = int(shape[axis])
        groups = channels if self.groups == -1 else self.groups
        if channels % groups:
            raise self._error(
                errors.ShapeError,
                f"groups={groups} must divide the number of channels; received input of shape "
                f"{errors.fmt_shape(shape)} ({channels} channels on axis {axis}). Use a "
                f"number of groups that divides {channels}")
        return axis, groups

    def init(self, rng, x):
        shape = tuple(x.shape)
        axis, _ = self._layout(shape)
        return self._affine(rng, (int(shape[axis]),), self.scale, self.center), {}

    def apply(self, params, state, x, *, rng=None, training=False):
        shape = tuple(x.shape)
        axis, groups = self._layout(shape)
        for w in params.values():
            self._check_features(shape, (axis,), w.shape)
        x, xc = self._input(x)
        gshape = (*shape[:axis], groups, shape[axis] // groups, *shape[axis + 1:])
        xg = xc.reshape(gshape)
        reduce = tuple(a for a in range(1, len(gshape)) if a != axis)
        bc = lambda v: _broadcast(  # noqa: E731
            None if v is None else v.reshape(groups, -1), len(gshape), (axis, axis + 1), xc.dtype)
        y = _normalize(xg, jnp.mean(xg, reduce, keepdims=True), jnp.var(xg, reduce, keepdims=True),
                       self.epsilon, bc(params.get("gamma")), bc(params.get("beta")))
        return y.reshape(shape).astype(x.dtype), state


class UnitNormalization(_Normalization):
    """Scales each example to unit L2 norm over ``axis`` (an int or a list).

    ``x / max(||x||, 1e-12)``, computed as Keras does (``x * min(rsqrt(sum(x**2)), 1e12)``).
    No weights.

    Input shape: any. Output shape: the same.
    """

    axis: Any = -1

    def init(self, rng, x):
        self._axes(tuple(x.shape))
        return {}, {}

    def apply(self, params, state, x, *, rng=None, training=False):
        axes = self._axes(tuple(x.shape))
        x, xc = self._input(x)
        inv = jax.lax.rsqrt(jnp.sum(jnp.square(xc), axes, keepdims=True))
        return (xc * jnp.minimum(inv, 1e12)).astype(x.dtype), state


class RMSNormalization(_Normalization):
    """Root-mean-square normalization: ``x * rsqrt(mean(x**2) + epsilon) * scale``, the mean
    over ``axis`` (an int or a list), as ``keras.layers.RMSNormalization``.

    Weights: ``scale``, shaped as the input's ``axis`` dimensions, initialized to ones
    (``scale_initializer``, a kerax addition; Keras always uses ones).

    Input shape: any. Output shape: the same.
    """

    axis: Any = -1
    epsilon: float = 1e-6
    scale_initializer: Any = "ones"

    def init(self, rng, x):
        shape = tuple(x.shape)
        return {"scale": self._weight(rng, "scale", tuple(int(shape[a]) for a in self._axes(shape)))}, {}

    def apply(self, params, state, x, *, rng=None, training=False):
        shape = tuple(x.shape)
        axes = self._axes(shape)
        self._check_features(shape, axes, params["scale"].shape)
        x, xc = self._input(x)
        rrms = jax.lax.rsqrt(jnp.mean(jnp.square(xc), axes, keepdims=True) + self.epsilon)
        y = xc * rrms * _broadcast(params["scale"], len(shape), axes, xc.dtype)
        return y.astype(x.dtype), state

