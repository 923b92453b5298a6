"""Losses with Keras 3 names and semantics: pure per-example functions and ``Loss`` classes.

Every function maps ``(y_true, y_pred)`` to one loss per example, reducing the last axis
(``(batch, d) -> (batch,)``), after Keras's rank adjustment (a trailing dimension of 1 may
differ: ``(n,)`` targets fit ``(n, 1)`` outputs). Shapes that would otherwise broadcast
silently raise ``ShapeError`` at trace time. Outputs keep ``y_pred``'s float dtype
(float32 at least; never upcast to float64) and work under ``jit``, ``vmap`` and ``grad``.

Numerics follow Keras: with ``from_logits=False`` probabilities are clipped to
``[1e-7, 1 - 1e-7]`` (categorical ones renormalised to sum to 1 first); with
``from_logits=True`` the log-sigmoid / log-softmax forms are used, so huge logits stay
finite and exact (the focal losses too, where Keras clips after a sigmoid/softmax).

Sparse categorical cross-entropy never wraps labels around: in the traced path a label
outside ``[0, num_classes)`` (or a non-integer float label) gives a NaN loss for its example,
so NaN detection catches it; ``Loss.validate_targets`` rejects such host labels up front.

    >>> from kerax import losses
    >>> losses.get("mse")
    MeanSquaredError(name='mean_squared_error', reduction='sum_over_batch_size')
    >>> float(losses.get("mse")([[0.0, 1.0]], [[1.0, 1.0]]))
    0.5
"""

from __future__ import annotations

import dataclasses
import math
import types
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from kerax import _loss_utils as U
from kerax import errors
from kerax._loss_utils import Loss, LossFunctionWrapper

EPSILON = U.EPSILON
Array = jax.Array


def _pair(name: str, y_true: ArrayLike, y_pred: ArrayLike) -> tuple[Array, Array]:
    y_pred = U.as_float(y_pred)
    y_true = jnp.asarray(y_true).astype(y_pred.dtype)
    t, p = U.check_elementwise(name, y_true.shape, y_pred.shape)
    return y_true.reshape(t), y_pred.reshape(p)


def _clip(p: Array) -> Array:
    return jnp.clip(p, EPSILON, 1.0 - EPSILON)


def _log_probs(y_pred: Array, from_logits: bool, axis: int) -> Array:
    if from_logits:
        return jax.nn.log_softmax(y_pred, axis=axis)
    return jnp.log(_clip(y_pred / jnp.sum(y_pred, axis=axis, keepdims=True)))


def _bce(y: Array, p: Array, from_logits: bool) -> Array:
    if from_logits:
        return -(y * jax.nn.log_sigmoid(p) + (1 - y) * jax.nn.log_sigmoid(-p))
    p = _clip(p)
    return -(y * jnp.log(p) + (1 - y) * jnp.log(1 - p))


def _pow(x: Array, gamma: Any) -> Array:
    """``x**gamma``; integral Python ``gamma`` uses ``integer_pow`` (finite grad at 0)."""
    if isinstance(gamma, (int, float)) and float(gamma).is_integer():
        return x ** int(gamma)
    return jnp.power(x, gamma)


def _hinge_labels(y: Array) -> Array:
    """Keras: if every label is 0 or 1, maps them to -1 / 1; otherwise leaves them."""
    return jnp.where(jnp.all((y == 0) | (y == 1)), 2 * y - 1, y)


def mean_squared_error(y_true: ArrayLike, y_pred: ArrayLike) -> Array:
    """``mean((y_true - y_pred)**2, axis=-1)``: ``(..., d) -> (...)``."""
    y_true, y_pred = _pair("mean_squared_error", y_true, y_pred)
    return jnp.mean(jnp.square(y_true - y_pred), axis=-1)


def mean_absolute_error(y_true: ArrayLike, y_pred: ArrayLike) -> Array:
    """``mean(|y_true - y_pred|, axis=-1)``."""
    y_true, y_pred = _pair("mean_absolute_error", y_true, y_pred)
    return jnp.mean(jnp.abs(y_true - y_pred), axis=-1)


def mean_absolute_percentage_error(y_true: ArrayLike, y_pred: ArrayLike) -> Array:
    """``100 * mean(|(y_true - y_pred) / max(|y_true|, eps)|, axis=-1)``."""
    y_true, y_pred = _pair("mean_absolute_percentage_error", y_true, y_pred)
    diff = jnp.abs((y_true - y_pred) / jnp.maximum(jnp.abs(y_true), EPSILON))
    return 100.0 * jnp.mean(diff, axis=-1)


def mean_squared_logarithmic_error(y_true: ArrayLike, y_pred: ArrayLike) -> Array:
    """``mean((log1p(max(y_pred, eps)) - log1p(max(y_true, eps)))**2, axis=-1)``."""
    y_true, y_pred = _pair("mean_squared_logarithmic_error", y_true, y_pred)
    diff = jnp.log1p(jnp.maximum(y_pred, EPSILON)) - jnp.log1p(jnp.maximum(y_true, EPSILON))
    return jnp.mean(jnp.square(diff), axis=-1)


def binary_crossentropy(y_true: ArrayLike, y_pred: ArrayLike, from_logits: bool = False,
                        label_smoothing: float = 0.0, axis: int = -1) -> Array:
    """Binary cross-entropy, averaged over ``axis``; targets smoothed to ``y(1-ls) + ls/2``."""
    y_true, y_pred = _pair("binary_crossentropy", y_true, y_pred)
    y_true = y_true * (1.0 - label_smoothing) + 0.5 * label_smoothing
    return jnp.mean(_bce(y_true, y_pred, from_logits), axis=axis)


def binary_focal_crossentropy(y_true: ArrayLike, y_pred: ArrayLike,
                              apply_class_balancing: bool = False, alpha: float = 0.25,
                              gamma: float = 2.0, from_logits: bool = False,
                              label_smoothing: float = 0.0, axis: int = -1) -> Array:
    """Focal BCE: ``(1 - p_t)**gamma * bce``, times ``alpha`` / ``1 - alpha`` if balanced."""
    y_true, y_pred = _pair("binary_focal_crossentropy", y_true, y_pred)
    y_true = y_true * (1.0 - label_smoothing) + 0.5 * label_smoothing
    bce = _bce(y_true, y_pred, from_logits)
    p = jax.nn.sigmoid(y_pred) if from_logits else y_pred
    p_t = y_true * p + (1 - y_true) * (1 - p)
    focal = _pow(jnp.maximum(1.0 - p_t, 0.0), gamma) * bce
    if apply_class_balancing:
        focal = (y_true * alpha + (1 - y_true) * (1 - alpha)) * focal
    return jnp.mean(focal, axis=axis)


def categorical_crossentropy(y_true: ArrayLike, y_pred: ArrayLike, from_logits: bool = False,
                             label_smoothing: float = 0.0, axis: int = -1) -> Array:
    """``-sum(y_true * log p, axis)``; one-hot targets smoothed to ``y(1-ls) + ls/C``."""
    y_true, y_pred = _pair("categorical_crossentropy", y_true, y_pred)
    y_true = y_true * (1.0 - label_smoothing) + label_smoothing / y_true.shape[axis]
    return -jnp.sum(y_true * _log_probs(y_pred, from_logits, axis), axis=axis)


def sparse_categorical_crossentropy(y_true: ArrayLike, y_pred: ArrayLike,
                                    from_logits: bool = False, ignore_class: int | None = None,
                                    axis: int = -1) -> Array:
    """Cross-entropy of integer labels ``(...)`` (or ``(..., 1)``) against scores ``(..., C)``.

    Labels equal to ``ignore_class`` give 0. Labels outside ``[0, C)`` and non-integer float
    labels give NaN (no silent wrap-around, unlike ``optax``).
    """
    name = "sparse_categorical_crossentropy"
    y_pred = U.as_float(y_pred)
    y_true = jnp.asarray(y_true)
    want, axis = U.check_sparse(name, y_true.shape, y_pred.shape, axis)
    y_true = y_true.reshape(want)
    labels = y_true.astype(jnp.int32)
    valid = (labels >= 0) & (labels < y_pred.shape[axis])
    if jnp.issubdtype(y_true.dtype, jnp.floating):
        valid &= y_true == labels.astype(y_true.dtype)
    if ignore_class is not None:
        valid |= labels == ignore_class
    index = jnp.expand_dims(jnp.where(valid, labels, 0), axis)
    picked = jnp.take_along_axis(_log_probs(y_pred, from_logits, axis), index, axis=axis)
    loss = jnp.where(valid, -jnp.squeeze(picked, axis), jnp.nan)
    if ignore_class is not None:
        loss = jnp.where(labels == ignore_class, 0.0, loss)
    return loss


def categorical_focal_crossentropy(y_true: ArrayLike, y_pred: ArrayLike, alpha: float = 0.25,
                                   gamma: float = 2.0, from_logits: bool = False,
                                   label_smoothing: float = 0.0, axis: int = -1) -> Array:
    """``sum(alpha * (1 - p)**gamma * -y_true * log p, axis)``."""
    y_true, y_pred = _pair("categorical_focal_crossentropy", y_true, y_pred)
    y_true = y_true * (1.0 - label_smoothing) + label_smoothing / y_true.shape[axis]
    log_p = _log_probs(y_pred, from_logits, axis)
    focal = alpha * _pow(1.0 - jnp.exp(log_p), gamma) * (-y_true * log_p)
    return jnp.sum(focal, axis=axis)


def huber(y_true: ArrayLike, y_pred: ArrayLike, delta: float = 1.0) -> Array:
    """``0.5 e**2`` where ``|e| <= delta``, else ``delta |e| - 0.5 delta**2``; mean over -1."""
    y_true, y_pred = _pair("huber", y_true, y_pred)
    err = y_pred - y_true
    abs_err = jnp.abs(err)
    quad = jnp.where(abs_err <= delta, 0.5 * jnp.square(err), delta * abs_err - 0.5 * delta**2)
    return jnp.mean(quad, axis=-1)


def log_cosh(y_true: ArrayLike, y_pred: ArrayLike) -> Array:
    """``mean(log(cosh(y_pred - y_true)), axis=-1)``, computed without overflow."""
    y_true, y_pred = _pair("log_cosh", y_true, y_pred)
    x = y_pred - y_true
    return jnp.mean(x + jax.nn.softplus(-2.0 * x) - math.log(2.0), axis=-1)


def kl_divergence(y_true: ArrayLike, y_pred: ArrayLike) -> Array:
    """``sum(t * log(t / p), axis=-1)`` with ``t``, ``p`` clipped to ``[eps, 1]``."""
    y_true, y_pred = _pair("kl_divergence", y_true, y_pred)
    t, p = jnp.clip(y_true, EPSILON, 1.0), jnp.clip(y_pred, EPSILON, 1.0)
    return jnp.sum(t * jnp.log(t / p), axis=-1)


def poisson(y_true: ArrayLike, y_pred: ArrayLike) -> Array:
    """``mean(y_pred - y_true * log(y_pred + eps), axis=-1)``."""
    y_true, y_pred = _pair("poisson", y_true, y_pred)
    return jnp.mean(y_pred - y_true * jnp.log(y_pred + EPSILON), axis=-1)


def cosine_similarity(y_true: ArrayLike, y_pred: ArrayLike, axis: int = -1) -> Array:
    """The NEGATIVE cosine similarity along ``axis`` (Keras's loss; -1 is best)."""
    y_true, y_pred = _pair("cosine_similarity", y_true, y_pred)

    def unit(x: Array) -> Array:
        sq = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
        return x * jax.lax.rsqrt(jnp.maximum(sq, EPSILON**2))

    return -jnp.sum(unit(y_true) * unit(y_pred), axis=axis)


def hinge(y_true: ArrayLike, y_pred: ArrayLike) -> Array:
    """``mean(max(1 - y_true * y_pred, 0), axis=-1)``; {0, 1} labels become {-1, 1}."""
    y_true, y_pred = _pair("hinge", y_true, y_pred)
    return jnp.mean(jnp.maximum(1.0 - _hinge_labels(y_true) * y_pred, 0.0), axis=-1)


def squared_hinge(y_true: ArrayLike, y_pred: ArrayLike) -> Array:
    """``mean(max(1 - y_true * y_pred, 0)**2, axis=-1)``; {0, 1} labels become {-1, 1}."""
    y_true, y_pred = _pair("squared_hinge", y_true, y_pred)
    margin = jnp.maximum(1.0 - _hinge_labels(y_true) * y_pred, 0.0)
    return jnp.mean(jnp.square(margin), axis=-1)


def categorical_hinge(y_true: ArrayLike, y_pred: ArrayLike) -> Array:
    """``max(max((1 - y_true) * y_pred) - sum(y_true * y_pred) + 1, 0)`` over the last axis."""
    y_true, y_pred = _pair("categorical_hinge", y_true, y_pred)
    pos = jnp.sum(y_true * y_pred, axis=-1)
    neg = jnp.max((1.0 - y_true) * y_pred, axis=-1)
    return jnp.maximum(neg - pos + 1.0, 0.0)


mse = mean_squared_error
mae = mean_absolute_error
mape = mean_absolute_percentage_error
msle = mean_squared_logarithmic_error
kld = kullback_leibler_divergence = kl_divergence
logcosh = log_cosh


def _loss(fn: Callable[..., Array], kind: str):
    """Class decorator: a frozen ``Loss`` dataclass computing ``fn`` (fields = its kwargs)."""

    def wrap(cls: type) -> type[Loss]:
        cls._fn, cls._kind = staticmethod(fn), kind
        cls.__doc__ = f"{(cls.__doc__ or '').strip()} See ``{fn.__name__}``.".strip()
        return dataclasses.dataclass(frozen=True)(cls)

    return wrap


@_loss(mean_squared_error, "elementwise")
class MeanSquaredError(Loss):
    """Mean of squared errors."""


@_loss(mean_absolute_error, "elementwise")
class MeanAbsoluteError(Loss):
    """Mean of absolute errors."""


@_loss(mean_absolute_percentage_error, "elementwise")
class MeanAbsolutePercentageError(Loss):
    """Mean absolute percentage error."""


@_loss(mean_squared_logarithmic_error, "elementwise")
class MeanSquaredLogarithmicError(Loss):
    """Mean squared logarithmic error."""


@_loss(binary_crossentropy, "binary")
class BinaryCrossentropy(Loss):
    """Binary cross-entropy of targets in [0, 1]."""

    from_logits: bool = False
    label_smoothing: float = 0.0
    axis: int = -1


@_loss(binary_focal_crossentropy, "binary")
class BinaryFocalCrossentropy(Loss):
    """Binary focal cross-entropy."""

    apply_class_balancing: bool = False
    alpha: float = 0.25
    gamma: float = 2.0
    from_logits: bool = False
    label_smoothing: float = 0.0
    axis: int = -1


@_loss(categorical_crossentropy, "elementwise")
class CategoricalCrossentropy(Loss):
    """Cross-entropy of one-hot (or soft) targets."""

    from_logits: bool = False
    label_smoothing: float = 0.0
    axis: int = -1


@_loss(sparse_categorical_crossentropy, "sparse")
class SparseCategoricalCrossentropy(Loss):
    """Cross-entropy of integer labels. With ``ignore_class``, ``sum_over_batch_size``
    averages over the other labels only, as Keras."""

    from_logits: bool = False
    ignore_class: int | None = None
    axis: int = -1

    def _mask(self, y_true: ArrayLike, y_pred: ArrayLike) -> Array | None:
        if self.ignore_class is None:
            return None
        want, _ = U.check_sparse(self.name, np.shape(y_true), np.shape(y_pred), self.axis)
        return jnp.asarray(y_true).reshape(want).astype(jnp.int32) != self.ignore_class


@_loss(categorical_focal_crossentropy, "elementwise")
class CategoricalFocalCrossentropy(Loss):
    """Categorical focal cross-entropy."""

    alpha: float = 0.25
    gamma: float = 2.0
    from_logits: bool = False
    label_smoothing: float = 0.0
    axis: int = -1


@_loss(huber, "elementwise")
class Huber(Loss):
    """Huber loss: quadratic below ``delta``, linear above."""

    delta: float = 1.0


@_loss(log_cosh, "elementwise")
class LogCosh(Loss):
    """Logarithm of the hyperbolic cosine of the error."""


@_loss(kl_divergence, "elementwise")
class KLDivergence(Loss):
    """Kullback-Leibler divergence."""


@_loss(poisson, "elementwise")
class Poisson(Loss):
    """Poisson loss."""


@_loss(cosine_similarity, "elementwise")
class CosineSimilarity(Loss):
    """Negative cosine similarity (-1 is best)."""

    axis: int = -1


@_loss(hinge, "elementwise")
class Hinge(Loss):
    """Hinge loss."""


@_loss(squared_hinge, "elementwise")
class SquaredHinge(Loss):
    """Squared hinge loss."""


@_loss(categorical_hinge, "elementwise")
class CategoricalHinge(Loss):
    """Categorical hinge loss."""


_CLASSES: tuple[type[Loss], ...] = (
    MeanSquaredError, MeanAbsoluteError, MeanAbsolutePercentageError,
    MeanSquaredLogarithmicError, BinaryCrossentropy, BinaryFocalCrossentropy,
    CategoricalCrossentropy, SparseCategoricalCrossentropy, CategoricalFocalCrossentropy,
    Huber, LogCosh, KLDivergence, Poisson, CosineSimilarity, Hinge, SquaredHinge,
    CategoricalHinge,
)
_ALIASES: tuple[tuple[str, type[Loss]], ...] = (
    ("mse", MeanSquaredError), ("MSE", MeanSquaredError),
    ("mae", MeanAbsoluteError), ("MAE", MeanAbsoluteError),
    ("mape", MeanAbsolutePercentageError), ("MAPE", MeanAbsolutePercentageError),
    ("msle", MeanSquaredLogarithmicError), ("MSLE", MeanSquaredLogarithmicError),
    ("bce", BinaryCrossentropy), ("BCE", BinaryCrossentropy),
    ("kld", KLDivergence), ("KLD", KLDivergence),
    ("kullback_leibler_divergence", KLDivergence), ("logcosh", LogCosh),
)
# Every string identifier -> class: function names, class names, aliases.
_BY_NAME: types.MappingProxyType[str, type[Loss]] = types.MappingProxyType({
    **{c._fn.__name__: c for c in _CLASSES}, **{c.__name__: c for c in _CLASSES},
    **dict(_ALIASES),
})
_BY_CLASS_NAME: types.MappingProxyType[str, type[Loss]] = types.MappingProxyType(
    {c.__name__: c for c in _CLASSES})


def names() -> tuple[str, ...]:
    """Returns every string ``get`` accepts (function, class and alias names), sorted."""
    return tuple(sorted(_BY_NAME))


def get(identifier: Any) -> Loss:
    """Resolves a loss identifier to a ``Loss`` instance.

    Args:
      identifier: a name (``"mse"``, ``"mean_squared_error"``, ``"MeanSquaredError"``), a
        ``Loss`` instance (returned as it is) or subclass, a ``{"class_name", "config"}``
        dict (resolved only through this module's table, never imported), a built-in loss
        function (its class with defaults) or any ``fn(y_true, y_pred)`` (wrapped in a
        ``LossFunctionWrapper``).

    Raises:
      UnknownNameError: an unknown name or class name; the message lists the valid ones.
      ConfigError: any other identifier, or an invalid config.
    """
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, str):
        try:
            return _BY_NAME[identifier]()
        except KeyError:
            raise errors.unknown_name("loss", identifier, _BY_NAME) from None
    if isinstance(identifier, dict) and isinstance(identifier.get("class_name"), str):
        name = identifier["class_name"]
        if name not in _BY_CLASS_NAME:
            raise errors.unknown_name("loss class", name, _BY_CLASS_NAME)
        return _BY_CLASS_NAME[name].from_config(identifier.get("config") or {})
    if isinstance(identifier, type) and issubclass(identifier, Loss):
        return identifier()
    if callable(identifier) and not isinstance(identifier, (dict, type)):
        cls = next((c for c in _CLASSES if c._fn is identifier), None)
        return cls() if cls is not None else LossFunctionWrapper(identifier)
    raise errors.ConfigError(
        "Expected a loss: a name such as 'mse', a Loss, a {'class_name', 'config'} dict or "
        f"a callable (y_true, y_pred); received loss={identifier!r} of type "
        f"{type(identifier).__name__}.")


def serialize(loss: Any) -> dict[str, Any]:
    """Returns ``{"class_name", "config"}`` for any identifier ``get`` accepts.

    Raises:
      ConfigError: a custom loss function (it has no name to save).
    """
    loss = get(loss)
    return {"class_name": type(loss).__name__, "config": loss.get_config()}
