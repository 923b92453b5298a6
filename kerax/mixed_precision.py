"""Dtype policies (mixed precision) without global state: a policy is a layer's config.

A policy names two dtypes: the *variable* dtype, in which ``init`` creates the weights, and
the *compute* dtype, in which the layer runs. ``"mixed_bfloat16"`` and ``"mixed_float16"``
keep float32 weights and compute in 16 bits (Keras's names); ``"float32"``, ``"bfloat16"``,
``"float16"`` (and ``"float64"``) use one dtype for both::

    model = kx.Sequential([layers.Conv2D(32, 3, activation="relu"), layers.Flatten(),
                           layers.Dense(10)], dtype_policy="mixed_bfloat16")
    layers.Dense(10, dtype_policy="mixed_bfloat16")   # one layer

How it resolves (no global "current policy"): a layer's own ``dtype_policy`` wins; a layer
with an explicit ``dtype=`` keeps that dtype (Keras's ``Activation("softmax",
dtype="float32")`` idiom for the last layer); every other layer takes the policy of the
innermost container around it that has one. Containers pass their resolved policy to each
child's ``apply_masked``, and :meth:`kerax.Layer.apply_masked` (the one place that casts)
runs a leaf layer with its floating params and inputs cast to the compute dtype; the cast's
transpose makes the gradients float32 again. ``layer.apply`` itself is the raw function: a
policy takes effect through containers and ``apply_masked``.

Softmax outputs (``activation="softmax"`` or ``layers.Softmax``) and the statistics of the
normalization layers are computed in float32, as the Keras guide advises; a ``kx.Model``'s
final outputs are float32, and losses always compute in float32.
"""

from __future__ import annotations

import copy
import dataclasses
import types
from typing import Any

import jax
import jax.numpy as jnp

from kerax import activations, errors

# Keras's policy names -> (variable dtype, compute dtype).
_POLICIES: types.MappingProxyType[str, tuple[str, str]] = types.MappingProxyType({
    "float32": ("float32", "float32"),
    "float64": ("float64", "float64"),
    "bfloat16": ("bfloat16", "bfloat16"),
    "float16": ("float16", "float16"),
    "mixed_bfloat16": ("float32", "bfloat16"),
    "mixed_float16": ("float32", "float16"),
})
POLICY_NAMES: tuple[str, ...] = tuple(_POLICIES)
MIXED_NAMES: tuple[str, ...] = ("mixed_bfloat16", "mixed_float16")


@dataclasses.dataclass(frozen=True)
class Policy:
    """A dtype policy: ``name``, ``variable_dtype`` (weights), ``compute_dtype`` (math).

    Example::

        >>> p = Policy("mixed_bfloat16")
        >>> (p.variable_dtype, p.compute_dtype)
        ('float32', 'bfloat16')
    """

    name: str

    def __post_init__(self) -> None:
        if self.name not in _POLICIES:
            raise errors.unknown_name("dtype policy", self.name, POLICY_NAMES)

    @property
    def variable_dtype(self) -> str:
        return _POLICIES[self.name][0]

    @property
    def compute_dtype(self) -> str:
        return _POLICIES[self.name][1]

    @property
    def is_mixed(self) -> bool:
        """True when the compute dtype differs from the variable dtype."""
        return self.variable_dtype != self.compute_dtype


def get(identifier: Any) -> Policy:
    """A :class:`Policy` from a name, a Policy, or a Keras ``DTypePolicy`` config dict.

    Raises:
      UnknownNameError: an unknown name; the message lists the valid ones.
      ConfigError: a value of another type.
    """
    if isinstance(identifier, Policy):
        return identifier
    return Policy(name_of(identifier))


def name_of(identifier: Any) -> str:
    """The policy name of ``identifier`` (a name, a Policy, or a Keras config dict)."""
    if isinstance(identifier, Policy):
        return identifier.name
    if isinstance(identifier, dict) and isinstance(identifier.get("config"), dict):
        identifier = identifier["config"].get("name")  # Keras 3: {"class_name": "DTypePolicy", ...}
    if not isinstance(identifier, str):
        raise errors.ConfigError(
            f"dtype_policy must be one of {list(POLICY_NAMES)} (or a kx.mixed_precision.Policy); "
            f"received {identifier!r}"
        )
    return Policy(identifier).name


def effective(layer: Any, inherited: str | None) -> str | None:
    """The policy ``layer`` runs under, given its container's (``inherited``): its own
    ``dtype_policy``; else, inside a policy, its explicit ``dtype``; else ``inherited``."""
    own = getattr(layer, "dtype_policy", None)
    if own is not None or inherited is None:
        return own
    dtype = getattr(layer, "dtype", None)
    if dtype is not None:
        return dtype if dtype in _POLICIES else None
    return inherited


def cast_floating(tree: Any, dtype: Any) -> Any:
    """``tree`` with every floating array cast to ``dtype`` (ints, bools, keys untouched; dict
    keys keep their order, which is Keras's weight order)."""
    from kerax.core.order import in_order_of

    dtype = jnp.dtype(dtype)

    def cast(a: Any) -> Any:
        if hasattr(a, "dtype") and jnp.issubdtype(a.dtype, jnp.floating) and a.dtype != dtype:
            return jnp.asarray(a).astype(dtype)
        return a

    return in_order_of(jax.tree.map(cast, tree), tree)


def autocast(layer: Any, inherited: str | None, params: Any, x: Any) -> tuple[Any, Any, Any]:
    """``(layer, params, x)`` ready to run under the resolved policy (see module doc).

    Without a policy all three come back unchanged. With an inherited one, the layer comes
    back as a copy whose ``dtype_policy`` is set, so ``layer.compute_dtype`` is right inside
    ``apply`` (identity does not matter there: weights are already looked up by name).
    """
    name = effective(layer, inherited)
    if name is None:
        return layer, params, x
    if getattr(layer, "dtype_policy", None) != name and getattr(layer, "dtype", None) is None:
        layer = copy.copy(layer)
        object.__setattr__(layer, "dtype_policy", name)
    compute = Policy(name).compute_dtype
    return layer, cast_floating(params, compute), cast_floating(x, compute)


def init_cast(layer: Any, inherited: str | None, params: Any) -> Any:
    """Fresh params of a container's leaf child in the variable dtype of its resolved policy.

    Only a full low-precision policy (``"bfloat16"``, ``"float16"``) changes anything: the
    others keep the float32 weights layers create. A child container (one that runs its own
    children: it overrides ``apply_masked``) is left alone; its own policy governs its init.
    """
    from kerax.core.layer import Layer

    name = effective(layer, inherited)
    if name is None or getattr(layer, "dtype", None) is not None \
            or Policy(name).variable_dtype == "float32" \
            or type(layer).apply_masked is not Layer.apply_masked:
        return params
    return cast_floating(params, Policy(name).variable_dtype)


_FLOAT32_ACTIVATIONS = (activations.softmax, activations.log_softmax, jax.nn.softmax,
                        jax.nn.log_softmax)


def activate(layer: Any, y: jax.Array) -> jax.Array:
    """``layer.activation`` applied to ``y``; softmax runs in float32 under a mixed policy."""
    fn = activations.get(layer.activation)
    if fn in _FLOAT32_ACTIVATIONS:
        y = upcast(layer, y)
    return fn(y)


def upcast(layer: Any, y: jax.Array) -> jax.Array:
    """``y`` in float32 when ``layer`` runs under a mixed policy (numerically sensitive
    steps: softmax, normalization statistics); unchanged otherwise."""
    name = getattr(layer, "dtype_policy", None)
    if name is not None and Policy(name).is_mixed:
        return y.astype(Policy(name).variable_dtype)
    return y


def outputs_to_variable_dtype(policy: str | None, y: Any) -> Any:
    """A model's final outputs in its policy's variable dtype (float32 for mixed)."""
    if policy is None or not Policy(policy).is_mixed:
        return y
    return cast_floating(y, Policy(policy).variable_dtype)
