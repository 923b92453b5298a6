"""How convolution and pooling are expressed in XLA: the one place that picks the lowering.

The generic lowerings (``lax.conv_general_dilated``, ``lax.reduce_window``) are what GPUs and
TPUs run best. XLA:CPU (measured with jax 0.10.2) is slow on some of them, so on CPU this
module expresses those through other ops with the same numbers:

* **padded convolution**: XLA:CPU runs a 2-D convolution with no padding at all
  (``"valid"``, unit strides) 2-5x slower, forward and backward, than the same convolution
  with some padding. Padding one more zero at the end of the last spatial axis and
  cropping the extra output column computes the same sums through the fast path (the
  same bits in most cases measured; float rounding at worst).
* **im2col convolution** (``groups == 1``): gather the ``prod(kernel_size)`` shifted
  (strided, dilated) views of the padded input into one patch tensor
  ``(batch, *out, taps * in)`` and multiply it by the kernel read as ``(taps * in, out)``.
  A custom JVP keeps the patches for the kernel gradient and takes the input gradient
  from the generic transposed convolution (so that gradient is the generic one exactly).
  For a 1x1 kernel this is a single matrix product, the fastest form on CPU.
* **reshape pooling** (``pool_size == strides``): the windows then tile the input, so a
  reshape to ``(batch, o1, k1, o2, k2, ..., channels)`` and a max (or sum) over the ``k``
  axes is the pooling. The max's gradient is a mask instead of XLA's select-and-scatter;
  ties go to the first maximum of a window in row-major order, as select-and-scatter does.
  ``"valid"`` crops the tail no window covers; ``"same"`` pads once with ``-inf`` (max)
  or zeros (sum, divided by the number of real inputs).

The choice is made when the function is traced, from ``jax.default_backend()`` and the
configuration, and can be forced with the ``lowering=`` argument or, for a whole program,
with environment variables read at trace time (a function already compiled by ``jax.jit``
keeps the lowering it was traced with):

* ``KERAX_CONV_LOWERING``: ``auto`` (default), ``generic``, ``padded`` or ``im2col``.
* ``KERAX_POOL_LOWERING``: ``auto`` (default), ``generic`` or ``reshape``.

``auto`` on CPU, for convolutions with ``groups == 1``, unit strides and no padding: a 1x1
kernel -> ``im2col`` (one matrix product); a 2-D kernel over few channels (patches of at
most ``IM2COL_MAX_DEPTH`` values, e.g. 3x3 over 1-3 channels) -> ``im2col``; other 2-D
kernels -> ``padded``; anything else (and every other backend) -> ``generic``. For max
pooling with ``pool_size == strides`` on CPU -> ``reshape``; average pooling stays
``generic`` (XLA:CPU's is already fast). A forced
lowering that cannot express a configuration (im2col of a grouped convolution, reshape
pooling of overlapping windows) falls back to the generic one.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
from typing import Any, NamedTuple, Sequence

import numpy as np

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from kerax import errors

CONV_ENV = "KERAX_CONV_LOWERING"
POOL_ENV = "KERAX_POOL_LOWERING"
CONV_LOWERINGS = ("auto", "generic", "padded", "im2col")
POOL_LOWERINGS = ("auto", "generic", "reshape")

# "auto" gathers patches only when each has at most this many values (taps * in channels).
IM2COL_MAX_DEPTH = 32

Padding = Any  # "VALID", "SAME" or one (low, high) pair per spatial axis


def _requested(lowering: str | None, env: str, allowed: tuple) -> str:
    """The lowering asked for: the argument, else the environment variable, else "auto"."""
    source = "lowering" if lowering is not None else env
    value = lowering if lowering is not None else os.environ.get(env, "auto").strip().lower() or "auto"
    if value not in allowed:
        raise errors.ConfigError(
            f"{source} must be one of {', '.join(map(repr, allowed))}; received {source}={value!r}"
        )
    return value


def _pads(spatial: Sequence[int], window: Sequence[int], strides: Sequence[int],
          padding: Padding) -> list[tuple[int, int]]:
    if isinstance(padding, str):
        return [tuple(p) for p in lax.padtype_to_pads(spatial, window, strides, padding.upper())]
    return [(int(lo), int(hi)) for lo, hi in padding]


# -- convolution ------------------------------------------------------------------------


class _ConvSpec(NamedTuple):
    """The static part of an im2col convolution (hashable, for ``nondiff_argnums``)."""

    strides: tuple
    pads: tuple
    dilation: tuple


def conv_lowering(x_shape: Sequence[int], kernel_shape: Sequence[int], strides: Sequence[int],
                  padding: Padding, dilation: Sequence[int] | None = None, groups: int = 1,
                  lowering: str | None = None) -> str:
    """Which lowering :func:`conv` uses for these shapes: ``"generic"``, ``"padded"`` or ``"im2col"``.

    Raises:
      ConfigError: ``lowering`` or ``$KERAX_CONV_LOWERING`` is not a known name.
    """
    asked = _requested(lowering, CONV_ENV, CONV_LOWERINGS)
    rank = len(kernel_shape) - 2
    dilation = tuple(dilation or (1,) * rank)
    window = [(k - 1) * d + 1 for k, d in zip(kernel_shape[:rank], dilation)]
    pads = _pads(x_shape[1:-1], window, strides, padding)
    out = [(n + lo + hi - w) // s + 1
           for n, (lo, hi), w, s in zip(x_shape[1:-1], pads, window, strides)]
    if asked == "generic" or min(out) < 1 or min(min(p) for p in pads) < 0:
        return "generic"
    unpadded = not any(lo or hi for lo, hi in pads)
    if asked == "padded":
        # only for what it is made for: a convolution with no padding and a window > 1
        return "padded" if unpadded and max(window) > 1 else "generic"
    if asked == "im2col":
        return "im2col" if groups == 1 else "generic"
    # "auto": only where XLA:CPU's convolution takes its slow path (no padding at all, unit
    # strides); elsewhere, and on other backends, the generic convolution is the fast one.
    if jax.default_backend() != "cpu" or groups != 1 or set(strides) != {1} or not unpadded:
        return "generic"
    if max(window) == 1:
        return "im2col"  # a 1x1 kernel: the convolution is one matrix product
    if rank != 2:
        return "generic"  # 1-D and 3-D: no lowering measured faster
    # Shallow patches (a first layer on 1-3 channels) are cheap to gather; deeper ones cost
    # more memory traffic than the padded convolution.
    return "im2col" if math.prod(kernel_shape[:-1]) <= IM2COL_MAX_DEPTH else "padded"


def conv(x: jax.Array, kernel: jax.Array, strides: Sequence[int], padding: Padding,
         dilation: Sequence[int] | None = None, groups: int = 1, *,
         lowering: str | None = None) -> jax.Array:
    """Channels-last N-d convolution (cross-correlation), lowered for the backend.

    Args:
      x: ``(batch, *spatial, in)``.
      kernel: ``(*kernel_size, in // groups, out)``.
      strides, dilation: one int per spatial axis (``dilation`` spaces the kernel taps).
      padding: ``"VALID"``, ``"SAME"`` or one ``(low, high)`` pair per spatial axis.
      groups: ``feature_group_count``.
      lowering: ``None`` (``$KERAX_CONV_LOWERING``, default ``"auto"``), ``"auto"``,
        ``"generic"``, ``"padded"`` or ``"im2col"``.

    Returns:
      ``(batch, *out_spatial, out)``, as ``lax.conv_general_dilated`` computes it.

    Example: ``conv(x, k, (1, 1), "SAME")`` for ``x (8, 28, 28, 3)``, ``k (3, 3, 3, 16)``
    gives ``(8, 28, 28, 16)``.
    """
    rank = kernel.ndim - 2
    dilation = tuple(dilation or (1,) * rank)
    strides = tuple(strides)
    how = conv_lowering(x.shape, kernel.shape, strides, padding, dilation, groups, lowering)
    if how == "generic":
        return _generic_conv(x, kernel, strides, padding, dilation, groups)
    window = [(k - 1) * d + 1 for k, d in zip(kernel.shape[:rank], dilation)]
    pads = tuple(_pads(x.shape[1:-1], window, strides, padding))
    if how == "padded":
        return _padded_conv(x, kernel, strides, pads, dilation, groups)
    spec = _ConvSpec(strides, pads, dilation)
    if math.prod(kernel.shape[:-2]) == 1:
        # One tap: the patches are (a strided view of) the input itself; plain autodiff
        # of the product is already the fastest gradient.
        return _times(_patches(x, kernel.shape[:-2], spec), kernel)
    return _im2col(x, kernel, spec)


def _padded_conv(x, kernel, strides, pads, dilation, groups):
    """The unpadded generic convolution, with one zero appended to a spatial axis, cropped.

    The extra zero only adds output positions past the real ones, so the result and its
    gradients are the generic ones (up to float rounding); but XLA:CPU (jax 0.10) runs a
    convolution that has some padding through a much faster path than one with none. The
    axis is the last one whose (dilated) window is longer than 1.
    """
    rank = kernel.ndim - 2
    windows = [(k - 1) * d + 1 for k, d in zip(kernel.shape[:rank], dilation)]
    axis = max(i for i in range(rank) if windows[i] > 1)
    extra = [(lo, hi + (i == axis)) for i, (lo, hi) in enumerate(pads)]
    y = _generic_conv(x, kernel, strides, extra, dilation, groups)
    size = (x.shape[1 + axis] + sum(pads[axis]) - windows[axis]) // strides[axis] + 1
    return lax.slice_in_dim(y, 0, size, axis=1 + axis)


def _generic_conv(x, kernel, strides, padding, dilation, groups=1):
    spatial = "DHW"[-(kernel.ndim - 2):]
    padding = padding.upper() if isinstance(padding, str) else [tuple(p) for p in padding]
    return lax.conv_general_dilated(
        x, kernel, strides, padding, rhs_dilation=dilation,
        dimension_numbers=(f"N{spatial}C", f"{spatial}IO", f"N{spatial}C"),
        feature_group_count=groups,
    )


def _patches(x: jax.Array, kernel_size: tuple, spec: _ConvSpec) -> jax.Array:
    """``(batch, *out, taps * in)``: the padded input seen through each kernel tap, taps major."""
    if any(lo or hi for lo, hi in spec.pads):
        x = jnp.pad(x, [(0, 0), *spec.pads, (0, 0)])
    spatial = x.shape[1:-1]
    out = [(n - (k - 1) * d - 1) // s + 1
           for n, k, d, s in zip(spatial, kernel_size, spec.dilation, spec.strides)]
    views = []
    for tap in itertools.product(*map(range, kernel_size)):
        start = [t * d for t, d in zip(tap, spec.dilation)]
        stop = [b + (o - 1) * s + 1 for b, o, s in zip(start, out, spec.strides)]
        views.append(lax.slice(x, (0, *start, 0), (x.shape[0], *stop, x.shape[-1]),
                               (1, *spec.strides, 1)))
    return views[0] if len(views) == 1 else jnp.concatenate(views, axis=-1)


def _times(patches: jax.Array, kernel: jax.Array) -> jax.Array:
    """``patches (batch, *out, taps * in) @ kernel (*window, in, out)``, as one 2-D product."""
    # A 2-D matrix product runs faster on XLA:CPU than the same dot_general over 4-D operands.
    rows = patches.reshape(-1, patches.shape[-1])
    y = rows @ kernel.reshape(-1, kernel.shape[-1])
    return y.reshape(*patches.shape[:-1], kernel.shape[-1])


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _im2col(x: jax.Array, kernel: jax.Array, spec: _ConvSpec) -> jax.Array:
    return _times(_patches(x, kernel.shape[:-2], spec), kernel)


def _im2col_jvp(spec, primals, tangents):
    # Linear in each argument: d(x) goes through the generic convolution, whose transpose
    # XLA:CPU runs well (and which makes the input gradient the generic one exactly); the
    # kernel's term reuses the patches, so its transpose is the product patches^T @ g.
    x, kernel = primals
    dx, dkernel = tangents
    patches = _patches(x, kernel.shape[:-2], spec)
    y = _times(patches, kernel)
    terms = []
    if not isinstance(dx, SymbolicZero):
        terms.append(_generic_conv(dx, kernel, spec.strides, spec.pads, spec.dilation))
    if not isinstance(dkernel, SymbolicZero):
        terms.append(_times(patches, dkernel))
    return y, sum(terms[1:], terms[0]) if terms else jnp.zeros_like(y)


_im2col.defjvp(_im2col_jvp, symbolic_zeros=True)


# -- pooling ------------------------------------------------------------------------------


def pool_lowering(window: Sequence[int], strides: Sequence[int], lowering: str | None = None,
                  reduction: str = "max") -> str:
    """Which lowering :func:`max_pool` (``reduction="max"``) or :func:`avg_pool` (``"mean"``)
    uses: ``"generic"`` or ``"reshape"``.

    Raises:
      ConfigError: ``lowering`` or ``$KERAX_POOL_LOWERING`` is not a known name.
    """
    asked = _requested(lowering, POOL_ENV, POOL_LOWERINGS)
    if asked == "generic" or tuple(window) != tuple(strides):
        return "generic"
    if asked == "reshape" or (reduction == "max" and jax.default_backend() == "cpu"):
        return "reshape"
    return "generic"


def max_pool(x: jax.Array, window: Sequence[int], strides: Sequence[int], padding: str, *,
             lowering: str | None = None) -> jax.Array:
    """Channels-last max pooling: padded positions never win (they hold ``-inf``).

    Args:
      x: ``(batch, *spatial, channels)``, floating point.
      window, strides: one int per spatial axis.
      padding: ``"VALID"`` or ``"SAME"``.
      lowering: ``None`` (``$KERAX_POOL_LOWERING``, default ``"auto"``), ``"auto"``,
        ``"generic"`` or ``"reshape"``.

    Returns:
      ``(batch, *out_spatial, channels)``, as ``lax.reduce_window`` computes it.
    """
    window, strides = tuple(window), tuple(strides)
    if pool_lowering(window, strides, lowering) == "generic":
        return _reduce_window(x, -np.inf, lax.max, window, strides, padding)
    return _max_tiles(_tile(x, window, padding, -np.inf), window)


def avg_pool(x: jax.Array, window: Sequence[int], strides: Sequence[int], padding: str, *,
             lowering: str | None = None) -> jax.Array:
    """Channels-last average pooling over the real (unpadded) inputs of each window.

    Shapes and arguments as :func:`max_pool`.
    """
    window, strides = tuple(window), tuple(strides)
    counts = _counts(x.shape[1:-1], window, strides, padding).astype(x.dtype)
    if pool_lowering(window, strides, lowering, "mean") == "generic":
        total = _reduce_window(x, 0, lax.add, window, strides, padding)
    else:
        tiles = _tile(x, window, padding, 0)
        total = jnp.sum(tiles, axis=_window_axes(len(window)))
    return total / counts


def _reduce_window(x, init, op, window, strides, padding):
    # a concrete (NumPy) init value lets JAX pick reduce_window_max/sum, which have gradients
    return lax.reduce_window(x, np.array(init, x.dtype), op, (1, *window, 1), (1, *strides, 1),
                             padding.upper())


def _counts(spatial, window, strides, padding) -> np.ndarray:
    """``(1, *out, 1)``: how many real inputs each window holds (a trace-time constant)."""
    per_axis = []
    for n, (lo, hi), k, s in zip(spatial, _pads(spatial, window, strides, padding), window, strides):
        starts = np.arange((n + lo + hi - k) // s + 1) * s - lo
        per_axis.append(np.minimum(starts + k, n) - np.maximum(starts, 0))
    counts = functools.reduce(np.multiply.outer, per_axis)
    return np.asarray(counts).reshape(1, *np.shape(counts), 1)


def _window_axes(rank: int) -> tuple:
    return tuple(range(2, 2 * rank + 1, 2))


def _tile(x: jax.Array, window: tuple, padding: str, fill: float) -> jax.Array:
    """``(batch, o1, k1, o2, k2, ..., channels)``: non-overlapping windows as their own axes.

    ``"VALID"`` drops the tail no window covers; ``"SAME"`` pads with ``fill`` as
    ``lax.reduce_window`` does (the odd position at the end).
    """
    spatial = x.shape[1:-1]
    pads = _pads(spatial, window, window, padding)
    if padding.upper() == "VALID":
        keep = [n // k * k for n, k in zip(spatial, window)]
        if tuple(keep) != tuple(spatial):
            x = x[(slice(None), *(slice(0, m) for m in keep))]
    elif any(lo or hi for lo, hi in pads):
        x = jnp.pad(x, [(0, 0), *pads, (0, 0)], constant_values=np.array(fill, x.dtype))
    shape = [x.shape[0]]
    for n, k in zip(x.shape[1:-1], window):
        shape += [n // k, k]
    return x.reshape(*shape, x.shape[-1])


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _max_tiles(tiles: jax.Array, window: tuple) -> jax.Array:
    return jnp.max(tiles, axis=_window_axes(len(window)))


@_max_tiles.defjvp
def _max_tiles_jvp(window, primals, tangents):
    # jnp.max would share the gradient among tied maxima; select-and-scatter gives it all to
    # the first one in row-major window order, so mark that one: the smallest window index
    # among the positions equal to the maximum.
    (tiles,), (dtiles,) = primals, tangents
    axes = _window_axes(len(window))
    y = jnp.max(tiles, axis=axes, keepdims=True)
    shape = [1] * tiles.ndim
    for axis, k in zip(axes, window):
        shape[axis] = k
    order = np.arange(math.prod(window), dtype=np.int32).reshape(shape)
    first = jnp.min(jnp.where(tiles == y, order, order.size), axis=axes, keepdims=True)
    dy = jnp.sum(jnp.where(order == first, dtiles, 0), axis=axes)
    return jnp.squeeze(y, axes), dy
