"""Pooling layers, channels-last: MaxPoolingND, AveragePoolingND, GlobalAverage/MaxPoolingND.

Windowed pooling runs ``jax.lax.reduce_window`` over the spatial axes, or on CPU, when the
windows tile the input (``pool_size == strides``), a reshape and a reduction with the same
numbers (see ``kerax/layers/_lowering.py``). ``padding="same"`` pads as TensorFlow does
(output ``ceil(n / stride)``, the odd position at the end), and padded positions never
take part: a max ignores them and an average divides by the number of real inputs in each
window, as in Keras. Pooling has no weights; ``dtype``, when set,
is the dtype inputs are cast to (integer inputs become float32 when it is not set).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from kerax.core.layer import Layer
from kerax.layers import _lowering
from kerax.layers._util import cast_input
from kerax.layers._spatial import check_data_format, check_fits, check_padding, check_rank, spatial_tuple


def _as_float(layer: Layer, x: Any) -> Any:
    x = jnp.asarray(x)
    if layer.dtype is not None:
        return cast_input(x, jnp.dtype(layer.dtype))
    if not jnp.issubdtype(x.dtype, jnp.floating):
        return cast_input(x, jnp.dtype("float32"))
    return x


class _Pooling(Layer):
    """Windowed pooling over ``rank`` spatial axes (not a layer by itself)."""

    pool_size: Any = 2
    strides: Any = None
    padding: str = "valid"
    data_format: str | None = None

    rank = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._set("pool_size", spatial_tuple(self, "pool_size", self.pool_size, self.rank))
        strides = self.pool_size if self.strides is None else self.strides
        self._set("strides", spatial_tuple(self, "strides", strides, self.rank))
        self._set("padding", check_padding(self, self.padding, ("valid", "same")))
        check_data_format(self, self.data_format)

    def _check_input(self, shape: tuple) -> None:
        check_rank(self, shape, self.rank)
        check_fits(self, shape, self.pool_size, self.padding, "pool window", "a smaller pool_size")

    def init(self, rng, x):
        self._check_input(tuple(x.shape))
        return {}, {}


class _MaxPooling(_Pooling):
    def apply(self, params, state, x, *, rng=None, training=False):
        self._check_input(tuple(x.shape))
        x = _as_float(self, x)
        return _lowering.max_pool(x, self.pool_size, self.strides, self.padding), state


class _AveragePooling(_Pooling):
    def apply(self, params, state, x, *, rng=None, training=False):
        self._check_input(tuple(x.shape))
        x = _as_float(self, x)
        return _lowering.avg_pool(x, self.pool_size, self.strides, self.padding), state


class MaxPooling1D(_MaxPooling):
    """Max over windows of ``pool_size`` steps (default 2), every ``strides`` (default: pool_size).

    Input shape: ``(batch, steps, channels)``. Output shape: ``(batch, new_steps, channels)``.
    """

    rank = 1


class MaxPooling2D(_MaxPooling):
    """Max over ``pool_size`` windows (default ``(2, 2)``), every ``strides`` (default: pool_size).

    Args: ``pool_size``, ``strides`` (``None``: ``pool_size``), ``padding`` (``"valid"`` or
    ``"same"``), ``data_format`` (``None`` or ``"channels_last"``).

    Input shape: ``(batch, height, width, channels)``.
    Output shape: ``(batch, new_height, new_width, channels)``: per axis
    ``(n - pool) // stride + 1`` with ``"valid"``, ``ceil(n / stride)`` with ``"same"``.
    """

    rank = 2


class MaxPooling3D(_MaxPooling):
    """Max over 3D windows; arguments as :class:`MaxPooling2D`.

    Input shape: ``(batch, depth, height, width, channels)``.
    Output shape: ``(batch, new_depth, new_height, new_width, channels)``.
    """

    rank = 3


class AveragePooling1D(_AveragePooling):
    """Mean over windows of steps; arguments as :class:`MaxPooling2D`.

    With ``"same"`` padding each mean is over the real inputs in the window only.

    Input shape: ``(batch, steps, channels)``. Output shape: ``(batch, new_steps, channels)``.
    """

    rank = 1


class AveragePooling2D(_AveragePooling):
    """Mean over windows; arguments and output size as :class:`MaxPooling2D`.

    With ``"same"`` padding each mean is over the real inputs in the window only.

    Input shape: ``(batch, height, width, channels)``.
    Output shape: ``(batch, new_height, new_width, channels)``.
    """

    rank = 2


class AveragePooling3D(_AveragePooling):
    """Mean over 3D windows; arguments as :class:`MaxPooling2D`.

    Input shape: ``(batch, depth, height, width, channels)``.
    Output shape: ``(batch, new_depth, new_height, new_width, channels)``.
    """

    rank = 3


class _GlobalPooling(Layer):
    """Reduction over all spatial axes (not a layer by itself)."""

    data_format: str | None = None
    keepdims: bool = False

    rank = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_data_format(self, self.data_format)

    def init(self, rng, x):
        check_rank(self, tuple(x.shape), self.rank)
        return {}, {}

    def apply(self, params, state, x, *, rng=None, training=False):
        check_rank(self, tuple(x.shape), self.rank)
        axes = tuple(range(1, self.rank + 1))
        return self.reduce(_as_float(self, x), axis=axes, keepdims=self.keepdims), state


class _GlobalAverage(_GlobalPooling):
    reduce = staticmethod(jnp.mean)


class _GlobalMax(_GlobalPooling):
    reduce = staticmethod(jnp.max)


class GlobalAveragePooling1D(_GlobalAverage):
    """Mean over the steps axis.

    Input shape: ``(batch, steps, channels)``. Output shape: ``(batch, channels)``, or
    ``(batch, 1, channels)`` with ``keepdims=True``.
    """

    rank = 1


class GlobalAveragePooling2D(_GlobalAverage):
    """Mean over height and width.

    Input shape: ``(batch, height, width, channels)``. Output shape: ``(batch, channels)``,
    or ``(batch, 1, 1, channels)`` with ``keepdims=True``.
    """

    rank = 2


class GlobalAveragePooling3D(_GlobalAverage):
    """Mean over depth, height and width.

    Input shape: ``(batch, depth, height, width, channels)``. Output shape:
    ``(batch, channels)``, or ``(batch, 1, 1, 1, channels)`` with ``keepdims=True``.
    """

    rank = 3


class GlobalMaxPooling1D(_GlobalMax):
    """Max over the steps axis.

    Input shape: ``(batch, steps, channels)``. Output shape: ``(batch, channels)``, or
    ``(batch, 1, channels)`` with ``keepdims=True``.
    """

    rank = 1


class GlobalMaxPooling2D(_GlobalMax):
    """Max over height and width.

    Input shape: ``(batch, height, width, channels)``. Output shape: ``(batch, channels)``,
    or ``(batch, 1, 1, channels)`` with ``keepdims=True``.
    """

    rank = 2


class GlobalMaxPooling3D(_GlobalMax):
    """Max over depth, height and width.

    Input shape: ``(batch, depth, height, width, channels)``. Output shape:
    ``(batch, channels)``, or ``(batch, 1, 1, 1, channels)`` with ``keepdims=True``.
    """

    rank = 3


# Keras's short names.
MaxPool1D = MaxPooling1D
MaxPool2D = MaxPooling2D
MaxPool3D = MaxPooling3D
AvgPool1D = AveragePooling1D
AvgPool2D = AveragePooling2D
AvgPool3D = AveragePooling3D
GlobalAvgPool1D = GlobalAveragePooling1D
GlobalAvgPool2D = GlobalAveragePooling2D
GlobalAvgPool3D = GlobalAveragePooling3D
GlobalMaxPool1D = GlobalMaxPooling1D
GlobalMaxPool2D = GlobalMaxPooling2D
GlobalMaxPool3D = GlobalMaxPooling3D
