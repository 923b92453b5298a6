"""Int8 weight-only quantized layers: a float layer whose kernels are stored as int8.

Each class wraps the float layer it replaces (``layer=Dense(...)``, kept as its config) and
stores every quantized weight ``w`` as two non-trainable arrays in ``state``:

* ``w``: int8, the same shape as the float weight, values in ``[-127, 127]``;
* ``w_scale``: float32, one scale per output channel (symmetric, no zero point), in Keras
  3's convention so int8 weights move between the two: ``scale = 127 / (max|w| + 1e-7)``
  over every axis but the channel axes, ``int8 = round(w * scale)``, so
  ``dequantized = int8 / scale`` and ``|w - dequantized| <= 0.5 / scale`` elementwise.

Channel axes (the scale's shape): Dense ``kernel (in, out)`` -> ``(out,)``; ConvND ``kernel
(*window, in, out)`` -> ``(out,)``; ConvNDTranspose ``kernel (*window, out, in)`` ->
``(out,)``; DepthwiseConvND ``kernel (*window, in, mult)`` -> ``(in, mult)`` (one per output
channel); SeparableConvND ``depthwise_kernel`` -> ``(in, mult)`` and ``pointwise_kernel`` ->
``(filters,)``; Embedding ``embeddings (vocab, dim)`` -> ``(vocab,)``, one scale per row, so
each looked-up vector keeps its own precision.

Why ``state`` and not ``params``: int8 arrays are not differentiable, so keeping them out
of ``params`` leaves ``jax.grad`` and optax working on the float weights that remain (the
biases). Training a quantized model therefore updates only those float weights; the int8
kernels stay frozen, as in Keras.

The forward pass dequantizes on the fly (``int8 -> float32 * scale``, cast to the wrapped
layer's dtype, or the compute dtype under a dtype policy) and then runs the wrapped layer
itself, so activations, padding, groups, masks and dtype policies are exactly the float
layer's. The wrapper takes the wrapped layer's ``dtype`` / ``dtype_policy``.

Example::

    q = QuantizedDense(layer=layers.Dense(10))
    params, state = q.init(jax.random.key(0), jnp.zeros((1, 4)))
    state["kernel"].dtype  # int8; params holds only "bias"
"""

from __future__ import annotations

import types
from typing import Any, ClassVar, Mapping

import jax
import jax.numpy as jnp

from kerax import errors
from kerax.core.layer import Layer
from kerax.layers.conv import _Conv, _ConvTranspose
from kerax.layers.conv_depthwise import _DepthwiseConv, _SeparableConv
from kerax.layers.core import Dense, Embedding

QMAX = 127  # symmetric int8: -128 is never used, so negation stays exact
EPSILON = 1e-7  # Keras's backend epsilon in abs_max_quantize: an all-zero channel gets a finite scale
SCALE_SUFFIX = "_scale"
SCALE_FORMAT = "keras"  # 127 / max|w|; files of kerax 0.1.0 before 2026-11-29 held max|w| / 127


def quantize_per_channel(w: jax.typing.ArrayLike,
                         channel_axes: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """Symmetric int8 quantization with one float32 scale per channel.

    Args:
      w: a float weight of any rank.
      channel_axes: the axes that keep their own scale (negative counts from the end).

    Returns:
      ``(q, scale)``: ``q`` int8 of ``w``'s shape, ``round(w * scale)``; ``scale`` float32
      shaped as ``w`` along ``channel_axes`` only, ``127 / (max|w| + 1e-7)`` over the other
      axes (Keras 3's ``abs_max_quantize``; an all-zero channel quantizes to 0 exactly).
    """
    w = jnp.asarray(w, jnp.float32)
    keep = _axes(channel_axes, w.ndim)
    reduce = tuple(a for a in range(w.ndim) if a not in keep)
    amax = jnp.max(jnp.abs(w), axis=reduce, keepdims=True)
    scale = QMAX / (amax + EPSILON)
    q = jnp.clip(jnp.round(w * scale), -QMAX, QMAX).astype(jnp.int8)
    return q, jnp.squeeze(scale, axis=reduce)


def dequantize(q: jax.Array, scale: jax.Array, channel_axes: tuple[int, ...],
               dtype: Any = jnp.float32) -> jax.Array:
    """``q / scale`` (scale broadcast along ``channel_axes``), as ``dtype``: the inverse of
    :func:`quantize_per_channel` up to ``0.5 / scale`` per element."""
    keep = _axes(channel_axes, q.ndim)
    shape = tuple(q.shape[a] if a in keep else 1 for a in range(q.ndim))
    return (q.astype(jnp.float32) / jnp.reshape(scale, shape)).astype(dtype)


def _table(table: dict) -> Mapping:
    """A read-only ``{class: {weight: axes}}`` (class attributes hold no mutable dicts)."""
    return types.MappingProxyType({c: types.MappingProxyType(w) for c, w in table.items()})


def _axes(axes: tuple[int, ...], ndim: int) -> tuple[int, ...]:
    return tuple(sorted(a % ndim for a in axes))


class _Quantized(Layer):
    """Base of the quantized wrappers (private: the registry skips ``_`` names).

    ``scale_format`` names the scale convention (``"keras"``: see the module docs). Weight
    files mark theirs too; those of the earlier convention are converted on load
    (:func:`kerax.saving.weights.upgrade_int8_scales`)."""

    layer: Any = None
    scale_format: str = SCALE_FORMAT

    # The float classes a subclass wraps (isinstance), and per class which weights are
    # quantized and their channel axes; the first matching class wins.
    wraps: ClassVar[tuple] = ()
    weight_axes: ClassVar[Any] = types.MappingProxyType({})

    def __post_init__(self) -> None:
        # The wrapper runs in the wrapped layer's dtype (and policy), so containers cast
        # its float weights and inputs exactly as they would the float layer's.
        for field in ("dtype", "dtype_policy"):
            if isinstance(self.layer, Layer) and getattr(self, field, None) is None \
                    and getattr(self.layer, field, None) is not None:
                self._set(field, getattr(self.layer, field))
        super().__post_init__()
        if not isinstance(self.layer, self.wraps):
            expected = " or ".join(c.__name__.lstrip("_") for c in self.wraps)
            raise self._error(
                errors.ConfigError,
                f"layer= must be a float {expected} layer to quantize; received "
                f"{type(self.layer).__name__ if isinstance(self.layer, Layer) else repr(self.layer)}",
            )
        if self.input_shape is None and self.layer.input_shape is not None:
            self._set("input_shape", self.layer.input_shape)  # the first layer of a Sequential
        if self.scale_format != SCALE_FORMAT:
            raise self._error(errors.ConfigError,
                              f"scale_format must be {SCALE_FORMAT!r}; received {self.scale_format!r}")

    @property
    def quantized_weights(self) -> Mapping[str, tuple[int, ...]]:
        """``{weight name: channel axes}`` for the wrapped layer's quantized weights."""
        for cls, axes in self.weight_axes.items():
            if isinstance(self.layer, cls):
                return axes
        raise AssertionError("unreachable: __post_init__ checked the wrapped class")  # pragma: no cover

    def quantize_weights(self, params: dict, state: dict) -> tuple[dict, dict]:
        """The wrapped layer's float ``(params, state)`` -> this layer's: each quantized
        weight moves from ``params`` to ``state`` as int8 plus its ``_scale``."""
        params, state = dict(params), dict(state)
        for name, axes in self.quantized_weights.items():
            if name not in params:
                raise self._error(
                    errors.WeightsError,
                    f"expected the float weight {name!r} of {type(self.layer).__name__} to "
                    f"quantize; received weights {sorted(params)}",
                )
            q, scale = quantize_per_channel(params.pop(name), axes)
            state[name], state[name + SCALE_SUFFIX] = q, scale
        return params, state

    def float_weights(self, params: dict, state: dict, dtype: Any = None) -> tuple[dict, dict]:
        """This layer's ``(params, state)`` -> the wrapped layer's, dequantized to ``dtype``
        (default: the wrapped layer's weight dtype)."""
        dtype = jnp.dtype(dtype or self.layer.param_dtype)
        params, state = dict(params), dict(state)
        for name, axes in self.quantized_weights.items():
            q, scale = state.pop(name), state.pop(name + SCALE_SUFFIX)
            params[name] = dequantize(q, scale, axes, dtype)
        return params, state

    # -- the protocol: the wrapped layer's, over dequantized weights ------------------------

    def init(self, rng, x):
        params, state = self.layer.init(rng, x)
        return self.quantize_weights(params, state)

    def apply(self, params, state, x, *, rng=None, training=False):
        # Under a dtype policy, Layer.apply_masked has cast the float params and x and set
        # this (copied) layer's dtype_policy: dequantize to the compute dtype and hand the
        # policy on, so the wrapped layer's own policy steps (float32 softmax) still run.
        policy = getattr(self, "dtype_policy", None)
        compute = getattr(self, "compute_dtype", None) if policy is not None else None
        p, s = self.float_weights(params, state, compute)
        extra = {} if policy is None else {"dtype_policy": policy}
        y, s, _ = self.layer.apply_masked(p, s, x, None, rng=rng, training=training, **extra)
        frozen = {k: state[k] for n in self.quantized_weights for k in (n, n + SCALE_SUFFIX)}
        return y, {**s, **frozen}

    def compute_mask(self, x, mask):
        return self.layer.compute_mask(x, mask)

    def penalty(self, params):
        # Regularizers of the remaining float weights (bias); the int8 kernels are frozen.
        return self.layer.penalty(params)


class QuantizedDense(_Quantized):
    """A :class:`~kerax.layers.Dense` with an int8 ``kernel`` and per-unit ``kernel_scale``.

    Weights: params ``bias (units,)``; state ``kernel (in, units)`` int8,
    ``kernel_scale (units,)`` float32.

    Input shape: ``(batch, ..., in)``. Output shape: ``(batch, ..., units)``.
    """

    wraps = (Dense,)
    weight_axes = _table({Dense: {"kernel": (-1,)}})


class QuantizedConv(_Quantized):
    """A ConvND, ConvNDTranspose, DepthwiseConvND or SeparableConvND with int8 kernels.

    Weights: the wrapped layer's ``bias`` in params; each kernel in state as int8 plus a
    float32 ``<kernel>_scale`` with one value per output channel (see the module docs).

    Input and output shapes: the wrapped layer's.
    """

    wraps = (_Conv, _ConvTranspose, _DepthwiseConv, _SeparableConv)
    weight_axes = _table({
        _Conv: {"kernel": (-1,)},
        _ConvTranspose: {"kernel": (-2,)},  # (*window, out, in)
        _DepthwiseConv: {"kernel": (-2, -1)},  # output channel c * mult + m
        _SeparableConv: {"depthwise_kernel": (-2, -1), "pointwise_kernel": (-1,)},
    })


class QuantizedEmbedding(_Quantized):
    """An :class:`~kerax.layers.Embedding` with an int8 table and one scale per row.

    Weights: state ``embeddings (input_dim, output_dim)`` int8, ``embeddings_scale
    (input_dim,)`` float32; no params.

    Input shape: ``(batch, ...)`` integer ids. Output shape: ``(batch, ..., output_dim)``.
    """

    wraps = (Embedding,)
    weight_axes = _table({Embedding: {"embeddings": (0,)}})
