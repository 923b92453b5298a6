"""Accuracy and regression metrics: Keras's per-example functions and their classes.

Part of :mod:`kerax.metrics` (imported and re-exported there); see that module for the
metric protocol.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from kerax import errors
from kerax.metrics import Metric, State, _PerExample, _f32, _integer, _same_rank, _shape


# -- per-example functions (Keras's keras.metrics.*_accuracy) --------------------------


def _same_shape(who: str, y_true: jax.Array, y_pred: jax.Array, hint: str = "") -> None:
    if y_true.shape != y_pred.shape:
        raise errors.ShapeError(
            f"{who}: expected y_true and y_pred of the same shape; received y_true.shape="
            f"{_shape(y_true.shape)}, y_pred.shape={_shape(y_pred.shape)}.{hint}")


def _pair(who: str, y_true: ArrayLike, y_pred: ArrayLike) -> tuple[jax.Array, jax.Array]:
    y_true, y_pred = _same_rank(_f32(y_true), _f32(y_pred))
    _same_shape(who, y_true, y_pred)
    return y_true, y_pred


def _labels(who: str, y_true: ArrayLike, y_pred: jax.Array) -> jax.Array:
    """Integer labels ``(batch,)`` or ``(batch, 1)`` against ``y_pred (batch, classes)``."""
    y_true = _f32(y_true)
    if y_pred.ndim >= 2 and y_true.ndim == y_pred.ndim and y_true.shape[-1] == 1:
        y_true = y_true[..., 0]
    if y_pred.ndim < 2 or y_true.shape != y_pred.shape[:-1]:
        raise errors.ShapeError(
            f"{who}: expected integer labels y_true of shape {_shape(y_pred.shape[:-1])} (or "
            "with a trailing 1) for scores y_pred of shape (batch, num_classes); received "
            f"y_true.shape={_shape(y_true.shape)}, y_pred.shape={_shape(y_pred.shape)}.")
    return y_true


def _in_top_k(target: jax.Array, y_pred: jax.Array, k: int) -> jax.Array:
    """Whether ``y_pred[target]`` is among the ``k`` largest scores (ties count in)."""
    idx, n = target.astype(jnp.int32), y_pred.shape[-1]
    score = jnp.take_along_axis(y_pred, jnp.clip(idx, 0, n - 1)[..., None], axis=-1)
    return ((idx >= 0) & (idx < n) & (jnp.sum(y_pred > score, -1) < k)).astype(jnp.float32)


def _row_mean(x: jax.Array) -> jax.Array:
    return jnp.mean(x, axis=-1) if x.ndim > 1 else x


def accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> jax.Array:
    """Per example: ``mean(y_true == y_pred, axis=-1)``."""
    y_true, y_pred = _pair("accuracy", y_true, y_pred)
    return _row_mean((y_true == y_pred).astype(jnp.float32))


def binary_accuracy(y_true: ArrayLike, y_pred: ArrayLike, threshold: float = 0.5) -> jax.Array:
    """Per example: ``mean(y_true == (y_pred > threshold), axis=-1)``."""
    y_true, y_pred = _pair("binary_accuracy", y_true, y_pred)
    return _row_mean((y_true == (y_pred > threshold).astype(jnp.float32)).astype(jnp.float32))


def categorical_accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> jax.Array:
    """Per example: ``argmax(y_true) == argmax(y_pred)`` (one-hot labels)."""
    y_true, y_pred = _f32(y_true), _f32(y_pred)
    _same_shape("categorical_accuracy", y_true, y_pred,
                " For integer labels use sparse_categorical_accuracy.")
    return (jnp.argmax(y_true, -1) == jnp.argmax(y_pred, -1)).astype(jnp.float32)


def sparse_categorical_accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> jax.Array:
    """Per example: ``y_true == argmax(y_pred)`` (integer labels)."""
    y_pred = _f32(y_pred)
    y_true = _labels("sparse_categorical_accuracy", y_true, y_pred)
    return (y_true == jnp.argmax(y_pred, -1).astype(jnp.float32)).astype(jnp.float32)


def top_k_categorical_accuracy(y_true: ArrayLike, y_pred: ArrayLike, k: int = 5) -> jax.Array:
    """Per example: whether ``argmax(y_true)`` is among the ``k`` highest scores."""
    y_true, y_pred = _f32(y_true), _f32(y_pred)
    _same_shape("top_k_categorical_accuracy", y_true, y_pred,
                " For integer labels use sparse_top_k_categorical_accuracy.")
    return _in_top_k(jnp.argmax(y_true, -1), y_pred, k)


def sparse_top_k_categorical_accuracy(y_true: ArrayLike, y_pred: ArrayLike,
                                      k: int = 5) -> jax.Array:
    """Per example: whether the integer label is among the ``k`` highest scores."""
    y_pred = _f32(y_pred)
    return _in_top_k(_labels("sparse_top_k_categorical_accuracy", y_true, y_pred), y_pred, k)


def _squared_error(y_true: ArrayLike, y_pred: ArrayLike) -> jax.Array:
    y_true, y_pred = _pair("mean_squared_error", y_true, y_pred)
    return jnp.square(y_pred - y_true)


def _absolute_error(y_true: ArrayLike, y_pred: ArrayLike) -> jax.Array:
    y_true, y_pred = _pair("mean_absolute_error", y_true, y_pred)
    return jnp.abs(y_pred - y_true)


# -- metric classes --------------------------------------------------------------------


class Accuracy(_PerExample):
    """How often ``y_pred`` equals ``y_true`` exactly."""

    _fn = staticmethod(accuracy)


class BinaryAccuracy(_PerExample):
    """How often ``y_pred > threshold`` equals the binary label.

    ``y_pred (batch, 1)`` takes ``y_true`` of shape ``(batch,)`` or ``(batch, 1)``.
    """

    threshold: float = 0.5
    _fn = staticmethod(binary_accuracy)

    def __post_init__(self) -> None:
        t = self.threshold
        if not isinstance(t, numbers.Real) or isinstance(t, bool) or not 0 < t < 1:
            raise errors.ConfigError("BinaryAccuracy: expected threshold in the interval "
                                     f"(0, 1); received threshold={t!r}.")
        super().__post_init__()


class CategoricalAccuracy(_PerExample):
    """How often ``argmax(y_pred)`` equals ``argmax(y_true)`` (one-hot labels)."""

    _fn = staticmethod(categorical_accuracy)


class SparseCategoricalAccuracy(_PerExample):
    """How often ``argmax(y_pred)`` equals the labels, ``(batch,)`` or ``(batch, 1)``."""

    _fn = staticmethod(sparse_categorical_accuracy)


class _TopK(_PerExample):
    k: int = 5

    def __post_init__(self) -> None:
        if not _integer(self.k) or self.k < 1:
            raise errors.ConfigError(f"{type(self).__name__}: expected k to be a positive "
                                     f"integer; received k={self.k!r}.")
        super().__post_init__()


class TopKCategoricalAccuracy(_TopK):
    """How often the one-hot label is among the ``k`` highest scores (ties count in)."""

    _fn = staticmethod(top_k_categorical_accuracy)


class SparseTopKCategoricalAccuracy(_TopK):
    """How often the integer label is among the ``k`` highest scores (ties count in)."""

    _fn = staticmethod(sparse_top_k_categorical_accuracy)


class MeanSquaredError(_PerExample):
    """Weighted mean of ``(y_true - y_pred) ** 2``."""

    _fn = staticmethod(_squared_error)


class MeanAbsoluteError(_PerExample):
    """Weighted mean of ``|y_true - y_pred|``."""

    _fn = staticmethod(_absolute_error)


class RootMeanSquaredError(_PerExample):
    """Square root of the weighted mean of ``(y_true - y_pred) ** 2`` over all the data."""

    _fn = staticmethod(_squared_error)

    def compute(self, state: State) -> jax.Array:
        return jnp.sqrt(super().compute(state))


# Needs Metric and the helpers above; a separate module keeps this one short.
