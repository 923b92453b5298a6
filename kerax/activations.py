"""Activation functions with Keras 3 names and semantics, over ``jax.nn``.

Every function is elementwise (``softmax`` / ``log_softmax`` reduce over ``axis``), keeps
the input's floating dtype (no float64 upcast, works under strict dtype promotion) and is
safe under ``jit``, ``grad`` and ``vmap``.

Keras 3 defaults differ from ``jax.nn`` in two places, and Keras wins here:
``gelu`` is exact (``approximate=False``) and ``leaky_relu`` has ``negative_slope=0.2``.

Strings resolve through one immutable table::

    >>> from kerax import activations
    >>> activations.get("relu") is activations.relu
    True
    >>> activations.serialize(activations.swish)
    'silu'
"""

from __future__ import annotations

import types
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from kerax import errors

Activation = Callable[..., Any]


def relu(
    x: ArrayLike,
    negative_slope: float = 0.0,
    max_value: float | None = None,
    threshold: float = 0.0,
) -> jax.Array:
    """Rectified linear unit, with Keras's optional slope, cap and threshold.

    Returns ``x`` where ``x > threshold``, ``negative_slope * (x - threshold)`` below it,
    and clips the result at ``max_value`` when given.
    """
    if negative_slope == 0.0 and max_value is None and threshold == 0.0:
        return jax.nn.relu(x)
    x = jnp.asarray(x)
    y = jnp.where(x > threshold, x, jnp.zeros_like(x))
    if max_value is not None:
        y = jnp.minimum(y, max_value)
    if negative_slope != 0.0:
        y = y - negative_slope * jax.nn.relu(threshold - x)
    return y


def relu6(x: ArrayLike) -> jax.Array:
    """Rectified linear unit capped at 6: ``min(max(x, 0), 6)``."""
    return jax.nn.relu6(x)


def gelu(x: ArrayLike, approximate: bool = False) -> jax.Array:
    """Gaussian error linear unit, ``x * Phi(x)``; exact by default, as in Keras."""
    return jax.nn.gelu(x, approximate=approximate)


def sigmoid(x: ArrayLike) -> jax.Array:
    """Logistic sigmoid, ``1 / (1 + exp(-x))``."""
    return jax.nn.sigmoid(x)


def tanh(x: ArrayLike) -> jax.Array:
    """Hyperbolic tangent."""
    return jnp.tanh(x)


def softmax(x: ArrayLike, axis: int = -1) -> jax.Array:
    """Softmax over ``axis``: ``exp(x) / sum(exp(x), axis)``, computed stably."""
    return jax.nn.softmax(x, axis=axis)


def log_softmax(x: ArrayLike, axis: int = -1) -> jax.Array:
    """Logarithm of the softmax over ``axis``, computed stably."""
    return jax.nn.log_softmax(x, axis=axis)


def silu(x: ArrayLike) -> jax.Array:
    """Sigmoid linear unit (swish), ``x * sigmoid(x)``."""
    return jax.nn.silu(x)


swish = silu


def elu(x: ArrayLike, alpha: float = 1.0) -> jax.Array:
    """Exponential linear unit: ``x`` if ``x > 0`` else ``alpha * (exp(x) - 1)``."""
    return jax.nn.elu(x, alpha=alpha)


def selu(x: ArrayLike) -> jax.Array:
    """Scaled ELU with ``alpha = 1.67326324`` and ``scale = 1.05070098``."""
    return jax.nn.selu(x)


def leaky_relu(x: ArrayLike, negative_slope: float = 0.2) -> jax.Array:
    """Leaky ReLU: ``x`` if ``x >= 0`` else ``negative_slope * x`` (Keras default 0.2)."""
    return jax.nn.leaky_relu(x, negative_slope=negative_slope)


def softplus(x: ArrayLike) -> jax.Array:
    """Softplus, ``log(1 + exp(x))``, computed stably."""
    return jax.nn.softplus(x)


def softsign(x: ArrayLike) -> jax.Array:
    """Softsign, ``x / (1 + |x|)``."""
    return jax.nn.soft_sign(x)


def hard_sigmoid(x: ArrayLike) -> jax.Array:
    """Piecewise-linear sigmoid, Keras 3 style: ``relu6(x + 3) / 6``."""
    return jax.nn.hard_sigmoid(x)


def hard_silu(x: ArrayLike) -> jax.Array:
    """Hard SiLU (hard swish), ``x * relu6(x + 3) / 6``."""
    return jax.nn.hard_silu(x)


hard_swish = hard_silu


def mish(x: ArrayLike) -> jax.Array:
    """Mish, ``x * tanh(softplus(x))``."""
    return jax.nn.mish(x)


def exponential(x: ArrayLike) -> jax.Array:
    """Exponential, ``exp(x)``."""
    return jnp.exp(x)


def linear(x: ArrayLike) -> ArrayLike:
    """Identity: returns ``x`` unchanged (Keras's ``"linear"`` and ``activation=None``)."""
    return x


# Name -> function. Aliases come after their canonical name: ``serialize`` returns the
# first name bound to a function, so ``serialize(swish) == "silu"``.
_BY_NAME: types.MappingProxyType[str, Activation] = types.MappingProxyType(
    {
        "relu": relu,
        "relu6": relu6,
        "gelu": gelu,
        "sigmoid": sigmoid,
        "tanh": tanh,
        "softmax": softmax,
        "log_softmax": log_softmax,
        "silu": silu,
        "swish": swish,
        "elu": elu,
        "selu": selu,
        "leaky_relu": leaky_relu,
        "softplus": softplus,
        "softsign": softsign,
        "hard_sigmoid": hard_sigmoid,
        "hard_silu": hard_silu,
        "hard_swish": hard_swish,
        "mish": mish,
        "exponential": exponential,
        "linear": linear,
    }
)

# jax.nn / jnp functions whose defaults equal the Keras definition, so they serialize too.
# (jax.nn.gelu and jax.nn.leaky_relu are left out: their defaults differ from Keras.)
_JAX_EQUIVALENTS: tuple[tuple[Any, str], ...] = (
    (jax.nn.relu, "relu"),
    (jax.nn.relu6, "relu6"),
    (jax.nn.sigmoid, "sigmoid"),
    (jnp.tanh, "tanh"),
    (jax.nn.softmax, "softmax"),
    (jax.nn.log_softmax, "log_softmax"),
    (jax.nn.silu, "silu"),
    (jax.nn.elu, "elu"),
    (jax.nn.selu, "selu"),
    (jax.nn.softplus, "softplus"),
    (jax.nn.soft_sign, "softsign"),
    (jax.nn.hard_sigmoid, "hard_sigmoid"),
    (jax.nn.hard_silu, "hard_silu"),
    (jax.nn.mish, "mish"),
    (jnp.exp, "exponential"),
)


def names() -> tuple[str, ...]:
    """Returns every registered activation name, aliases included, sorted."""
    return tuple(sorted(_BY_NAME))


def get(identifier: str | Activation | None) -> Activation:
    """Resolves an activation identifier to a function.

    Args:
      identifier: ``None`` (the identity, ``linear``), a registered name such as
        ``"relu"``, or any callable (returned as it is).

    Returns:
      The activation function.

    Raises:
      UnknownNameError: ``identifier`` is a string that names no activation; the message
        lists the valid names.
      ConfigError: ``identifier`` is neither ``None``, a string nor a callable.
    """
    if identifier is None:
        return linear
    if isinstance(identifier, str):
        try:
            return _BY_NAME[identifier]
        except KeyError:
            raise errors.unknown_name("activation", identifier, _BY_NAME) from None
    if callable(identifier):
        return identifier
    raise errors.ConfigError(
        "Expected an activation: a name such as 'relu', a callable or None; received "
        f"activation={identifier!r} of type {type(identifier).__name__}."
    )


def serialize(activation: str | Activation | None) -> str:
    """Returns the registered name of an activation, so that ``get`` can rebuild it.

    Aliases map to one name (``swish -> "silu"``, ``hard_swish -> "hard_silu"``);
    ``None`` serializes as ``"linear"``; ``jax.nn`` functions whose defaults match the
    Keras definition (``jax.nn.relu``, ``jax.nn.silu``, ...) serialize to their Keras name.

    Raises:
      ConfigError: ``activation`` is a custom callable, which has no name to save.
      UnknownNameError: ``activation`` is a string that names no activation.
    """
    fn = get(activation)
    for name, registered in _BY_NAME.items():
        if registered is fn:
            return name
    for jax_fn, name in _JAX_EQUIVALENTS:
        if jax_fn is fn:
            return name
    raise errors.ConfigError(
        f"Cannot serialize activation={activation!r}: custom activation functions cannot "
        "be serialized by name. Pass a registered name (one of "
        + ", ".join(names())
        + ") or write it as a kx.Layer subclass registered with kx.register_layer."
    )
