"""Metrics with Keras 3 names and semantics, as pure functions over additive states.

A metric is a frozen dataclass: its fields are its config (``name`` included); it holds
no state. Four pure methods drive it::

    state = metric.init()                       # dict of float32 arrays; also the reset
    state = metric.update(state, y_true, y_pred, sample_weight=None)
    state = metric.merge(state_a, state_b)      # elementwise a + b
    value = metric.compute(state)               # jax.Array

``Mean`` and ``Sum`` take the values themselves: ``update(state, values, sample_weight=None)``.
``metric(y_true, y_pred)`` is the one-shot ``compute(update(init(), y_true, y_pred))``.

Guarantees, for every metric here:

* States are additive (weighted sums, total weights, confusion counts; never ratios), so
  ``merge`` is addition, updating batch after batch equals one update on the concatenated
  batches, and ``jax.lax.psum(state, axis_name)`` over devices equals merging their states.
* All four methods trace under ``jit``, ``vmap``, ``pmap`` and ``lax.scan`` with no host
  sync; shapes are checked in Python at trace time (``ShapeError``).
* ``sample_weight`` of shape ``(batch,)`` (or broadcastable to the per-example values; a
  scalar weights every example) weights each example. A weight of 0 removes the example
  completely, even when its values are NaN or inf, so padded rows can be masked out.
* A rank-1 ``y`` holds one value per example; higher ranks are averaged over all axes but
  the first, as Keras does.
* ``compute`` returns a scalar, except where Keras returns one value per threshold or
  class: ``Precision`` / ``Recall`` with a list of ``thresholds``, ``F1Score(average=None)``.

    >>> import jax.numpy as jnp
    >>> from kerax import metrics
    >>> m = metrics.SparseCategoricalAccuracy()
    >>> s = m.update(m.init(), jnp.array([2, 1]), jnp.array([[.1, .6, .3], [.05, .95, 0.]]))
    >>> float(m.compute(s))
    0.5
"""

from __future__ import annotations

import dataclasses
import numbers
import types
from typing import Any, Callable, ClassVar, Sequence

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from kerax import errors
from kerax.core.layer import snake_case

State = dict  # {name: float32 jax.Array}, additive
_shape = errors.fmt_shape


# -- helpers (also used by kerax._confusion_metrics) -----------------------------------


def _f32(x: ArrayLike) -> jax.Array:
    return jnp.asarray(x, jnp.float32)


def _div_no_nan(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a / b``, and 0 where ``b == 0``."""
    return jnp.where(b == 0, 0.0, a / jnp.where(b == 0, 1.0, b))


def _same_rank(x1: jax.Array, x2: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Keras's ``squeeze_or_expand_to_same_rank``: fixes a rank gap of one trailing 1."""
    if x1.ndim == x2.ndim + 1 and x1.shape[-1] == 1:
        return (x1, x2[..., None]) if x2.ndim == 1 else (x1[..., 0], x2)
    if x2.ndim == x1.ndim + 1 and x2.shape[-1] == 1:
        return (x1[..., None], x2) if x1.ndim == 1 else (x1, x2[..., 0])
    return x1, x2


def _integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _weighted_sums(who: str, values: ArrayLike, sample_weight: ArrayLike | None,
                   reduce: Callable) -> tuple[jax.Array, jax.Array]:
    """``(sum of weighted per-example values, sum of weights)``, as Keras's ``Mean``.

    Values are reduced (mean or sum) over all axes but the first, or down to the weight's
    rank when ``sample_weight`` has several axes.
    """
    v = _f32(values)
    v = v[None] if v.ndim == 0 else v
    if sample_weight is None:
        v = reduce(v, axis=tuple(range(1, v.ndim)))
        return jnp.sum(v), jnp.asarray(v.shape[0], jnp.float32)
    w = _f32(sample_weight)
    v, w = _same_rank(v, jnp.broadcast_to(w, v.shape[:1]) if w.ndim == 0 else w)
    v = reduce(v, axis=tuple(range(w.ndim, v.ndim)))
    try:
        w = jnp.broadcast_to(w, v.shape)
    except ValueError:
        raise errors.ShapeError(
            f"{who}: expected sample_weight of shape {_shape(v.shape[:1])} (one weight per "
            f"example) or broadcastable to the values' shape {_shape(v.shape)}; received "
            f"sample_weight.shape={_shape(w.shape)}.") from None
    v = jnp.where(w != 0, v * w, 0.0)  # a zero weight drops NaN / inf values too
    rest = tuple(range(1, w.ndim))
    return jnp.sum(reduce(v, axis=rest)), jnp.sum(reduce(w, axis=rest))


# -- the protocol ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Metric:
    """Base class of kerax metrics; the module docstring states the protocol.

    Subclasses become frozen dataclasses by themselves (annotated class attributes are
    their config) and implement ``init``, ``update`` and ``compute``.

    Args:
      name: the name logs show; ``None`` gives Keras's default, the snake_case class name.
    """

    name: str | None = dataclasses.field(default=None, kw_only=True)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        dataclasses.dataclass(frozen=True)(cls)

    def __post_init__(self) -> None:
        if self.name is None:
            object.__setattr__(self, "name", snake_case(type(self).__name__))
        if not isinstance(self.name, str) or not self.name:
            raise errors.ConfigError(f"{type(self).__name__}: expected name to be a non-empty "
                                     f"string; received name={self.name!r}.")

    def init(self) -> State:
        """The empty state (also the reset)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement init")

    def update(self, state: State, y_true: ArrayLike, y_pred: ArrayLike,
               sample_weight: ArrayLike | None = None) -> State:
        """``state`` plus one batch's statistics."""
        raise NotImplementedError(f"{type(self).__name__} does not implement update")

    def merge(self, a: State, b: State) -> State:
        """The state of ``a``'s and ``b``'s data together: their elementwise sum."""
        return jax.tree.map(jnp.add, a, b)

    def compute(self, state: State) -> jax.Array:
        """The metric's value over all the data accumulated in ``state``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement compute")

    def __call__(self, *args: Any, **kwargs: Any) -> jax.Array:
        """One-shot value: ``compute(update(init(), *args, **kwargs))``."""
        return self.compute(self.update(self.init(), *args, **kwargs))

    def get_config(self) -> dict:
        """The fields as a JSON-able dict (tuples become lists)."""
        config = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}

    @classmethod
    def from_config(cls, config: dict) -> Metric:
        """Rebuilds a metric from :meth:`get_config`'s output."""
        valid = sorted(f.name for f in dataclasses.fields(cls))
        unknown = sorted(set(config) - set(valid)) if isinstance(config, dict) else None
        if unknown or unknown is None:
            raise errors.ConfigError(f"{cls.__name__}.from_config: expected a dict with keys "
                                     f"among {valid}; received {config!r}.")
        return cls(**config)

    def _who(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


# -- averages --------------------------------------------------------------------------


class _Averaged(Metric):
    """State ``{"total", "count"}``: weighted sum of per-example values, total weight."""

    def init(self) -> State:
        return {"total": jnp.zeros((), jnp.float32), "count": jnp.zeros((), jnp.float32)}

    def compute(self, state: State) -> jax.Array:
        return _div_no_nan(state["total"], state["count"])

    def _add(self, state: State, values: ArrayLike, sample_weight: ArrayLike | None) -> State:
        total, count = _weighted_sums(self._who(), values, sample_weight, jnp.mean)
        return {"total": state["total"] + total, "count": state["count"] + count}


class Mean(_Averaged):
    """Weighted mean of the values: ``update(state, values, sample_weight=None)``.

    Each row of ``values (batch, ...)`` is one example (averaged over its other axes); a
    scalar is one example, so ``update(s, batch_loss, sample_weight=batch_size)`` works.
    """

    def update(self, state: State, values: ArrayLike,  # type: ignore[override]
               sample_weight: ArrayLike | None = None) -> State:
        return self._add(state, values, sample_weight)


class Sum(Metric):
    """Weighted sum of the values: ``update(state, values, sample_weight=None)``."""

    def init(self) -> State:
        return {"total": jnp.zeros((), jnp.float32)}

    def update(self, state: State, values: ArrayLike,  # type: ignore[override]
               sample_weight: ArrayLike | None = None) -> State:
        return {"total": state["total"] + _weighted_sums(self._who(), values, sample_weight,
                                                         jnp.sum)[0]}

    def compute(self, state: State) -> jax.Array:
        return state["total"]


class _PerExample(_Averaged):
    """Averages ``self._fn(y_true, y_pred, **hyperparameters)`` over the examples."""

    _fn: ClassVar[Callable[..., jax.Array]]

    def values(self, y_true: ArrayLike, y_pred: ArrayLike) -> jax.Array:
        """The per-example values this metric averages: ``(batch,)`` or ``(batch, ...)``."""
        kwargs = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        del kwargs["name"]
        return self._fn(y_true, y_pred, **kwargs)

    def update(self, state: State, y_true: ArrayLike, y_pred: ArrayLike,
               sample_weight: ArrayLike | None = None) -> State:
        return self._add(state, self.values(y_true, y_pred), sample_weight)


def _as_loss(fn: Any) -> Any:
    """``fn`` if it is a kerax ``Loss`` object (its ``call`` is per-example), else None."""
    try:
        from kerax._loss_utils import Loss
    except ImportError:  # pragma: no cover - losses are part of kerax
        return None
    return fn if isinstance(fn, Loss) else None


class MeanMetricWrapper(_PerExample):
    """Weighted mean of ``fn(y_true, y_pred)``: any per-example function, a loss too.

    Args:
      fn: ``fn(y_true, y_pred) -> values`` of shape ``(batch,)`` or ``(batch, ...)``, or a
        kerax ``Loss`` object (its per-example ``call`` is used, not its reduction).
      name: defaults to ``fn.name`` or ``fn.__name__``.
    """

    fn: Callable[..., Any]

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise errors.ConfigError("MeanMetricWrapper: expected fn to be a callable "
                                     f"(y_true, y_pred) -> values; received fn={self.fn!r}.")
        if self.name is None:
            object.__setattr__(self, "name", _object_name(self.fn))
        super().__post_init__()

    def values(self, y_true: ArrayLike, y_pred: ArrayLike) -> jax.Array:
        loss = _as_loss(self.fn)
        return loss.call(y_true, y_pred) if loss is not None else self.fn(y_true, y_pred)

    def get_config(self) -> dict:
        if self.fn in _FUNCTIONS.values():
            return {"fn": self.fn.__name__, "name": self.name}
        from kerax import losses

        try:  # kerax losses (objects or built-in functions) save as their loss config
            return {"fn": losses.serialize(self.fn), "name": self.name}
        except errors.ConfigError:
            raise errors.ConfigError(
                f"{self._who()}: cannot serialize fn={self.fn!r}: only kerax's metric and "
                "loss functions can be saved by name. Write a kx.metrics.Metric subclass."
            ) from None

    @classmethod
    def from_config(cls, config: dict) -> MeanMetricWrapper:
        config = dict(config) if isinstance(config, dict) else config
        fn = config.get("fn") if isinstance(config, dict) else None
        if isinstance(fn, str):
            if fn not in _FUNCTIONS:
                raise errors.unknown_name("metric function", fn, _FUNCTIONS)
            config["fn"] = _FUNCTIONS[fn]
        elif isinstance(fn, dict):
            from kerax import losses

            config["fn"] = losses.get(fn)
        return super().from_config(config)  # type: ignore[return-value]


from kerax._accuracy_metrics import (  # noqa: E402
    _same_shape,
    _pair,
    _labels,
    _in_top_k,
    _row_mean,
    accuracy,
    binary_accuracy,
    categorical_accuracy,
    sparse_categorical_accuracy,
    top_k_categorical_accuracy,
    sparse_top_k_categorical_accuracy,
    _squared_error,
    _absolute_error,
    Accuracy,
    BinaryAccuracy,
    CategoricalAccuracy,
    SparseCategoricalAccuracy,
    _TopK,
    TopKCategoricalAccuracy,
    SparseTopKCategoricalAccuracy,
    MeanSquaredError,
    MeanAbsoluteError,
    RootMeanSquaredError,
)
from kerax._confusion_metrics import AUC, F1Score, Precision, Recall  # noqa: E402

# -- names -----------------------------------------------------------------------------

_CLASSES: tuple[type[Metric], ...] = (
    Mean, Sum, MeanMetricWrapper, Accuracy, BinaryAccuracy, CategoricalAccuracy,
    SparseCategoricalAccuracy, TopKCategoricalAccuracy, SparseTopKCategoricalAccuracy,
    MeanSquaredError, MeanAbsoluteError, RootMeanSquaredError, Precision, Recall, AUC,
    F1Score)
_CLASS_BY_NAME = types.MappingProxyType({c.__name__: c for c in _CLASSES})
_NAMED = tuple(c for c in _CLASSES if c not in (MeanMetricWrapper, Accuracy))
# Strings as keras.metrics.get: class names, snake_case names, aliases. "accuracy" and
# "acc" (any case, so "Accuracy" too, as Keras's compile) are resolved by get().
_BY_NAME = types.MappingProxyType({
    **{c.__name__: c for c in _NAMED}, **{snake_case(c.__name__): c for c in _NAMED},
    "mse": MeanSquaredError, "MSE": MeanSquaredError,
    "mae": MeanAbsoluteError, "MAE": MeanAbsoluteError})
_ACCURACY = ("accuracy", "acc")
_FUNCTIONS = types.MappingProxyType({f.__name__: f for f in (
    accuracy, binary_accuracy, categorical_accuracy, sparse_categorical_accuracy,
    top_k_categorical_accuracy, sparse_top_k_categorical_accuracy)})
_ACCURACY_BY_LOSS = types.MappingProxyType({
    "sparse_categorical_crossentropy": SparseCategoricalAccuracy,
    "categorical_crossentropy": CategoricalAccuracy,
    "categorical_focal_crossentropy": CategoricalAccuracy,
    "binary_crossentropy": BinaryAccuracy, "bce": BinaryAccuracy,
    "binary_focal_crossentropy": BinaryAccuracy})


def _object_name(obj: Any) -> str:
    """Keras's ``get_object_name``: ``obj.name``, else ``__name__``, else the class name."""
    name = getattr(obj, "name", None)
    if isinstance(name, str) and name:
        return name
    return getattr(obj, "__name__", None) or snake_case(type(obj).__name__)


def names() -> tuple[str, ...]:
    """Every string :func:`get` accepts, sorted."""
    return tuple(sorted({*_BY_NAME, *_ACCURACY}))


def serialize(metric: Metric) -> dict:
    """``{"class_name", "config"}``, which :func:`get` and :func:`deserialize` load."""
    if not isinstance(metric, Metric):
        raise errors.ConfigError(f"serialize expected a kx.metrics.Metric; received {metric!r}.")
    return {"class_name": type(metric).__name__, "config": metric.get_config()}


def deserialize(config: dict) -> Metric:
    """Rebuilds :func:`serialize`'s dict; class names resolve through this module only."""
    if not (isinstance(config, dict) and isinstance(config.get("class_name"), str)):
        raise errors.ConfigError("Expected a metric config {'class_name': str, 'config': "
                                 f"dict}}; received {config!r}.")
    if config["class_name"] not in _CLASS_BY_NAME:
        raise errors.unknown_name("metric", config["class_name"], _CLASS_BY_NAME)
    return _CLASS_BY_NAME[config["class_name"]].from_config(config.get("config", {}))


def _accuracy_for(loss: Any, output_shape: Sequence[int | None] | None) -> type[Metric]:
    loss_name = None if loss is None else loss if isinstance(loss, str) else _object_name(loss)
    key = None if loss_name is None else snake_case(loss_name)
    if key in _ACCURACY_BY_LOSS:
        return _ACCURACY_BY_LOSS[key]
    if output_shape is not None:
        shape = tuple(output_shape)
        return BinaryAccuracy if not shape or shape[-1] == 1 else CategoricalAccuracy
    raise errors.ConfigError(
        f"Cannot tell which accuracy 'accuracy' means from loss={loss_name!r} without the "
        "model's output shape. Pass output_shape= (or a crossentropy loss) to "
        "kx.metrics.get, or name the metric: 'binary_accuracy', 'categorical_accuracy' or "
        "'sparse_categorical_accuracy'.")


def get(identifier: str | dict | Metric | type | Callable[..., Any], loss: Any = None,
        output_shape: Sequence[int | None] | None = None) -> Metric:
    """Resolves a metric identifier to a :class:`Metric`, as Keras's ``compile`` does.

    Args:
      identifier: a name (see :func:`names`), a ``Metric`` (returned as it is) or
        ``Metric`` class, a ``{"class_name", "config"}`` dict, or a per-example function
        or kerax loss (wrapped in :class:`MeanMetricWrapper`, named ``fn.__name__``). A
        string names the metric (Keras 3): ``get("acc").name == "acc"``.
      loss: the loss, a name or an object with ``name`` / ``__name__``. It decides what
        ``"accuracy"`` / ``"acc"`` mean: ``sparse_categorical_crossentropy`` ->
        ``SparseCategoricalAccuracy``, ``categorical_crossentropy`` -> ``CategoricalAccuracy``,
        ``binary_crossentropy`` -> ``BinaryAccuracy``.
      output_shape: the model's output shape. With another loss, a last dimension of 1
        gives ``BinaryAccuracy``, any other ``CategoricalAccuracy``. It also gives an
        ``F1Score`` without ``num_classes`` its number of classes.

    Raises:
      UnknownNameError: an unknown name; the message lists the valid ones.
      ConfigError: an identifier of another kind, or "accuracy" that neither the loss nor
        ``output_shape`` decides.
    """
    if isinstance(identifier, Metric):
        metric = identifier
    elif isinstance(identifier, dict):
        metric = deserialize(identifier)
    elif isinstance(identifier, str):
        if identifier.lower() in _ACCURACY:
            metric = _accuracy_for(loss, output_shape)(name=identifier)
        elif identifier in _BY_NAME:
            metric = _BY_NAME[identifier](name=identifier)
        else:
            raise errors.unknown_name("metric", identifier, names())
    elif isinstance(identifier, type) and issubclass(identifier, Metric):
        metric = identifier()
    elif callable(identifier) and not isinstance(identifier, type):
        metric = MeanMetricWrapper(identifier)
    else:
        raise errors.ConfigError(
            "Expected a metric: a name such as 'accuracy', a kx.metrics.Metric, a config "
            f"dict or a function (y_true, y_pred); received {identifier!r}.")
    if isinstance(metric, F1Score) and metric.num_classes is None and output_shape:
        last = tuple(output_shape)[-1]
        if last is not None:
            metric = dataclasses.replace(metric, num_classes=int(last))
    return metric
