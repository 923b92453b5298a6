"""Weight regularizers: ``L1``, ``L2``, ``L1L2``, ``OrthogonalRegularizer``, as in Keras.

A regularizer is a frozen dataclass called on a weight, returning a scalar penalty. A layer
field named ``<weight>_regularizer`` (``kernel_regularizer``, ``bias_regularizer``, ...)
applies it to that weight; the step builders add ``model.penalty(params)`` to the loss.
"""

from __future__ import annotations

import dataclasses
import math
import types
from typing import Any

import jax
import jax.numpy as jnp

from kerax import errors


@dataclasses.dataclass(frozen=True)
class Regularizer:
    """Base class: ``regularizer(weight) -> scalar``."""

    def __call__(self, x: jax.Array) -> jax.Array:
        raise NotImplementedError

    def get_config(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_config(cls, config: dict) -> "Regularizer":
        return cls(**config)

    def _check(self, **values: float) -> None:
        for name, v in values.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise errors.ConfigError(
                    f"{type(self).__name__}: {name} must be a finite number >= 0; received {name}={v!r}"
                )


@dataclasses.dataclass(frozen=True)
class L1(Regularizer):
    """``l1 * sum(|x|)``."""

    l1: float = 0.01

    def __post_init__(self) -> None:
        self._check(l1=self.l1)

    def __call__(self, x):
        return self.l1 * jnp.sum(jnp.abs(x))


@dataclasses.dataclass(frozen=True)
class L2(Regularizer):
    """``l2 * sum(x ** 2)``."""

    l2: float = 0.01

    def __post_init__(self) -> None:
        self._check(l2=self.l2)

    def __call__(self, x):
        return self.l2 * jnp.sum(jnp.square(x))


@dataclasses.dataclass(frozen=True)
class L1L2(Regularizer):
    """``l1 * sum(|x|) + l2 * sum(x ** 2)``."""

    l1: float = 0.0
    l2: float = 0.0

    def __post_init__(self) -> None:
        self._check(l1=self.l1, l2=self.l2)

    def __call__(self, x):
        return self.l1 * jnp.sum(jnp.abs(x)) + self.l2 * jnp.sum(jnp.square(x))


@dataclasses.dataclass(frozen=True)
class OrthogonalRegularizer(Regularizer):
    """Keras's: ``factor * mean(|off-diagonal of W_n W_n^T|)`` with rows (or columns) of the
    2-D weight normalized to unit length."""

    factor: float = 0.01
    mode: str = "rows"

    def __post_init__(self) -> None:
        self._check(factor=self.factor)
        if self.mode not in ("rows", "columns"):
            raise errors.ConfigError(f"OrthogonalRegularizer: mode must be 'rows' or 'columns'; received {self.mode!r}")

    def __call__(self, x):
        if x.ndim != 2:
            raise errors.ShapeError(f"OrthogonalRegularizer needs a 2-D weight; received shape {x.shape}")
        w = x if self.mode == "rows" else x.T
        w = w / jnp.maximum(jnp.linalg.norm(w, axis=1, keepdims=True), 1e-12)
        product = w @ w.T
        n = product.shape[0]
        off = jnp.abs(product - jnp.eye(n, dtype=product.dtype) * jnp.diag(product))
        return self.factor * jnp.sum(off) / (n * (n - 1))


_BY_NAME = types.MappingProxyType({
    "l1": L1, "l2": L2, "l1_l2": L1L2, "orthogonal_regularizer": OrthogonalRegularizer,
    "L1": L1, "L2": L2, "L1L2": L1L2, "OrthogonalRegularizer": OrthogonalRegularizer,
})


def get(identifier: Any) -> Any:
    """None, a name (``"l2"``), a ``{"class_name", "config"}`` dict, a Regularizer or a
    callable ``weight -> scalar``."""
    if identifier is None or isinstance(identifier, Regularizer):
        return identifier
    if isinstance(identifier, str):
        if identifier not in _BY_NAME:
            raise errors.unknown_name("regularizer", identifier, [k for k in _BY_NAME if k.islower()])
        return _BY_NAME[identifier]()
    if isinstance(identifier, dict) and set(identifier) >= {"class_name", "config"}:
        name = identifier["class_name"]
        if name not in _BY_NAME:
            raise errors.UnsafeContentError(f"unknown regularizer class {name!r}")
        return _BY_NAME[name].from_config(identifier["config"])
    if callable(identifier):
        return identifier
    raise errors.ConfigError(f"cannot interpret {identifier!r} as a regularizer")


def serialize(regularizer: Any) -> Any:
    if regularizer is None:
        return None
    if isinstance(regularizer, Regularizer):
        return {"class_name": type(regularizer).__name__, "config": regularizer.get_config()}
    raise errors.ConfigError("custom regularizer functions cannot be serialized; use a Regularizer subclass")
