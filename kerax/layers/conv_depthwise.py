"""Depthwise and separable convolutions, channels-last (Keras 3 weight layouts).

* ``DepthwiseConvND``: ``kernel (*window, in, depth_multiplier)``,
  ``bias (in * depth_multiplier,)``; output channel ``c * depth_multiplier + m``.
* ``SeparableConvND``: ``depthwise_kernel (*window, in, depth_multiplier)``,
  ``pointwise_kernel (*ones, in * depth_multiplier, filters)``, ``bias (filters,)``.
"""

from __future__ import annotations

import math
import types


from kerax.layers._util import cast_input
from kerax.layers.conv import _ConvBase

class _DepthwiseConv(_ConvBase):
    """N-d depthwise convolution; see :class:`DepthwiseConv2D`."""

    kernel_size: Any
    strides: Any = 1
    padding: str = "valid"
    depth_multiplier: int = 1
    data_format: str | None = None
    dilation_rate: Any = 1
    activation: Any = None
    use_bias: bool = True
    depthwise_initializer: Any = "glorot_uniform"
    bias_initializer: Any = "zeros"
    depthwise_regularizer: Any = None
    bias_regularizer: Any = None
    regularized_weights = types.MappingProxyType({"depthwise_regularizer": "kernel"})

    def init(self, rng, x):
        shape = tuple(x.shape)
        self._check_input(shape)
        kernel_shape = (*self.kernel_size, shape[-1], self.depth_multiplier)
        params = {"kernel": self._weight(rng, "kernel", "depthwise_initializer", kernel_shape)}
        return self._bias(rng, params, shape[-1] * self.depth_multiplier), {}

    def apply(self, params, state, x, *, rng=None, training=False):
        kernel = params["kernel"]
        self._check_input(tuple(x.shape), kernel.shape[-2], kernel)
        return self._finish(params, self._depthwise(cast_input(x, kernel.dtype), kernel)), state


class DepthwiseConv1D(_DepthwiseConv):
    """1D depthwise convolution; arguments as :class:`DepthwiseConv2D`, plus ``"causal"`` padding.

    Input shape: ``(batch, steps, channels)``.
    Output shape: ``(batch, new_steps, channels * depth_multiplier)``.
    """

    rank = 1
    paddings = ("valid", "same", "causal")


class DepthwiseConv2D(_DepthwiseConv):
    """2D depthwise convolution: each input channel gets its own ``depth_multiplier`` filters.

    Args: ``kernel_size``, ``strides``, ``padding``, ``depth_multiplier``, ``data_format``,
    ``dilation_rate``, ``activation``, ``use_bias``, ``depthwise_initializer``,
    ``bias_initializer``, as in Keras.

    Weights: ``kernel (kh, kw, in, depth_multiplier)``, ``bias (in * depth_multiplier,)``.

    Input shape: ``(batch, height, width, channels)``.
    Output shape: ``(batch, new_height, new_width, channels * depth_multiplier)``; output
    channel ``c * depth_multiplier + m`` comes from input channel ``c``.
    """

    rank = 2


# -- SeparableConvND -----------------------------------------------------------------------


class _SeparableConv(_ConvBase):
    """N-d separable convolution; see :class:`SeparableConv2D`."""

    filters: int
    kernel_size: Any
    strides: Any = 1
    padding: str = "valid"
    data_format: str | None = None
    dilation_rate: Any = 1
    depth_multiplier: int = 1
    activation: Any = None
    use_bias: bool = True
    depthwise_initializer: Any = "glorot_uniform"
    pointwise_initializer: Any = "glorot_uniform"
    bias_initializer: Any = "zeros"
    depthwise_regularizer: Any = None
    pointwise_regularizer: Any = None
    bias_regularizer: Any = None
    regularized_weights = types.MappingProxyType({"depthwise_regularizer": "depthwise_kernel",
                                                  "pointwise_regularizer": "pointwise_kernel"})

    def init(self, rng, x):
        shape = tuple(x.shape)
        self._check_input(shape)
        mid = shape[-1] * self.depth_multiplier
        params = {
            "depthwise_kernel": self._weight(
                rng, "depthwise_kernel", "depthwise_initializer",
                (*self.kernel_size, shape[-1], self.depth_multiplier)),
            "pointwise_kernel": self._weight(
                rng, "pointwise_kernel", "pointwise_initializer",
                (1,) * self.rank + (mid, self.filters)),
        }
        return self._bias(rng, params, self.filters), {}

    def apply(self, params, state, x, *, rng=None, training=False):
        depthwise, pointwise = params["depthwise_kernel"], params["pointwise_kernel"]
        self._check_input(tuple(x.shape), depthwise.shape[-2], depthwise)
        y = self._depthwise(cast_input(x, depthwise.dtype), depthwise)
        y = y @ pointwise.reshape(math.prod(pointwise.shape[:-1]), pointwise.shape[-1])
        return self._finish(params, y), state


class SeparableConv1D(_SeparableConv):
    """1D separable convolution; arguments as :class:`SeparableConv2D`, plus ``"causal"`` padding.

    Input shape: ``(batch, steps, channels)``. Output shape: ``(batch, new_steps, filters)``.
    """

    rank = 1
    paddings = ("valid", "same", "causal")


class SeparableConv2D(_SeparableConv):
    """2D separable convolution: a depthwise convolution, then a 1x1 convolution to ``filters``.

    Args: ``filters``, ``kernel_size``, ``strides``, ``padding``, ``data_format``,
    ``dilation_rate``, ``depth_multiplier``, ``activation``, ``use_bias``,
    ``depthwise_initializer``, ``pointwise_initializer``, ``bias_initializer``, as in Keras;
    ``strides``, ``padding`` and ``dilation_rate`` apply to the depthwise step.

    Weights: ``depthwise_kernel (kh, kw, in, depth_multiplier)``,
    ``pointwise_kernel (1, 1, in * depth_multiplier, filters)``, ``bias (filters,)``.

    Input shape: ``(batch, height, width, channels)``.
    Output shape: ``(batch, new_height, new_width, filters)``.
    """

    rank = 2


# Keras's long names.


SeparableConvolution1D = SeparableConv1D
SeparableConvolution2D = SeparableConv2D
