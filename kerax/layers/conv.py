"""Convolution layers, channels-last: ConvND, ConvNDTranspose, DepthwiseConvND, SeparableConvND.

One N-d implementation per family; the 1D/2D/3D classes only fix ``rank``. Arguments, weight
names and layouts follow Keras 3, so weights move between the two:

* ``ConvND``: ``kernel (*window, in // groups, filters)``, ``bias (filters,)``.
* ``ConvNDTranspose``: ``kernel (*window, filters, in)`` (out before in, as in Keras).
* ``DepthwiseConvND``: ``kernel (*window, in, depth_multiplier)``,
  ``bias (in * depth_multiplier,)``; output channel ``c * depth_multiplier + m``.
* ``SeparableConvND``: ``depthwise_kernel (*window, in, depth_multiplier)``,
  ``pointwise_kernel (*ones, in * depth_multiplier, filters)``, ``bias (filters,)``.

``kernel_size``, ``strides`` and ``dilation_rate`` take an int or one int per spatial axis.
``padding="valid"`` pads nothing; ``"same"`` pads so that the output has ``ceil(n / stride)``
positions, the odd one at the end (TensorFlow's rule); the 1D layers (not the transposed
one) also take ``"causal"``: ``dilation * (kernel - 1)`` zeros on the left only.

``ConvND`` is lowered by ``kerax/layers/_lowering.py``: on CPU some configurations run as
an im2col matrix product or a padded-and-cropped convolution (same numbers, faster);
``KERAX_CONV_LOWERING=generic`` forces ``lax.conv_general_dilated`` everywhere.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
from jax import lax

from kerax import activations, errors, initializers, mixed_precision
from kerax.core.layer import Layer
from kerax.core.rng import derive
from kerax.layers import _lowering
from kerax.layers._spatial import (
    check_data_format,
    check_fits,
    check_padding,
    check_rank,
    dimension_numbers,
    spatial_tuple,
)
from kerax.layers._util import cast_input, positive_int

# -- the shared base --------------------------------------------------------------------


class _ConvBase(Layer):
    """Validation and plumbing shared by the convolution families (not a layer)."""

    rank = 0
    paddings = ("valid", "same")
    shrinks = True  # "valid" needs the input to be at least as large as the window

    def __post_init__(self) -> None:
        super().__post_init__()
        for f in ("filters", "depth_multiplier", "groups"):
            if hasattr(self, f):
                positive_int(self, f, getattr(self, f))
        for f in ("kernel_size", "strides", "dilation_rate"):
            self._set(f, spatial_tuple(self, f, getattr(self, f), self.rank))
        self._set("padding", check_padding(self, self.padding, self.paddings))
        check_data_format(self, self.data_format)
        activations.get(self.activation)
        for f in dataclasses.fields(self):
            if f.name.endswith("_initializer"):
                initializers.get(getattr(self, f.name))

    @property
    def window(self) -> tuple:
        """The kernel's extent once dilated: ``(k - 1) * dilation + 1`` per axis."""
        return tuple((k - 1) * d + 1 for k, d in zip(self.kernel_size, self.dilation_rate))

    def _check_input(self, shape: tuple, channels: int | None = None, kernel: Any = None) -> None:
        check_rank(self, shape, self.rank)
        if channels is not None and shape[-1] != channels:
            groups = f", groups={self.groups}" if getattr(self, "groups", 1) != 1 else ""
            raise self._error(
                errors.ShapeError,
                f"expected {channels} input channels (kernel shape "
                f"{errors.fmt_shape(kernel.shape)}{groups}); received input of shape "
                f"{errors.fmt_shape(shape)}",
            )
        if self.shrinks:
            check_fits(self, shape, self.window, self.padding, "dilated kernel",
                       "a smaller kernel_size or dilation_rate")

    def _padding(self) -> Any:
        if self.padding == "causal":
            return [(w - 1, 0) for w in self.window]
        return self.padding.upper()

    def _weight(self, rng: Any, name: str, field: str, shape: tuple) -> Any:
        init = initializers.get(getattr(self, field))
        return init(derive(rng, name), shape, jnp.dtype(self.param_dtype))

    def _bias(self, rng: Any, params: dict, size: int) -> dict:
        if self.use_bias:
            params["bias"] = self._weight(rng, "bias", "bias_initializer", (size,))
        return params

    def _finish(self, params: dict, y: Any) -> Any:
        if self.use_bias:
            y = y + params["bias"]
        return mixed_precision.activate(self, y)

    def _depthwise(self, x: Any, kernel: Any) -> Any:
        """Each input channel convolved with its own ``depth_multiplier`` filters."""
        channels = kernel.shape[-2]
        kernel = kernel.reshape(*kernel.shape[:-2], 1, -1)
        return lax.conv_general_dilated(
            x, kernel, self.strides, self._padding(), rhs_dilation=self.dilation_rate,
            dimension_numbers=dimension_numbers(self.rank), feature_group_count=channels,
        )


# -- ConvND -------------------------------------------------------------------------------


class _Conv(_ConvBase):
    """N-d convolution; see :class:`Conv2D`."""

    filters: int
    kernel_size: Any
    strides: Any = 1
    padding: str = "valid"
    data_format: str | None = None
    dilation_rate: Any = 1
    groups: int = 1
    activation: Any = None
    use_bias: bool = True
    kernel_initializer: Any = "glorot_uniform"
    bias_initializer: Any = "zeros"
    kernel_regularizer: Any = None
    bias_regularizer: Any = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.filters % self.groups:
            raise self._error(
                errors.ConfigError,
                f"groups must divide filters; received groups={self.groups}, filters={self.filters}",
            )

    def init(self, rng, x):
        shape = tuple(x.shape)
        self._check_input(shape)
        if shape[-1] % self.groups:
            raise self._error(
                errors.ShapeError,
                f"groups={self.groups} must divide the number of input channels; received "
                f"input of shape {errors.fmt_shape(shape)} ({shape[-1]} channels)",
            )
        kernel_shape = (*self.kernel_size, shape[-1] // self.groups, self.filters)
        params = {"kernel": self._weight(rng, "kernel", "kernel_initializer", kernel_shape)}
        return self._bias(rng, params, self.filters), {}

    def apply(self, params, state, x, *, rng=None, training=False):
        kernel = params["kernel"]
        self._check_input(tuple(x.shape), kernel.shape[-2] * self.groups, kernel)
        # _lowering picks im2col on CPU, the generic convolution elsewhere (same numbers).
        y = _lowering.conv(cast_input(x, kernel.dtype), kernel, self.strides, self._padding(),
                           self.dilation_rate, self.groups)
        return self._finish(params, y), state


class Conv1D(_Conv):
    """1D convolution over sequences: ``activation(conv(x, kernel) + bias)``.

    Arguments as :class:`Conv2D`; ``padding`` may also be ``"causal"`` (output ``t`` sees
    only inputs ``<= t``).

    Input shape: ``(batch, steps, channels)``.
    Output shape: ``(batch, new_steps, filters)``.
    """

    rank = 1
    paddings = ("valid", "same", "causal")


class Conv2D(_Conv):
    """2D convolution over images: ``activation(conv(x, kernel) + bias)``.

    Args:
      filters: number of output channels.
      kernel_size: window size, an int or one per spatial axis.
      strides: step of the window (default 1).
      padding: ``"valid"`` or ``"same"``.
      data_format: ``None`` or ``"channels_last"`` only (accepted for Keras code).
      dilation_rate: spacing between kernel taps (default 1).
      groups: split the channels into this many independent convolutions; it must divide
        ``filters`` and the input channels.
      activation, use_bias, kernel_initializer, bias_initializer: as :class:`Dense`.

    Weights: ``kernel (kh, kw, in // groups, filters)``, ``bias (filters,)``.

    Input shape: ``(batch, height, width, channels)``.
    Output shape: ``(batch, new_height, new_width, filters)``: per axis ``ceil(n / stride)``
    with ``"same"``, ``ceil((n - (k - 1) * dilation) / stride)`` with ``"valid"``.

    Example: ``layers.Conv2D(32, 3, activation="relu")``.
    """

    rank = 2


class Conv3D(_Conv):
    """3D convolution over volumes: ``activation(conv(x, kernel) + bias)``; args as :class:`Conv2D`.

    Input shape: ``(batch, depth, height, width, channels)``.
    Output shape: ``(batch, new_depth, new_height, new_width, filters)``.
    """

    rank = 3


# -- ConvNDTranspose ------------------------------------------------------------------------


class _ConvTranspose(_ConvBase):
    """N-d transposed convolution; see :class:`Conv2DTranspose`."""

    shrinks = False

    filters: int
    kernel_size: Any
    strides: Any = 1
    padding: str = "valid"
    output_padding: Any = None
    data_format: str | None = None
    dilation_rate: Any = 1
    activation: Any = None
    use_bias: bool = True
    kernel_initializer: Any = "glorot_uniform"
    bias_initializer: Any = "zeros"
    kernel_regularizer: Any = None
    bias_regularizer: Any = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.output_padding is not None:
            op = spatial_tuple(self, "output_padding", self.output_padding, self.rank, minimum=0)
            if any(p >= s for p, s in zip(op, self.strides)):
                raise self._error(
                    errors.ConfigError,
                    f"output_padding must be smaller than strides on every axis; received "
                    f"output_padding={op}, strides={self.strides}",
                )
            self._set("output_padding", op)

    def _pads(self) -> list[tuple[int, int]]:
        """Padding of the stride-dilated input, as Keras's JAX backend computes it."""
        pads = []
        for i, (k, s) in enumerate(zip(self.window, self.strides)):
            op = None if self.output_padding is None else self.output_padding[i]
            if self.padding == "valid":
                extra = max(k, s) - k if op is None else op
                pads.append((k - 1, k - 1 + extra))
            else:
                total = s + k - 2 if op is None else k + k % 2 - 2 + op
                left = min(total // 2 + total % 2, k - 1)
                pads.append((left, total - left))
        return pads

    def output_spatial(self, spatial: tuple) -> tuple:
        """Keras's ``deconv_output_length`` per axis."""
        return tuple((n - 1) * s + 1 + lo + hi - k + 1
                     for n, s, k, (lo, hi) in zip(spatial, self.strides, self.window, self._pads()))

    def _check_input(self, shape, channels=None, kernel=None):
        super()._check_input(shape, channels, kernel)
        out = self.output_spatial(shape[1:-1])
        if min(out) < 1:
            raise self._error(
                errors.ShapeError,
                f"the output would be empty: spatial shape {out} for input of shape "
                f"{errors.fmt_shape(shape)} with padding='same', output_padding="
                f"{self.output_padding}; use a larger output_padding or kernel_size",
            )

    def init(self, rng, x):
        shape = tuple(x.shape)
        self._check_input(shape)
        kernel_shape = (*self.kernel_size, self.filters, shape[-1])
        params = {"kernel": self._weight(rng, "kernel", "kernel_initializer", kernel_shape)}
        return self._bias(rng, params, self.filters), {}

    def apply(self, params, state, x, *, rng=None, training=False):
        kernel = params["kernel"]
        self._check_input(tuple(x.shape), kernel.shape[-1], kernel)
        # The gradient of a convolution: dilate the input by the strides, correlate with the
        # spatially flipped kernel read as (*window, out, in).
        flipped = jnp.flip(kernel, axis=tuple(range(self.rank)))
        y = lax.conv_general_dilated(
            cast_input(x, kernel.dtype), flipped, (1,) * self.rank, self._pads(),
            lhs_dilation=self.strides, rhs_dilation=self.dilation_rate,
            dimension_numbers=dimension_numbers(self.rank, "OI"),
        )
        return self._finish(params, y), state


class Conv1DTranspose(_ConvTranspose):
    """1D transposed convolution (upsampling); arguments as :class:`Conv2DTranspose`.

    Input shape: ``(batch, steps, channels)``. Output shape: ``(batch, new_steps, filters)``.
    """

    rank = 1


class Conv2DTranspose(_ConvTranspose):
    """2D transposed convolution: the gradient of :class:`Conv2D`, used to upsample.

    Args: as :class:`Conv2D` without ``groups``, plus ``output_padding``: ``None`` or an
    int (or one per axis) smaller than ``strides``, extra positions at the end of each axis.

    Weights: ``kernel (kh, kw, filters, in)`` (out before in, as Keras), ``bias (filters,)``.

    Input shape: ``(batch, height, width, channels)``.
    Output shape: ``(batch, new_height, new_width, filters)``: per axis, with
    ``k = (kernel - 1) * dilation + 1``, ``n * stride + max(k - stride, 0)`` for ``"valid"``
    and ``n * stride`` for ``"same"``; with ``output_padding``:
    ``(n - 1) * stride + k + output_padding`` (valid), ``(n - 1) * stride + k % 2 +
    output_padding`` (same).

    Example: ``layers.Conv2DTranspose(16, 3, strides=2, padding="same")`` doubles H and W.
    """

    rank = 2


class Conv3DTranspose(_ConvTranspose):
    """3D transposed convolution; arguments as :class:`Conv2DTranspose`.

    Input shape: ``(batch, depth, height, width, channels)``.
    Output shape: ``(batch, new_depth, new_height, new_width, filters)``.
    """

    rank = 3


# -- DepthwiseConvND -----------------------------------------------------------------------


Convolution1D = Conv1D
Convolution2D = Conv2D
Convolution3D = Conv3D
Convolution1DTranspose = Conv1DTranspose
Convolution2DTranspose = Conv2DTranspose
Convolution3DTranspose = Conv3DTranspose
