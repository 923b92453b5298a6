"""Spatial reshaping layers, channels-last: UpSamplingND, ZeroPaddingND, CroppingND.

One N-d implementation per family; the 1D/2D/3D classes fix ``rank``. Arguments, defaults
and outputs follow Keras 3:

* ``UpSamplingND(size)`` repeats every row (and column, ...) ``size`` times;
  ``UpSampling2D(interpolation=...)`` resizes with ``jax.image.resize`` instead, as Keras's
  JAX backend does.
* ``ZeroPaddingND(padding)`` adds zeros at both ends of each spatial axis.
* ``CroppingND(cropping)`` removes entries at both ends of each spatial axis.

``padding`` and ``cropping`` take an int (the same on both ends of every axis), one int per
axis (symmetric), or one ``(before, after)`` pair per axis; the 1D layers take an int or a
pair. The layers hold no weights and keep the input's dtype.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from kerax import errors
from kerax.core.layer import Layer
from kerax.layers._spatial import _is_int, check_data_format, check_rank, spatial_tuple

INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos3", "lanczos5")


def _pairs(layer: Layer, field: str, value: Any, rank: int) -> tuple:
    """An int, ``rank`` ints or ``rank`` pairs as ``rank`` pairs of non-negative ints; for
    ``rank == 1`` an int or one pair (Keras's 1D form)."""

    def pair(v: Any) -> tuple | None:
        if _is_int(v):
            return (int(v), int(v))
        if isinstance(v, (tuple, list)) and len(v) == 2 and all(_is_int(i) for i in v):
            return (int(v[0]), int(v[1]))
        return None

    if rank == 1:
        pairs = (pair(value),)
    elif _is_int(value):
        pairs = (pair(value),) * rank
    elif isinstance(value, (tuple, list)) and len(value) == rank:
        pairs = tuple(pair(v) for v in value)
    else:
        pairs = (None,)
    if any(p is None or min(p) < 0 for p in pairs):
        form = ("an int or a pair (before, after)" if rank == 1 else
                f"an int, a tuple of {rank} ints, or a tuple of {rank} pairs (before, after)")
        raise layer._error(
            errors.ConfigError,
            f"{field} must be {form} of non-negative integers; received {field}={value!r}",
        )
    return pairs


class _SpatialBase(Layer):
    """Rank checks shared by the spatial reshaping layers (not a layer)."""

    rank = 0

    def init(self, rng, x):
        self._output_spatial(tuple(x.shape))
        return {}, {}

    def _output_spatial(self, shape: tuple) -> tuple:
        check_rank(self, shape, self.rank)
        return tuple(shape[1:-1])


# -- UpSampling --------------------------------------------------------------------------------


class _UpSampling(_SpatialBase):
    """N-d upsampling; see :class:`UpSampling2D`."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._set("size", spatial_tuple(self, "size", self.size, self.rank))
        check_data_format(self, getattr(self, "data_format", None))

    def apply(self, params, state, x, *, rng=None, training=False):
        spatial = self._output_spatial(tuple(x.shape))
        method = getattr(self, "interpolation", "nearest")
        if method == "nearest":
            for axis, s in enumerate(self.size, start=1):
                x = jnp.repeat(x, s, axis=axis)
            return x, state
        out = (x.shape[0], *(n * s for n, s in zip(spatial, self.size)), x.shape[-1])
        return jax.image.resize(x, out, method=method, antialias=False), state


class UpSampling1D(_UpSampling):
    """Repeats each step of a sequence ``size`` times.

    Args:
      size: the upsampling factor, a positive int (default 2).

    Input shape: ``(batch, steps, channels)``.
    Output shape: ``(batch, steps * size, channels)``.
    """

    rank = 1

    size: Any = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        self._set("size", self.size[0])

    def apply(self, params, state, x, *, rng=None, training=False):
        self._output_spatial(tuple(x.shape))
        return jnp.repeat(x, self.size, axis=1), state


class UpSampling2D(_UpSampling):
    """Upsamples images by ``size``: repeats rows and columns, or resizes.

    Args:
      size: factors for rows and columns, an int or a pair (default ``(2, 2)``).
      data_format: ``None`` or ``"channels_last"`` only.
      interpolation: ``"nearest"`` (repeat; default), ``"bilinear"``, ``"bicubic"``,
        ``"lanczos3"`` or ``"lanczos5"`` (``jax.image.resize``, as Keras's JAX backend).

    Input shape: ``(batch, rows, cols, channels)``.
    Output shape: ``(batch, rows * size[0], cols * size[1], channels)``.
    """

    rank = 2

    size: Any = (2, 2)
    data_format: str | None = None
    interpolation: str = "nearest"

    def __post_init__(self) -> None:
        super().__post_init__()
        name = self.interpolation.lower() if isinstance(self.interpolation, str) else None
        if name not in INTERPOLATIONS:
            raise self._error(
                errors.ConfigError,
                f"interpolation must be one of {', '.join(map(repr, INTERPOLATIONS))}; "
                f"received interpolation={self.interpolation!r}",
            )
        self._set("interpolation", name)


class UpSampling3D(_UpSampling):
    """Repeats each voxel ``size`` times along depth, height and width.

    Args:
      size: factors per spatial axis, an int or three (default ``(2, 2, 2)``).
      data_format: ``None`` or ``"channels_last"`` only.

    Input shape: ``(batch, dim1, dim2, dim3, channels)``.
    Output shape: ``(batch, dim1 * size[0], dim2 * size[1], dim3 * size[2], channels)``.
    """

    rank = 3

    size: Any = (2, 2, 2)
    data_format: str | None = None


# -- ZeroPadding -------------------------------------------------------------------------------


class _ZeroPadding(_SpatialBase):
    """N-d zero padding; see :class:`ZeroPadding2D`."""

    def __post_init__(self) -> None:
        super().__post_init__()
        pairs = _pairs(self, "padding", self.padding, self.rank)
        self._set("padding", pairs[0] if self.rank == 1 else pairs)
        check_data_format(self, self.data_format)

    def _per_axis(self) -> tuple:
        return (self.padding,) if self.rank == 1 else self.padding

    def apply(self, params, state, x, *, rng=None, training=False):
        self._output_spatial(tuple(x.shape))
        return jnp.pad(x, ((0, 0), *self._per_axis(), (0, 0))), state


class ZeroPadding1D(_ZeroPadding):
    """Adds zeros at the start and end of a sequence.

    Args:
      padding: an int (both ends) or a pair ``(before, after)`` (default 1).
      data_format: ``None`` or ``"channels_last"`` only.

    Input shape: ``(batch, steps, channels)``.
    Output shape: ``(batch, before + steps + after, channels)``.
    """

    rank = 1

    padding: Any = 1
    data_format: str | None = None


class ZeroPadding2D(_ZeroPadding):
    """Adds rows and columns of zeros around images.

    Args:
      padding: an int, a pair ``(rows, cols)`` (symmetric), or
        ``((top, bottom), (left, right))`` (default ``(1, 1)``).
      data_format: ``None`` or ``"channels_last"`` only.

    Input shape: ``(batch, rows, cols, channels)``.
    Output shape: ``(batch, top + rows + bottom, left + cols + right, channels)``.
    """

    rank = 2

    padding: Any = (1, 1)
    data_format: str | None = None


class ZeroPadding3D(_ZeroPadding):
    """Adds zeros around volumes.

    Args:
      padding: an int, three ints (symmetric), or three pairs ``(before, after)``
        (default ``((1, 1), (1, 1), (1, 1))``).
      data_format: ``None`` or ``"channels_last"`` only.

    Input shape: ``(batch, dim1, dim2, dim3, channels)``.
    Output shape: ``(batch, padded_dim1, padded_dim2, padded_dim3, channels)``.
    """

    rank = 3

    padding: Any = ((1, 1), (1, 1), (1, 1))
    data_format: str | None = None


# -- Cropping ----------------------------------------------------------------------------------


class _Cropping(_SpatialBase):
    """N-d cropping; see :class:`Cropping2D`."""

    def __post_init__(self) -> None:
        super().__post_init__()
        pairs = _pairs(self, "cropping", self.cropping, self.rank)
        self._set("cropping", pairs[0] if self.rank == 1 else pairs)
        check_data_format(self, getattr(self, "data_format", None))

    def _per_axis(self) -> tuple:
        return (self.cropping,) if self.rank == 1 else self.cropping

    def _output_spatial(self, shape: tuple) -> tuple:
        spatial = super()._output_spatial(shape)
        if any(n - a - b <= 0 for n, (a, b) in zip(spatial, self._per_axis())):
            raise self._error(
                errors.ShapeError,
                f"cropping {self.cropping} must leave at least one entry on every spatial "
                f"axis; received input of shape {errors.fmt_shape(shape)} (spatial shape "
                f"{spatial}). Crop less or pass a larger input.",
            )
        return spatial

    def apply(self, params, state, x, *, rng=None, training=False):
        spatial = self._output_spatial(tuple(x.shape))
        index = tuple(slice(a, n - b) for n, (a, b) in zip(spatial, self._per_axis()))
        return x[(slice(None), *index, slice(None))], state


class Cropping1D(_Cropping):
    """Removes steps at the start and end of a sequence.

    Args:
      cropping: an int (both ends) or a pair ``(before, after)`` (default ``(1, 1)``).

    Input shape: ``(batch, steps, channels)``.
    Output shape: ``(batch, steps - before - after, channels)``.
    """

    rank = 1

    cropping: Any = (1, 1)


class Cropping2D(_Cropping):
    """Removes rows and columns at the borders of images.

    Args:
      cropping: an int, a pair ``(rows, cols)`` (symmetric), or
        ``((top, bottom), (left, right))`` (default ``((0, 0), (0, 0))``).
      data_format: ``None`` or ``"channels_last"`` only.

    Input shape: ``(batch, rows, cols, channels)``.
    Output shape: ``(batch, rows - top - bottom, cols - left - right, channels)``.
    """

    rank = 2

    cropping: Any = ((0, 0), (0, 0))
    data_format: str | None = None


class Cropping3D(_Cropping):
    """Removes entries at the borders of volumes.

    Args:
      cropping: an int, three ints (symmetric), or three pairs ``(before, after)``
        (default ``((1, 1), (1, 1), (1, 1))``).
      data_format: ``None`` or ``"channels_last"`` only.

    Input shape: ``(batch, dim1, dim2, dim3, channels)``.
    Output shape: ``(batch, cropped_dim1, cropped_dim2, cropped_dim3, channels)``.
    """

    rank = 3

    cropping: Any = ((1, 1), (1, 1), (1, 1))
    data_format: str | None = None
