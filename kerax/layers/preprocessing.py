"""Preprocessing layers: Rescaling, CenterCrop, Resizing, Normalization (Keras 3 semantics).

They hold no trainable weights. Inputs are cast to the layer's dtype (float32 unless
``dtype=`` says otherwise), as Keras casts them to its compute dtype; ``Resizing`` keeps
integer images integer (rounded and clipped), as Keras does. The image layers are
channels-last and take a batch ``(batch, height, width, channels)`` or a single image
``(height, width, channels)``, as in Keras.

``Normalization``'s statistics are config fields (JSON lists), not weights: a frozen layer
cannot change, so ``adapt`` returns a new layer::

    norm = layers.Normalization()
    norm = norm.adapt(x_train)        # a new layer with mean and variance set
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from kerax import errors
from kerax.core.layer import Layer
from kerax.layers._spatial import check_data_format
from kerax.layers._util import cast_input, positive_int

RESIZE_INTERPOLATIONS = ("bilinear", "nearest", "bicubic", "lanczos3", "lanczos5")
EPSILON = 1e-7  # keras.backend.epsilon(): the smallest standard deviation divided by


def _frozen(value: Any) -> Any:
    """A number or a nested tuple of floats (config fields stay immutable and JSON-able)."""
    arr = np.asarray(value, dtype=np.float64)
    return float(arr) if arr.ndim == 0 else _tuples(arr.tolist())


def _tuples(v: Any) -> Any:
    return tuple(_tuples(i) for i in v) if isinstance(v, list) else v


def _numeric(layer: Layer, field: str, value: Any) -> Any:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        arr = None
    if arr is None or not np.all(np.isfinite(arr)) or isinstance(value, (bool, str)):
        raise layer._error(
            errors.ConfigError,
            f"{field} must be a finite number or a (nested) list of them; received {field}={value!r}",
        )
    return _frozen(arr)


# -- Rescaling ---------------------------------------------------------------------------------


class Rescaling(Layer):
    """Rescales inputs: ``x * scale + offset``.

    ``scale`` and ``offset`` are numbers or arrays that broadcast against the input
    (e.g. one value per channel). Example: ``layers.Rescaling(1 / 255)`` maps ``[0, 255]``
    to ``[0, 1]``; ``layers.Rescaling(1 / 127.5, offset=-1)`` to ``[-1, 1]``.

    Input shape: any. Output shape: the same (broadcast with ``scale`` and ``offset``).
    """

    propagates_mask = True

    scale: Any
    offset: Any = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._set("scale", _numeric(self, "scale", self.scale))
        self._set("offset", _numeric(self, "offset", self.offset))

    def init(self, rng, x):
        return {}, {}

    def apply(self, params, state, x, *, rng=None, training=False):
        dtype = jnp.dtype(self.param_dtype)
        x = cast_input(x, dtype)
        return x * jnp.asarray(self.scale, dtype) + jnp.asarray(self.offset, dtype), state


# -- image layers ------------------------------------------------------------------------------


def _image_hw(layer: Layer, shape: tuple) -> tuple[int, int]:
    if len(shape) not in (3, 4):
        raise layer._error(
            errors.ShapeError,
            "expected images of rank 4 (batch, height, width, channels) or one image of rank 3 "
            f"(height, width, channels); received input of shape {errors.fmt_shape(shape)}",
        )
    return int(shape[-3]), int(shape[-2])


def _crop_hw(x: Any, top: int, left: int, height: int, width: int) -> Any:
    return x[..., top:top + height, left:left + width, :]


def _aspect_crop(h: int, w: int, th: int, tw: int) -> tuple[int, int, int, int]:
    """Keras's ``smart_resize`` box: the largest centred crop with the target's aspect ratio."""
    ch = max(min(h, int(float(w * th) / tw)), 1)
    cw = max(min(w, int(float(h * tw) / th)), 1)
    return int(float(h - ch) / 2), int(float(w - cw) / 2), ch, cw


def _resize(x: Any, height: int, width: int, method: str, antialias: bool = False) -> Any:
    return jax.image.resize(x, (*x.shape[:-3], height, width, x.shape[-1]), method=method,
                            antialias=antialias)


def _check_size(layer: Layer) -> None:
    positive_int(layer, "height", layer.height)
    positive_int(layer, "width", layer.width)
    check_data_format(layer, layer.data_format)


class CenterCrop(Layer):
    """Crops the centre ``height x width`` of images.

    An image smaller than the crop on either axis is instead cropped to the target's aspect
    ratio and resized (bilinear) to ``(height, width)``, as Keras 3 does. The crop starts
    at ``(size - target) // 2``.

    Input shape: ``(batch, h, w, channels)`` or ``(h, w, channels)``.
    Output shape: ``(batch, height, width, channels)`` or ``(height, width, channels)``.
    """

    height: int
    width: int
    data_format: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_size(self)

    def init(self, rng, x):
        _image_hw(self, tuple(x.shape))
        return {}, {}

    def apply(self, params, state, x, *, rng=None, training=False):
        h, w = _image_hw(self, tuple(x.shape))
        x = cast_input(x, jnp.dtype(self.compute_dtype))
        if h >= self.height and w >= self.width:
            y = _crop_hw(x, (h - self.height) // 2, (w - self.width) // 2, self.height, self.width)
        else:
            y = _resize(_crop_hw(x, *_aspect_crop(h, w, self.height, self.width)),
                        self.height, self.width, "bilinear")
        return y, state


class Resizing(Layer):
    """Resizes images to ``(height, width)`` with ``jax.image.resize`` (as Keras's JAX backend).

    Args:
      height, width: the output size.
      interpolation: ``"bilinear"`` (default), ``"nearest"``, ``"bicubic"``, ``"lanczos3"``,
        ``"lanczos5"``.
      crop_to_aspect_ratio: first crop the largest centred box with the target's aspect
        ratio, so the image is not distorted.
      pad_to_aspect_ratio: first pad (with ``fill_value``) to the target's aspect ratio.
      fill_mode: ``"constant"`` only (as Keras's JAX backend).
      fill_value: the padding value for ``pad_to_aspect_ratio``.
      antialias: filter when downsampling (``jax.image.resize``'s ``antialias``).
      data_format: ``None`` or ``"channels_last"`` only.

    Integer images are resized in floating point, rounded and clipped to their dtype.

    Input shape: ``(batch, h, w, channels)`` or ``(h, w, channels)``.
    Output shape: ``(batch, height, width, channels)`` or ``(height, width, channels)``.
    """

    height: int
    width: int
    interpolation: str = "bilinear"
    crop_to_aspect_ratio: bool = False
    pad_to_aspect_ratio: bool = False
    fill_mode: str = "constant"
    fill_value: float = 0.0
    antialias: bool = False
    data_format: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_size(self)
        if self.interpolation not in RESIZE_INTERPOLATIONS:
            raise self._error(
                errors.ConfigError,
                f"interpolation must be one of {', '.join(map(repr, RESIZE_INTERPOLATIONS))}; "
                f"received interpolation={self.interpolation!r}",
            )
        if self.fill_mode != "constant":
            raise self._error(
                errors.ConfigError, f"fill_mode must be 'constant'; received fill_mode={self.fill_mode!r}"
            )
        if self.crop_to_aspect_ratio and self.pad_to_aspect_ratio:
            raise self._error(
                errors.ConfigError,
                "only one of crop_to_aspect_ratio and pad_to_aspect_ratio can be True; "
                "received both True",
            )
        if isinstance(self.fill_value, bool) or not isinstance(self.fill_value, numbers.Real):
            raise self._error(
                errors.ConfigError, f"fill_value must be a number; received fill_value={self.fill_value!r}"
            )

    def init(self, rng, x):
        _image_hw(self, tuple(x.shape))
        return {}, {}

    def apply(self, params, state, x, *, rng=None, training=False):
        h, w = _image_hw(self, tuple(x.shape))
        in_dtype = jnp.dtype(x.dtype)
        integer = jnp.issubdtype(in_dtype, jnp.integer) or in_dtype == jnp.bool_
        if not integer:
            x = cast_input(x, jnp.dtype(self.compute_dtype))
        th, tw = self.height, self.width
        if self.crop_to_aspect_ratio:
            x = _crop_hw(x, *_aspect_crop(h, w, th, tw))
        elif self.pad_to_aspect_ratio:
            ph = int(float(max(h, int(float(w * th) / tw)) - h) / 2)
            pw = int(float(max(w, int(float(h * tw) / th)) - w) / 2)
            pads = [(0, 0)] * x.ndim
            if ph > 0:
                pads[-3] = (ph, ph)
            elif pw > 0:
                pads[-2] = (pw, pw)
            x = jnp.pad(x, pads, constant_values=jnp.asarray(self.fill_value).astype(x.dtype))
        y = _resize(x, th, tw, self.interpolation, self.antialias)
        if integer and y.dtype != in_dtype:
            info = jnp.iinfo(in_dtype)
            y = jnp.clip(jnp.round(y), info.min, info.max).astype(in_dtype)
        return y, state


# -- Normalization -----------------------------------------------------------------------------


class Normalization(Layer):
    """Standardizes features: ``(x - mean) / max(sqrt(variance), 1e-7)``.

    Args:
      axis: the axis or axes that keep their own statistics (default -1: one mean and
        variance per feature); the others are reduced over. ``None``: one scalar mean.
      mean, variance: the statistics, numbers or lists shaped like the kept axes (they
        broadcast from the right, as in Keras); both or neither. Without them, set them
        from data with ``norm = norm.adapt(data)``.
      invert: apply the inverse, ``mean + x * sqrt(variance)``.

    Input shape: any. Output shape: the same.

    Example::

        norm = layers.Normalization().adapt(x_train)   # adapt returns a new layer
        model = kx.Sequential([norm, layers.Dense(1)])
    """

    propagates_mask = True

    axis: Any = -1
    mean: Any = None
    variance: Any = None
    invert: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        axis = () if self.axis is None else (self.axis,) if isinstance(self.axis, int) else self.axis
        if not (isinstance(axis, (tuple, list)) and all(
                isinstance(a, int) and not isinstance(a, bool) for a in axis)):
            raise self._error(
                errors.ConfigError, f"axis must be an int, a tuple of ints or None; received axis={self.axis!r}"
            )
        self._set("axis", tuple(axis))
        if (self.mean is None) != (self.variance is None):
            raise self._error(
                errors.ConfigError,
                "pass both mean and variance, or neither (then call norm = norm.adapt(data)); "
                f"received mean={self.mean!r}, variance={self.variance!r}",
            )
        if self.mean is None:
            return
        mean, var = _numeric(self, "mean", self.mean), _numeric(self, "variance", self.variance)
        if np.shape(mean) != np.shape(var):
            raise self._error(
                errors.ConfigError,
                f"mean and variance must have the same shape; received mean of shape "
                f"{np.shape(mean)} and variance of shape {np.shape(var)}",
            )
        if np.ndim(mean) > len(self.axis):
            raise self._error(
                errors.ConfigError,
                f"mean must have rank <= the number of axes {len(self.axis)} (axis={self.axis}); "
                f"received mean of shape {np.shape(mean)}",
            )
        if np.any(np.asarray(var) < 0):
            raise self._error(errors.ConfigError, f"variance must be >= 0; received variance={self.variance!r}")
        self._set("mean", mean)
        self._set("variance", var)

    # -- statistics ------------------------------------------------------------------------

    def _keep(self, shape: tuple) -> tuple:
        ndim = len(shape)
        if any(a < -ndim or a >= ndim for a in self.axis):
            raise self._error(
                errors.ShapeError,
                f"axis {self.axis} is out of range for input of shape {errors.fmt_shape(shape)} "
                f"(rank {ndim})",
            )
        return tuple(sorted({a % ndim for a in self.axis}))

    def _stats(self, shape: tuple, dtype: Any) -> tuple[Any, Any]:
        """Mean and variance broadcast to the input's rank (Keras's alignment)."""
        keep = self._keep(shape)
        mean, var = np.asarray(self.mean, np.float64), np.asarray(self.variance, np.float64)
        expanded = [1] * len(shape)
        for i in range(1, mean.ndim + 1):
            expanded[keep[-i]] = mean.shape[-i]
        target = [shape[d] if d in keep else 1 for d in range(len(shape))]
        if any(e not in (1, t) for e, t in zip(expanded, target)):
            raise self._error(
                errors.ShapeError,
                f"mean and variance of shape {mean.shape} do not match the input's axes {keep} "
                f"(sizes {tuple(shape[d] for d in keep)}); received input of shape "
                f"{errors.fmt_shape(shape)}. Adapt the layer to data of this shape.",
            )
        return (jnp.asarray(np.broadcast_to(mean.reshape(expanded), target), dtype),
                jnp.asarray(np.broadcast_to(var.reshape(expanded), target), dtype))

    def init(self, rng, x):
        self._keep(tuple(x.shape))
        return {}, {}

    def apply(self, params, state, x, *, rng=None, training=False):
        if self.mean is None:
            raise self._error(
                errors.NotBuiltError,
                "has no mean and variance yet: call norm = norm.adapt(data) first (adapt returns "
                "a new layer; layers are immutable), or pass mean= and variance=",
            )
        dtype = jnp.dtype(self.param_dtype)
        mean, var = self._stats(tuple(x.shape), dtype)
        x = cast_input(x, dtype)
        std = jnp.maximum(jnp.sqrt(var), jnp.asarray(EPSILON, dtype))
        return (mean + x * std if self.invert else (x - mean) / std), state

    def adapt(self, data: Any) -> "Normalization":
        """A new layer with ``mean`` and ``variance`` computed from ``data``.

        ``data`` is one array (NumPy, JAX) or an iterable of batches (arrays, or ``(x, y)``
        tuples whose first element is used). Statistics are per position of the kept axes,
        over all other axes, with the population variance, as Keras computes them.
        Use it as ``norm = norm.adapt(data)``.
        """
        if hasattr(data, "shape") and hasattr(data, "dtype"):
            batches: Iterable[Any] = [data]
        elif hasattr(data, "__iter__") and not isinstance(data, (str, bytes, dict)):
            batches = data
        else:
            raise self._error(
                errors.DataError,
                f"adapt expects an array or an iterable of batches; received {type(data).__name__}",
            )
        count, mean, m2, first = 0, None, None, None
        for batch in batches:
            arr = self._as_batch(batch[0] if isinstance(batch, tuple) else batch)
            keep = self._keep(arr.shape)
            kept_shape = tuple(arr.shape[d] for d in keep)
            if first is None:
                first = arr.shape
            elif len(arr.shape) != len(first) or kept_shape != tuple(first[d] for d in keep):
                raise self._error(
                    errors.ShapeError,
                    f"adapt received batches of incompatible shapes {errors.fmt_shape(first)} and "
                    f"{errors.fmt_shape(arr.shape)} (axes {keep} must agree)",
                )
            reduce = tuple(d for d in range(arr.ndim) if d not in keep)
            n = int(np.prod([arr.shape[d] for d in reduce], dtype=np.int64))
            if n == 0:
                continue
            b_mean, b_var = arr.mean(axis=reduce), arr.var(axis=reduce)
            if mean is None:
                count, mean, m2 = n, b_mean, b_var * n
            else:  # Chan et al.'s pairwise update (exact; Keras's formula, in float64)
                total = count + n
                delta = b_mean - mean
                mean = mean + delta * (n / total)
                m2 = m2 + b_var * n + delta ** 2 * (count * n / total)
                count = total
        if mean is None:
            raise self._error(errors.DataError, "adapt received no data (an empty array or iterable)")
        return dataclasses.replace(self, mean=_frozen(mean), variance=_frozen(m2 / count))

    def _as_batch(self, batch: Any) -> np.ndarray:
        arr = np.asarray(batch)
        if arr.dtype.kind not in "biuf":
            raise self._error(
                errors.DTypeError, f"adapt expects numeric data; received dtype {arr.dtype}"
            )
        return arr.astype(np.float64)
