"""Confusion-matrix metrics with Keras 3 semantics: Precision, Recall, AUC, F1Score.

Private: use them through :mod:`kerax.metrics`, which documents the protocol. Their states
are weighted confusion-matrix counts (true/false positives/negatives per threshold or per
class), so they add under ``merge`` and ``jax.lax.psum`` like every other metric state.
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from kerax import errors
from kerax.metrics import Metric, State, _div_no_nan, _f32, _integer, _same_rank

_EPSILON = 1e-7  # keras.backend.epsilon()
_NEG_INF = -1e10  # Keras's threshold when only top_k decides


def _check_thresholds(who: str, thresholds: Any) -> float | tuple[float, ...] | None:
    """Validates thresholds in [0, 1]; returns a float, a tuple of floats or None."""
    if thresholds is None:
        return None
    many = isinstance(thresholds, (list, tuple, np.ndarray))
    values = list(np.asarray(thresholds, dtype=object).ravel()) if many else [thresholds]
    bad = [t for t in values if not isinstance(t, numbers.Real) or not 0 <= t <= 1]
    if bad or not values:
        raise errors.ConfigError(
            f"{who}: expected thresholds in [0, 1] (a float or a list of floats); received "
            f"thresholds={thresholds!r}."
        )
    return tuple(float(t) for t in values) if many else float(thresholds)


def _positive_int(who: str, field: str, value: Any, minimum: int) -> None:
    if value is not None and (not _integer(value) or value < minimum):
        raise errors.ConfigError(
            f"{who}: expected {field} to be an integer >= {minimum} or None; received "
            f"{field}={value!r}."
        )


def _broadcast_weights(who: str, sample_weight: ArrayLike | None, shape: tuple) -> jax.Array:
    """Weights of ``shape``: ``(batch,)`` weights get trailing axes, then broadcast."""
    if sample_weight is None:
        return jnp.ones(shape, jnp.float32)
    w = _f32(sample_weight)
    if 0 < w.ndim < len(shape):
        w = w.reshape(w.shape + (1,) * (len(shape) - w.ndim))
    try:
        return jnp.broadcast_to(w, shape)
    except ValueError:
        raise errors.ShapeError(
            f"{who}: expected sample_weight of shape {errors.fmt_shape(shape[:1])} (one "
            f"weight per example) or one that broadcasts to {errors.fmt_shape(shape)}; "
            f"received sample_weight.shape={errors.fmt_shape(w.shape)}."
        ) from None


def _flat_inputs(who, y_true, y_pred, sample_weight, class_id=None, top_k=None):
    """Flattened ``(positive labels: bool, scores, weights)``, as Keras's confusion update."""
    y_pred, y_true = _same_rank(_f32(y_pred), _f32(y_true))
    if y_true.shape != y_pred.shape:
        raise errors.ShapeError(
            f"{who}: expected y_true and y_pred of the same shape; received y_true.shape="
            f"{errors.fmt_shape(y_true.shape)}, y_pred.shape={errors.fmt_shape(y_pred.shape)}."
        )
    w = _broadcast_weights(who, sample_weight, y_pred.shape)
    if top_k is not None:  # keep the top_k scores of the last axis, the rest -> NEG_INF
        _, idx = jax.lax.top_k(y_pred, top_k)
        keep = jnp.sum(jax.nn.one_hot(idx, y_pred.shape[-1]), axis=-2) > 0
        y_pred = jnp.where(keep, y_pred, _NEG_INF)
    if class_id is not None:
        if y_pred.ndim < 2 or class_id >= y_pred.shape[-1]:
            raise errors.ShapeError(
                f"{who}: class_id={class_id} needs y_pred of shape (batch, num_classes) with "
                f"num_classes > {class_id}; received y_pred.shape="
                f"{errors.fmt_shape(y_pred.shape)}."
            )
        y_true, y_pred, w = (a[..., class_id] for a in (y_true, y_pred, w))
    return y_true.ravel() != 0, y_pred.ravel(), w.ravel()


def _counts_above(thresholds: jax.Array, positive, scores, weights):
    """Weighted ``(tp, fp, fn, tn)`` per threshold, where predicted = score > threshold."""
    above = scores[None, :] > thresholds[:, None]
    pos_w = jnp.where(positive, weights, 0.0)
    neg_w = jnp.where(positive, 0.0, weights)

    def count(w: jax.Array, mask: jax.Array) -> jax.Array:
        return jnp.sum(jnp.where(mask, w, 0.0), axis=1)

    return count(pos_w, above), count(neg_w, above), count(pos_w, ~above), count(neg_w, ~above)


class _Thresholded(Metric):
    """Precision / Recall: counts at each threshold (``y_pred > threshold``)."""

    thresholds: float | tuple[float, ...] | None = None
    top_k: int | None = None
    class_id: int | None = None

    _KEYS = ("true_positives", "false_positives")

    def __post_init__(self) -> None:
        who = type(self).__name__
        object.__setattr__(self, "thresholds", _check_thresholds(who, self.thresholds))
        _positive_int(who, "top_k", self.top_k, 1)
        _positive_int(who, "class_id", self.class_id, 0)
        super().__post_init__()

    def _threshold_values(self) -> tuple[float, ...]:
        if self.thresholds is None:
            return (0.5,) if self.top_k is None else (_NEG_INF,)
        return self.thresholds if isinstance(self.thresholds, tuple) else (self.thresholds,)

    def init(self) -> State:
        n = len(self._threshold_values())
        return {k: jnp.zeros((n,), jnp.float32) for k in self._KEYS}

    def update(self, state: State, y_true: ArrayLike, y_pred: ArrayLike,
               sample_weight: ArrayLike | None = None) -> State:
        flat = _flat_inputs(self._who(), y_true, y_pred, sample_weight, self.class_id,
                            self.top_k)
        thresholds = jnp.asarray(self._threshold_values(), jnp.float32)
        tp, fp, fn, _ = _counts_above(thresholds, *flat)
        new = {"true_positives": tp, "false_positives": fp, "false_negatives": fn}
        return {k: state[k] + new[k] for k in self._KEYS}

    def _result(self, values: jax.Array) -> jax.Array:
        return values[0] if len(self._threshold_values()) == 1 else values


class Precision(_Thresholded):
    """``tp / (tp + fp)`` at each threshold (default 0.5; ``y_pred > threshold``).

    Args:
      thresholds: a float or a list of floats in [0, 1]; a list gives one value each.
      top_k: only the ``top_k`` highest scores of each example may count as positive.
      class_id: only this class (the last axis of ``y_pred``) is counted.
    """

    def compute(self, state: State) -> jax.Array:
        tp, fp = state["true_positives"], state["false_positives"]
        return self._result(_div_no_nan(tp, tp + fp))


class Recall(_Thresholded):
    """``tp / (tp + fn)`` at each threshold; arguments as :class:`Precision`."""

    _KEYS = ("true_positives", "false_negatives")

    def compute(self, state: State) -> jax.Array:
        tp, fn = state["true_positives"], state["false_negatives"]
        return self._result(_div_no_nan(tp, tp + fn))


class AUC(Metric):
    """Area under the ROC or PR curve, from confusion counts at fixed thresholds (Keras).

    Thresholds are ``num_thresholds`` evenly spaced points, ``[0 - 1e-7, 1/(n-1), ...,
    1 + 1e-7]``, or the given ``thresholds`` plus those two endpoints. ROC is summed with
    the trapezoid rule (``summation_method="interpolation"``); PR with Davis & Goadrich's
    interpolation; ``"minoring"`` / ``"majoring"`` take left / right Riemann sums.

    Args:
      num_thresholds: > 1; ignored when ``thresholds`` is given.
      curve: ``"ROC"`` or ``"PR"``.
      summation_method: ``"interpolation"``, ``"minoring"`` or ``"majoring"``.
      thresholds: optional list of thresholds in [0, 1].
      from_logits: apply a sigmoid to ``y_pred`` first.
    """

    num_thresholds: int = 200
    curve: str = "ROC"
    summation_method: str = "interpolation"
    thresholds: tuple[float, ...] | None = None
    from_logits: bool = False

    _CURVES = ("ROC", "PR")
    _SUMMATIONS = ("interpolation", "minoring", "majoring")

    def __post_init__(self) -> None:
        if not _integer(self.num_thresholds) or self.num_thresholds <= 1:
            raise errors.ConfigError(
                f"AUC: expected num_thresholds to be an integer > 1; received "
                f"num_thresholds={self.num_thresholds!r}."
            )
        if str(self.curve).upper() not in self._CURVES:
            raise errors.ConfigError(
                f"AUC: expected curve to be one of {list(self._CURVES)}; received "
                f"curve={self.curve!r}."
            )
        if str(self.summation_method).lower() not in self._SUMMATIONS:
            raise errors.ConfigError(
                f"AUC: expected summation_method to be one of {list(self._SUMMATIONS)}; "
                f"received summation_method={self.summation_method!r}."
            )
        thresholds = self.thresholds
        if thresholds is not None:
            thresholds = _check_thresholds("AUC", list(np.atleast_1d(thresholds)))
        object.__setattr__(self, "curve", self.curve.upper())
        object.__setattr__(self, "summation_method", self.summation_method.lower())
        object.__setattr__(self, "thresholds", thresholds)
        super().__post_init__()

    def threshold_values(self) -> np.ndarray:
        """All thresholds, endpoints included, as float32."""
        if self.thresholds is None:
            n = self.num_thresholds
            inner = [(i + 1) / (n - 1) for i in range(n - 2)]
        else:
            inner = sorted(self.thresholds)
        return np.array([0.0 - _EPSILON, *inner, 1.0 + _EPSILON], np.float32)

    def init(self) -> State:
        n = len(self.threshold_values())
        keys = ("true_positives", "false_positives", "true_negatives", "false_negatives")
        return {k: jnp.zeros((n,), jnp.float32) for k in keys}

    def update(self, state: State, y_true: ArrayLike, y_pred: ArrayLike,
               sample_weight: ArrayLike | None = None) -> State:
        if self.from_logits:
            y_pred = jax.nn.sigmoid(_f32(y_pred))
        positive, scores, weights = _flat_inputs(self._who(), y_true, y_pred, sample_weight)
        if self.thresholds is None:
            # Evenly spaced thresholds: one bucket per score, O(batch + thresholds**2).
            # Score p counts above threshold i iff i <= ceil(p * (n - 1)) - 1 (as Keras).
            n = self.num_thresholds
            bucket = jnp.ceil(jnp.clip(scores, 0.0, 1.0) * (n - 1)) - 1
            bucket = jnp.maximum(bucket, 0).astype(jnp.int32)
            pos_w = jnp.where(positive, weights, 0.0)
            neg_w = jnp.where(positive, 0.0, weights)

            above = jnp.arange(n)[None, :] >= jnp.arange(n)[:, None]  # bucket j >= i

            def count(w: jax.Array, mask: jax.Array) -> jax.Array:
                per_bucket = jnp.zeros((n,), jnp.float32).at[bucket].add(w)
                return jnp.sum(jnp.where(mask, per_bucket[None, :], 0.0), axis=1)

            tp, fp = count(pos_w, above), count(neg_w, above)
            fn, tn = count(pos_w, ~above), count(neg_w, ~above)
        else:
            thresholds = jnp.asarray(self.threshold_values())
            tp, fp, fn, tn = _counts_above(thresholds, positive, scores, weights)
        new = {"true_positives": tp, "false_positives": fp,
               "true_negatives": tn, "false_negatives": fn}
        return {k: state[k] + new[k] for k in state}

    def compute(self, state: State) -> jax.Array:
        tp, fp = state["true_positives"], state["false_positives"]
        tn, fn = state["true_negatives"], state["false_negatives"]
        if self.curve == "PR" and self.summation_method == "interpolation":
            return _interpolate_pr_auc(tp, fp, fn)
        recall = _div_no_nan(tp, tp + fn)
        if self.curve == "ROC":
            x, y = _div_no_nan(fp, fp + tn), recall
        else:
            x, y = recall, _div_no_nan(tp, tp + fp)
        if self.summation_method == "interpolation":
            heights = (y[:-1] + y[1:]) / 2.0
        elif self.summation_method == "minoring":
            heights = jnp.minimum(y[:-1], y[1:])
        else:
            heights = jnp.maximum(y[:-1], y[1:])
        return jnp.sum((x[:-1] - x[1:]) * heights)


def _interpolate_pr_auc(tp: jax.Array, fp: jax.Array, fn: jax.Array) -> jax.Array:
    """PR AUC interpolating tp and fp linearly between thresholds (Davis & Goadrich)."""
    dtp = tp[:-1] - tp[1:]
    p = tp + fp
    dp = p[:-1] - p[1:]
    slope = _div_no_nan(dtp, jnp.maximum(dp, 0.0))
    intercept = tp[1:] - slope * p[1:]
    both = (p[:-1] > 0) & (p[1:] > 0)
    ratio = jnp.where(both, _div_no_nan(p[:-1], jnp.maximum(p[1:], 0.0)), 1.0)
    ratio = jnp.where(ratio > 0, ratio, 1.0)  # log(0) is masked out by `both` anyway
    increments = _div_no_nan(slope * (dtp + intercept * jnp.log(ratio)),
                             jnp.maximum(tp[1:] + fn[1:], 0.0))
    return jnp.sum(increments)


class F1Score(Metric):
    """F1 score, ``2 * precision * recall / (precision + recall)``, Keras 3 semantics.

    Inputs are ``(batch, num_classes)``: one-hot or multi-label ``y_true`` and scores
    ``y_pred``. ``y_pred > threshold`` is positive; with ``threshold=None`` the largest
    score of each row is (and any score equal to it, unless 0).

    Args:
      average: ``None`` (one score per class, shape ``(num_classes,)``), ``"micro"``
        (global counts), ``"macro"`` (mean of the class scores) or ``"weighted"`` (mean
        weighted by each class's support).
      threshold: ``None`` or a float in (0, 1].
      num_classes: the size of the state; ``kx.metrics.get(metric, output_shape=...)``
        fills it in from the model's output shape. ``init`` needs it.
    """

    average: str | None = None
    threshold: float | None = None
    num_classes: int | None = None

    _KEYS = ("true_positives", "false_positives", "false_negatives", "intermediate_weights")

    def __post_init__(self) -> None:
        if self.average not in (None, "micro", "macro", "weighted"):
            raise errors.ConfigError(
                "F1Score: expected average to be one of None, 'micro', 'macro', 'weighted'; "
                f"received average={self.average!r}."
            )
        t = self.threshold
        if t is not None and (not isinstance(t, numbers.Real) or isinstance(t, bool)
                              or not 0 < t <= 1):
            raise errors.ConfigError(
                f"F1Score: expected threshold to be None or a float with 0 < threshold <= 1; "
                f"received threshold={t!r}."
            )
        _positive_int("F1Score", "num_classes", self.num_classes, 1)
        super().__post_init__()

    def init(self) -> State:
        if self.num_classes is None:
            raise errors.ConfigError(
                f"{self._who()}: num_classes is unknown, so the state cannot be created. "
                "Pass F1Score(num_classes=C), or resolve the metric with "
                "kx.metrics.get(metric, output_shape=model_output_shape)."
            )
        return {k: jnp.zeros((self.num_classes,), jnp.float32) for k in self._KEYS}

    def update(self, state: State, y_true: ArrayLike, y_pred: ArrayLike,
               sample_weight: ArrayLike | None = None) -> State:
        y_true, y_pred = _f32(y_true), _f32(y_pred)
        want = (y_pred.shape[0] if y_pred.ndim else None, self.num_classes)
        if y_pred.ndim != 2 or y_true.shape != y_pred.shape or y_pred.shape[1] != want[1]:
            raise errors.ShapeError(
                f"{self._who()}: expected y_true and y_pred of shape (batch, num_classes) = "
                f"{errors.fmt_shape(want)}; received y_true.shape="
                f"{errors.fmt_shape(y_true.shape)}, y_pred.shape="
                f"{errors.fmt_shape(y_pred.shape)}."
            )
        if self.threshold is None:
            top = jnp.max(y_pred, axis=-1, keepdims=True)
            pred = (y_pred >= top) & (jnp.abs(y_pred) > 1e-9)
        else:
            pred = y_pred > self.threshold
        pred = pred.astype(jnp.float32)
        w = _broadcast_weights(self._who(), sample_weight, y_pred.shape)

        def total(x: jax.Array) -> jax.Array:
            return jnp.sum(jnp.where(w != 0, x * w, 0.0), axis=0)

        new = (total(pred * y_true), total(pred * (1 - y_true)), total((1 - pred) * y_true),
               total(y_true))
        return {k: state[k] + v for k, v in zip(self._KEYS, new)}

    def compute(self, state: State) -> jax.Array:
        tp, fp, fn, support = (state[k] for k in self._KEYS)
        if self.average == "micro":
            tp, fp, fn = jnp.sum(tp), jnp.sum(fp), jnp.sum(fn)
        precision = tp / (tp + fp + _EPSILON)
        recall = tp / (tp + fn + _EPSILON)
        f1 = 2.0 * precision * recall / (precision + recall + _EPSILON)
        if self.average == "weighted":
            return jnp.sum(f1 * support / (jnp.sum(support) + _EPSILON))
        if self.average == "macro":
            return jnp.mean(f1)
        return f1
