"""The ``Loss`` protocol behind ``kerax.losses``, and its helpers.

Layered as optax is: this file holds the protocol (the ``Loss`` base class and
``LossFunctionWrapper``) and the pieces every loss shares (dtypes, Keras's rank adjustment,
shape checks, host label checks, weighting and reduction); ``kerax.losses`` holds the loss
functions, the concrete classes and the name table. Import them from ``kerax.losses``.
Nothing here holds state. Shapes may contain ``None`` (an unknown dimension), which
matches any size.
"""

from __future__ import annotations

import dataclasses
import numbers
import re
import types
from typing import Any, Callable, ClassVar, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from kerax import errors

EPSILON = 1e-7  # keras.config.epsilon()
REDUCTIONS = ("sum_over_batch_size", "sum", "none", "mean", "mean_with_sample_weight")
Shape = Sequence[Any]
Array = jax.Array


def as_float(x: ArrayLike) -> jax.Array:
    """Returns ``x`` as a float array: float32 unless it already is float32 or wider."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating) or jnp.finfo(x.dtype).bits < 32:
        x = x.astype(jnp.float32)
    return x


def adjust_ranks(a: Shape, b: Shape) -> tuple[tuple, tuple]:
    """Keras's ``squeeze_or_expand_to_same_rank`` on shapes.

    When the ranks differ by exactly one and the longer shape ends in 1, that 1 is
    squeezed, except that a rank-1 shorter shape is expanded instead (``(n,)`` vs
    ``(n, 1)`` -> both ``(n, 1)``). Any other pair is returned unchanged.
    """
    a, b = tuple(a), tuple(b)
    if len(a) == len(b) + 1 and a[-1] == 1:
        return (a, b + (1,)) if len(b) == 1 else (a[:-1], b)
    if len(b) == len(a) + 1 and b[-1] == 1:
        return (a + (1,), b) if len(a) == 1 else (a, b[:-1])
    return a, b


def same_shape(a: Shape, b: Shape) -> bool:
    """True when ``a`` and ``b`` have one rank and equal sizes (``None`` matches any)."""
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b))


def _fmt(shape: Shape) -> str:
    return errors.fmt_shape(shape)


def check_elementwise(loss: str, t_shape: Shape, p_shape: Shape) -> tuple[tuple, tuple]:
    """Checks that targets and predictions have one shape after Keras's rank adjustment.

    Returns:
      The adjusted ``(y_true_shape, y_pred_shape)``.

    Raises:
      ShapeError: the shapes differ (they would otherwise broadcast silently), or
        ``y_pred`` is a scalar.
    """
    t, p = adjust_ranks(t_shape, p_shape)
    if len(p) == 0:
        raise errors.ShapeError(
            f"Loss {loss!r}: expected y_pred of rank >= 1 (the loss reduces its last axis); "
            f"received y_pred.shape={_fmt(p_shape)}."
        )
    if not same_shape(t, p):
        hint = ""
        if t and t[-1] == 1 and p[-1] not in (None, 1):
            hint = (" If y_true holds integer class labels, use "
                    "'sparse_categorical_crossentropy'.")
        raise errors.ShapeError(
            f"Loss {loss!r}: expected y_true and y_pred of the same shape (a trailing "
            f"dimension of 1 may differ); received y_true.shape={_fmt(t_shape)} and "
            f"y_pred.shape={_fmt(p_shape)}, which would broadcast silently.{hint}"
        )
    return t, p


def check_sparse(loss: str, t_shape: Shape, p_shape: Shape, axis: int) -> tuple[tuple, int]:
    """Checks integer labels against class scores: ``y_true.shape == y_pred.shape`` less ``axis``.

    A trailing 1 on ``y_true`` (``(n, 1)`` labels for ``(n, C)`` scores) is allowed.

    Returns:
      The expected label shape and the normalised (non-negative) class axis.

    Raises:
      ShapeError: the shapes do not match, or ``axis`` is out of range.
    """
    t, p = tuple(t_shape), tuple(p_shape)
    if not -len(p) <= axis < len(p):
        raise errors.ShapeError(
            f"Loss {loss!r}: axis={axis} is out of range for y_pred.shape={_fmt(p)}."
        )
    axis %= len(p)
    want = p[:axis] + p[axis + 1:]
    if len(t) == len(p) and t and t[-1] == 1:
        t = t[:-1]
    if not same_shape(t, want):
        raise errors.ShapeError(
            f"Loss {loss!r}: expected integer labels y_true of shape {_fmt(want)} (y_pred's "
            f"shape without the class axis, or with a trailing 1); received "
            f"y_true.shape={_fmt(t_shape)} and y_pred.shape={_fmt(p_shape)}. For one-hot "
            "targets use 'categorical_crossentropy'."
        )
    return want, axis


def _first(values: np.ndarray, bad: np.ndarray) -> Any:
    value = values[bad].ravel()[0]
    return int(value) if float(value).is_integer() else float(value)


def validate_sparse_labels(loss: str, y_true: Any, num_classes: int | None,
                           ignore_class: int | None) -> None:
    """Checks host labels: integer-valued, and in ``[0, num_classes)`` or ``ignore_class``.

    Raises:
      LabelError: a non-integer or non-finite label, or one out of range (``-1`` too: labels
        never wrap around).
    """
    y = np.asarray(y_true)
    if y.dtype.kind not in "biuf":
        raise errors.LabelError(
            f"Loss {loss!r}: expected integer class labels; received labels of dtype {y.dtype}."
        )
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y) | (y != np.round(np.nan_to_num(y)))
        if bad.any():
            raise errors.LabelError(
                f"Loss {loss!r}: expected integer class labels; received non-integer labels "
                f"such as {_first(y, bad)!r}."
            )
    if num_classes is None or y.size == 0:
        return
    bad = (y < 0) | (y >= num_classes)
    if ignore_class is not None:
        bad &= y != ignore_class
    if bad.any():
        label = _first(y, bad)
        hint = (" Labels do not wrap around; pass ignore_class=-1 to skip them."
                if label < 0 else " Does the model's last layer have enough units?")
        raise errors.LabelError(
            f"Loss {loss!r}: label {label} out of range [0, {num_classes}) for "
            f"{num_classes} classes.{hint}"
        )


def validate_binary_labels(loss: str, y_true: Any) -> None:
    """Checks host labels of a binary loss lie in ``[0, 1]``.

    Raises:
      LabelError: a label below 0, above 1 or NaN.
    """
    y = np.asarray(y_true)
    if y.dtype.kind not in "biuf":
        raise errors.LabelError(
            f"Loss {loss!r}: expected numeric labels in [0, 1]; received dtype {y.dtype}."
        )
    bad = ~((y >= 0) & (y <= 1))
    if bad.any():
        raise errors.LabelError(
            f"Loss {loss!r}: label {_first(y, bad)} out of range [0, 1]; binary losses take "
            "targets in [0, 1]. For class indices use 'sparse_categorical_crossentropy'."
        )


def _safe_divide(x: jax.Array, d: jax.Array) -> jax.Array:
    """``x / d``, or 0 where ``d == 0`` (Keras's ``divide_no_nan``, safe under grad)."""
    zero = d == 0
    return jnp.where(zero, jnp.zeros_like(x), x / jnp.where(zero, jnp.ones_like(d), d))


def reduce(losses: jax.Array, sample_weight: ArrayLike | None, mask: jax.Array | None,
           reduction: str, loss: str) -> jax.Array:
    """Keras's ``reduce_weighted_values``: weights and mask, then the reduction.

    ``sum_over_batch_size`` (and ``mean``) divide the weighted sum by the number of loss
    elements; with a mask, valid elements are weighted ``total / valid`` first, so the
    result is the mean over valid elements. ``mean_with_sample_weight`` divides by the sum
    of the weights.
    """
    dtype = losses.dtype
    weight = None if sample_weight is None else jnp.asarray(sample_weight).astype(dtype)
    if mask is not None:
        m = mask.astype(dtype)
        if reduction in ("mean", "sum_over_batch_size"):
            m = m * (m.size / (jnp.sum(m) + EPSILON))
        if weight is not None:
            m, weight = _align_weight(loss, m, weight)
            weight = weight * m
        else:
            weight = m
    if weight is not None:
        losses, weight = _align_weight(loss, losses, weight)
        losses = losses * weight
    if reduction == "none" or losses.ndim == 0 or losses.shape == (0,):
        return losses
    total = jnp.sum(losses)
    if reduction == "sum":
        return total
    if reduction == "mean_with_sample_weight" and weight is not None:
        divisor = jnp.sum(jnp.broadcast_to(weight, losses.shape))
    else:
        divisor = jnp.asarray(losses.size, dtype)
    return _safe_divide(total, divisor)


def _align_weight(loss: str, values: jax.Array, weight: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Rank-adjusts ``weight`` to ``values`` as Keras, then adds trailing axes if shorter."""
    given = weight.shape
    v_shape, w_shape = adjust_ranks(values.shape, weight.shape)
    values, weight = values.reshape(v_shape), weight.reshape(w_shape)
    if 0 < weight.ndim < values.ndim:
        weight = weight.reshape(weight.shape + (1,) * (values.ndim - weight.ndim))
    try:
        shape = jnp.broadcast_shapes(values.shape, weight.shape)
    except ValueError:
        shape = None
    if shape != values.shape:
        raise errors.ShapeError(
            f"Loss {loss!r}: sample_weight.shape={_fmt(given)} does not fit the "
            f"per-example losses of shape {_fmt(values.shape)}; expected the batch shape "
            "(or a shape that broadcasts to it)."
        )
    return values, weight


def _real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


# Hyperparameter checks: field -> (is valid, what is expected).
_CHECKS: types.MappingProxyType[str, tuple[Callable[[Any], bool], str]] = (
    types.MappingProxyType({
        "from_logits": (lambda v: isinstance(v, bool), "a bool"),
        "apply_class_balancing": (lambda v: isinstance(v, bool), "a bool"),
        "label_smoothing": (lambda v: _real(v) and 0 <= v <= 1, "a float in [0, 1]"),
        "axis": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an int"),
        "ignore_class": (lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)),
                         "an int or None"),
        "alpha": (_real, "a float"),
        "gamma": (lambda v: _real(v) and v >= 0, "a float >= 0"),
        "delta": (lambda v: _real(v) and v > 0, "a float > 0"),
    })
)


@dataclasses.dataclass(frozen=True)
class Loss:
    """A loss: per-example ``call`` plus Keras's weighting and ``reduction``.

    Instances are immutable and hashable (usable as static arguments of ``jax.jit``).
    Subclass and override ``call(y_true, y_pred) -> per-example losses`` for a custom loss.

    Args:
      name: defaults to the snake_case name of the loss function (``"mean_squared_error"``).
      reduction: ``"sum_over_batch_size"`` (default; the weighted sum divided by the number
        of loss elements), ``"sum"``, ``"none"`` / ``None`` (per-example losses), ``"mean"``
        (same as ``sum_over_batch_size``) or ``"mean_with_sample_weight"`` (divided by the sum
        of the weights).

    Raises:
      ConfigError: an unknown ``reduction`` or an invalid hyperparameter.
    """

    name: str | None = dataclasses.field(default=None, kw_only=True)
    reduction: str | None = dataclasses.field(default="sum_over_batch_size", kw_only=True)

    _fn: ClassVar[Callable[..., Array] | None] = None
    # "elementwise" or "binary" (same shapes), "sparse" (labels vs scores), None (no checks).
    _kind: ClassVar[str | None] = None

    def __post_init__(self) -> None:
        if self.name is None:
            object.__setattr__(self, "name", self._default_name())
        if not isinstance(self.name, str):
            raise errors.ConfigError(f"{type(self).__name__}: expected name to be a str; "
                                     f"received name={self.name!r}.")
        reduction = "none" if self.reduction is None else self.reduction
        if reduction not in REDUCTIONS:
            raise errors.ConfigError(
                f"{type(self).__name__}: expected reduction to be one of "
                f"{', '.join(REDUCTIONS)} or None; received reduction={self.reduction!r}."
            )
        object.__setattr__(self, "reduction", reduction)
        for field, value in self._fn_kwargs().items():
            valid, expected = _CHECKS.get(field, (lambda v: True, ""))
            if not valid(value):
                raise errors.ConfigError(
                    f"{type(self).__name__}: expected {field} to be {expected}; "
                    f"received {field}={value!r}."
                )

    def _default_name(self) -> str:
        fn = type(self)._fn
        return fn.__name__ if fn else re.sub(r"(?<!^)(?=[A-Z])", "_", type(self).__name__).lower()

    def _fn_kwargs(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ("name", "reduction", "fn")}

    def call(self, y_true: ArrayLike, y_pred: ArrayLike) -> Array:
        """Returns the per-example losses, of ``y_pred``'s batch shape.

        Raises:
          ShapeError: the shapes do not fit (see ``check_shapes``).
        """
        fn = type(self)._fn
        if fn is None:
            raise NotImplementedError(f"{type(self).__name__} must override call().")
        self.check_shapes(np.shape(y_true), np.shape(y_pred))
        return fn(y_true, y_pred, **self._fn_kwargs())

    def __call__(self, y_true: ArrayLike, y_pred: ArrayLike,
                 sample_weight: ArrayLike | None = None) -> Array:
        """Returns the loss reduced as Keras does: per-example losses times
        ``sample_weight`` (batch-shaped, or broadcastable), then ``reduction``."""
        losses = self.call(y_true, y_pred)
        return reduce(losses, sample_weight, self._mask(y_true, y_pred), self.reduction,
                        self.name)

    def _mask(self, y_true: ArrayLike, y_pred: ArrayLike) -> Array | None:
        return None

    def check_shapes(self, y_true_shape: Any, y_pred_shape: Any) -> None:
        """Refuses targets and predictions whose shapes would broadcast silently.

        After Keras's rank adjustment (a trailing 1 may differ), elementwise losses need
        equal shapes; sparse ones need ``y_true.shape == y_pred.shape`` without the class
        axis. ``None`` dimensions match anything. A plain ``Loss`` subclass checks nothing.

        Raises:
          ShapeError: naming the loss and both shapes.
        """
        if self._kind == "sparse":
            check_sparse(self.name, y_true_shape, y_pred_shape, self.axis)
        elif self._kind is not None:
            check_elementwise(self.name, y_true_shape, y_pred_shape)

    def validate_targets(self, y_true: Any, y_pred_shape: Any) -> None:
        """Checks host (NumPy) targets before training: shapes, then labels.

        Sparse categorical labels must be integer-valued and in ``[0, num_classes)`` (or
        equal ``ignore_class``); binary labels must lie in ``[0, 1]``.

        Raises:
          ShapeError: see ``check_shapes``.
          LabelError: e.g. ``label 5 out of range [0, 3)``, or non-integer labels.
        """
        y_true = np.asarray(y_true)
        self.check_shapes(y_true.shape, y_pred_shape)
        if self._kind == "sparse":
            classes = tuple(y_pred_shape)[self.axis]
            validate_sparse_labels(self.name, y_true, classes, self.ignore_class)
        elif self._kind == "binary":
            validate_binary_labels(self.name, y_true)

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments, so ``from_config`` rebuilds an equal loss."""
        return {"name": self.name, "reduction": self.reduction, **self._fn_kwargs()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Loss:
        """Builds a loss from ``get_config()`` output (a Keras ``dtype`` of float32 is allowed).

        Raises:
          ConfigError: an unknown key or an invalid value.
        """
        if not isinstance(config, dict):
            raise errors.ConfigError(f"{cls.__name__}: expected config to be a dict; received "
                                     f"config={config!r}.")
        config = dict(config)
        dtype = config.pop("dtype", None)
        if dtype not in (None, "float32"):
            raise errors.ConfigError(f"{cls.__name__}: expected dtype None or 'float32' (losses "
                                     f"compute in float32); received dtype={dtype!r}.")
        try:
            return cls(**config)
        except TypeError as e:
            raise errors.ConfigError(f"{cls.__name__}: invalid config {config!r}: {e}") from None


@dataclasses.dataclass(frozen=True)
class LossFunctionWrapper(Loss):
    """Wraps any ``fn(y_true, y_pred) -> per-example losses`` as a ``Loss``.

    ``call`` applies Keras's rank adjustment and casts ``y_pred`` to float (``y_true`` is
    passed as it is); shapes are not checked. It cannot be serialized.
    """

    fn: Callable[[Any, Any], Array] | None = None

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise errors.ConfigError(
                f"LossFunctionWrapper: expected fn to be a callable (y_true, y_pred) -> losses; "
                f"received fn={self.fn!r}.")
        super().__post_init__()

    def _default_name(self) -> str:
        return getattr(self.fn, "__name__", "loss")

    def call(self, y_true: ArrayLike, y_pred: ArrayLike) -> Array:
        y_true, y_pred = jnp.asarray(y_true), as_float(y_pred)
        t, p = adjust_ranks(y_true.shape, y_pred.shape)
        return self.fn(y_true.reshape(t), y_pred.reshape(p))

    def get_config(self) -> dict[str, Any]:
        raise errors.ConfigError(
            f"Cannot serialize loss {self.name!r}: custom loss functions have no name to save. "
            "Use a built-in loss name, or a Loss subclass you rebuild yourself.")
