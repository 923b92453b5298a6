"""Helpers shared by the windowed layers (convolution, pooling): spatial arguments, padding
names and input checks, with errors that name the layer."""

from __future__ import annotations

import numbers
import types
from typing import Any

from kerax import errors
from kerax.core.layer import Layer

SPATIAL = types.MappingProxyType({1: "W", 2: "HW", 3: "DHW"})
LAYOUTS = types.MappingProxyType({
    1: "(batch, steps, channels)",
    2: "(batch, height, width, channels)",
    3: "(batch, depth, height, width, channels)",
})


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def spatial_tuple(layer: Layer, field: str, value: Any, rank: int, minimum: int = 1) -> tuple:
    """An int, or ``rank`` ints, as a tuple of ``rank`` ints ``>= minimum`` (ConfigError else)."""
    values = (value,) * rank if _is_int(value) else value
    if not (isinstance(values, (tuple, list)) and len(values) == rank
            and all(_is_int(v) and v >= minimum for v in values)):
        kind = "positive" if minimum == 1 else "non-negative"
        raise layer._error(
            errors.ConfigError,
            f"{field} must be a {kind} integer or a tuple of {rank} {kind} integers; "
            f"received {field}={value!r}",
        )
    return tuple(int(v) for v in values)


def check_padding(layer: Layer, padding: Any, allowed: tuple) -> str:
    """The lower-cased padding name; ConfigError listing ``allowed`` otherwise."""
    name = padding.lower() if isinstance(padding, str) else padding
    if name not in allowed:
        raise layer._error(
            errors.ConfigError,
            f"padding must be one of {', '.join(map(repr, allowed))}; received padding={padding!r}",
        )
    return name


def check_data_format(layer: Layer, data_format: Any) -> None:
    if data_format not in (None, "channels_last"):
        raise layer._error(
            errors.ConfigError,
            "kerax layers are channels-last: data_format must be None or 'channels_last'; "
            f"received data_format={data_format!r}. Move the channels axis last with "
            "jnp.moveaxis(x, 1, -1).",
        )


def check_rank(layer: Layer, shape: tuple, rank: int) -> None:
    """ShapeError unless ``shape`` is ``(batch, *spatial, channels)`` with ``rank`` spatial axes."""
    if len(shape) != rank + 2:
        hint = " Add a batch axis: x[None] for one example." if len(shape) == rank + 1 else ""
        raise layer._error(
            errors.ShapeError,
            f"expected input of rank {rank + 2} {LAYOUTS[rank]}; received input of shape "
            f"{errors.fmt_shape(shape)}.{hint}",
        )


def check_fits(layer: Layer, shape: tuple, window: tuple, padding: str, what: str, fix: str) -> None:
    """ShapeError when a ``"valid"`` window is larger than the input's spatial shape."""
    spatial = tuple(shape[1:-1])
    if padding == "valid" and any(n < w for n, w in zip(spatial, window)):
        raise layer._error(
            errors.ShapeError,
            f"the {what} {window} is larger than the input's spatial shape {spatial} with "
            f"padding='valid' (received input of shape {errors.fmt_shape(shape)}); use "
            f"padding='same', a larger input or {fix}",
        )


def dimension_numbers(rank: int, kernel: str = "IO") -> tuple[str, str, str]:
    s = SPATIAL[rank]
    return f"N{s}C", s + kernel, f"N{s}C"
