"""Tests for kerax.losses: values against independent float64 NumPy formulas of the Keras 3
definitions, reductions and sample weights, numerical stability, the shape and label errors
of RELIABILITY A6-A9, the name table and config round trips, and jit / grad / vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kerax import losses
from kerax.errors import ConfigError, LabelError, ShapeError, UnknownNameError

EPS = 1e-7
HI = float(np.float32(1.0 - 1e-7))  # Keras clips in float32: 1 - 1e-7 rounds to 1 - 2**-23


# ---- Independent float64 references of the Keras 3 definitions --------------------------

def _clip(p):
    return np.clip(p, EPS, HI)


def _log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def _sigmoid(x):
    return np.exp(_log_sigmoid(x))


def _log_softmax(x):
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def _bce_terms(t, p, from_logits):
    if from_logits:
        return -(t * _log_sigmoid(p) + (1 - t) * _log_sigmoid(-p))
    p = _clip(p)
    return -(t * np.log(p) + (1 - t) * np.log(1 - p))


def _log_p(p, from_logits):
    return _log_softmax(p) if from_logits else np.log(_clip(p / p.sum(-1, keepdims=True)))


def r_bce(t, p, from_logits=False, label_smoothing=0.0):
    t = t * (1 - label_smoothing) + 0.5 * label_smoothing
    return _bce_terms(t, p, from_logits).mean(-1)


def r_binary_focal(t, p, apply_class_balancing=False, alpha=0.25, gamma=2.0,
                   from_logits=False, label_smoothing=0.0):
    t = t * (1 - label_smoothing) + 0.5 * label_smoothing
    bce = _bce_terms(t, p, from_logits)
    q = _sigmoid(p) if from_logits else p
    p_t = t * q + (1 - t) * (1 - q)
    out = (1 - p_t) ** gamma * bce
    if apply_class_balancing:
        out = (t * alpha + (1 - t) * (1 - alpha)) * out
    return out.mean(-1)


def r_cce(t, p, from_logits=False, label_smoothing=0.0):
    t = t * (1 - label_smoothing) + label_smoothing / t.shape[-1]
    return -(t * _log_p(p, from_logits)).sum(-1)


def r_sparse(y, p, from_logits=False, ignore_class=None):
    log_p = _log_p(p, from_logits)
    y = np.asarray(y).astype(int)
    keep = np.ones(y.shape, bool) if ignore_class is None else y != ignore_class
    out = -np.take_along_axis(log_p, np.where(keep, y, 0)[..., None], -1)[..., 0]
    return np.where(keep, out, 0.0)


def r_categorical_focal(t, p, alpha=0.25, gamma=2.0, from_logits=False, label_smoothing=0.0):
    t = t * (1 - label_smoothing) + label_smoothing / t.shape[-1]
    log_p = _log_p(p, from_logits)
    return (alpha * (1 - np.exp(log_p)) ** gamma * -t * log_p).sum(-1)


def r_huber(t, p, delta=1.0):
    e = np.abs(p - t)
    return np.where(e <= delta, 0.5 * e**2, delta * e - 0.5 * delta**2).mean(-1)


def _to_pm1(t):
    return 2 * t - 1 if np.all((t == 0) | (t == 1)) else t


def r_cosine(t, p):
    t = t / np.linalg.norm(t, axis=-1, keepdims=True)
    p = p / np.linalg.norm(p, axis=-1, keepdims=True)
    return -(t * p).sum(-1)


def r_kld(t, p):
    t, p = np.clip(t, EPS, 1), np.clip(p, EPS, 1)
    return (t * np.log(t / p)).sum(-1)


REFERENCE = {
    "mean_squared_error": lambda t, p: ((t - p) ** 2).mean(-1),
    "mean_absolute_error": lambda t, p: np.abs(t - p).mean(-1),
    "mean_absolute_percentage_error":
        lambda t, p: 100 * np.abs((t - p) / np.maximum(np.abs(t), EPS)).mean(-1),
    "mean_squared_logarithmic_error": lambda t, p: (
        (np.log(np.maximum(p, EPS) + 1) - np.log(np.maximum(t, EPS) + 1)) ** 2).mean(-1),
    "binary_crossentropy": r_bce,
    "binary_focal_crossentropy": r_binary_focal,
    "categorical_crossentropy": r_cce,
    "sparse_categorical_crossentropy": r_sparse,
    "categorical_focal_crossentropy": r_categorical_focal,
    "huber": r_huber,
    "log_cosh": lambda t, p: np.log(np.cosh(p - t)).mean(-1),
    "kl_divergence": r_kld,
    "poisson": lambda t, p: (p - t * np.log(p + EPS)).mean(-1),
    "cosine_similarity": r_cosine,
    "hinge": lambda t, p: np.maximum(1 - _to_pm1(t) * p, 0).mean(-1),
    "squared_hinge": lambda t, p: (np.maximum(1 - _to_pm1(t) * p, 0) ** 2).mean(-1),
    "categorical_hinge": lambda t, p: np.maximum(
        ((1 - t) * p).max(-1) - (t * p).sum(-1) + 1, 0),
}

# ---- Data: one batch of 4 examples, 5 features / classes --------------------------------

_rng = np.random.default_rng(0)
_N, _C = 4, 5
_LABELS = np.array([0, 3, 1, 4])
_logits = _rng.normal(size=(_N, _C)) * 2
_probs = np.exp(_log_softmax(_rng.normal(size=(_N, _C))))
DATA = {
    "real": (_rng.normal(size=(_N, _C)), _rng.normal(size=(_N, _C))),
    "positive": (_rng.uniform(0.1, 3, (_N, _C)), _rng.uniform(0.1, 3, (_N, _C))),
    "probs": (np.exp(_log_softmax(_rng.normal(size=(_N, _C)))), _probs),
    "binary": (_rng.integers(0, 2, (_N, _C)).astype(float), _rng.uniform(0.02, 0.98, (_N, _C))),
    "binary_logits": (_rng.uniform(0, 1, (_N, _C)), _logits),
    "onehot": (np.eye(_C)[_LABELS], _probs),
    "onehot_logits": (np.eye(_C)[_LABELS], _logits),
    "sparse": (_LABELS, _probs),
    "sparse_logits": (_LABELS, _logits),
    "pm1": (np.where(_rng.normal(size=(_N, _C)) > 0, 1.0, -1.0), _rng.normal(size=(_N, _C))),
    "zero_one": (_rng.integers(0, 2, (_N, _C)).astype(float), _rng.normal(size=(_N, _C))),
}

# (function name, data, kwargs): every loss, from_logits both ways, label smoothing.
CASES = [
    ("mean_squared_error", "real", {}),
    ("mean_absolute_error", "real", {}),
    ("mean_absolute_percentage_error", "real", {}),
    ("mean_squared_logarithmic_error", "positive", {}),
    ("binary_crossentropy", "binary", {}),
    ("binary_crossentropy", "binary", {"label_smoothing": 0.2}),
    ("binary_crossentropy", "binary_logits", {"from_logits": True}),
    ("binary_crossentropy", "binary_logits", {"from_logits": True, "label_smoothing": 0.1}),
    ("binary_focal_crossentropy", "binary", {}),
    ("binary_focal_crossentropy", "binary", {"apply_class_balancing": True, "alpha": 0.4,
                                             "gamma": 1.5, "label_smoothing": 0.1}),
    ("binary_focal_crossentropy", "binary_logits", {"from_logits": True,
                                                    "apply_class_balancing": True}),
    ("categorical_crossentropy", "onehot", {}),
    ("categorical_crossentropy", "probs", {"label_smoothing": 0.3}),
    ("categorical_crossentropy", "onehot_logits", {"from_logits": True}),
    ("categorical_crossentropy", "onehot_logits", {"from_logits": True, "label_smoothing": 0.1}),
    ("sparse_categorical_crossentropy", "sparse", {}),
    ("sparse_categorical_crossentropy", "sparse_logits", {"from_logits": True}),
    ("sparse_categorical_crossentropy", "sparse_logits", {"from_logits": True,
                                                          "ignore_class": 3}),
    ("categorical_focal_crossentropy", "onehot", {}),
    ("categorical_focal_crossentropy", "onehot_logits", {"from_logits": True, "gamma": 3.0,
                                                         "alpha": 0.5, "label_smoothing": 0.1}),
    ("huber", "real", {}),
    ("huber", "real", {"delta": 0.5}),
    ("log_cosh", "real", {}),
    ("kl_divergence", "probs", {}),
    ("poisson", "positive", {}),
    ("cosine_similarity", "real", {}),
    ("hinge", "pm1", {}),
    ("hinge", "zero_one", {}),
    ("squared_hinge", "pm1", {}),
    ("squared_hinge", "zero_one", {}),
    ("categorical_hinge", "onehot_logits", {}),
]
CLASS_OF = {
    "mean_squared_error": losses.MeanSquaredError,
    "mean_absolute_error": losses.MeanAbsoluteError,
    "mean_absolute_percentage_error": losses.MeanAbsolutePercentageError,
    "mean_squared_logarithmic_error": losses.MeanSquaredLogarithmicError,
    "binary_crossentropy": losses.BinaryCrossentropy,
    "binary_focal_crossentropy": losses.BinaryFocalCrossentropy,
    "categorical_crossentropy": losses.CategoricalCrossentropy,
    "sparse_categorical_crossentropy": losses.SparseCategoricalCrossentropy,
    "categorical_focal_crossentropy": losses.CategoricalFocalCrossentropy,
    "huber": losses.Huber,
    "log_cosh": losses.LogCosh,
    "kl_divergence": losses.KLDivergence,
    "poisson": losses.Poisson,
    "cosine_similarity": losses.CosineSimilarity,
    "hinge": losses.Hinge,
    "squared_hinge": losses.SquaredHinge,
    "categorical_hinge": losses.CategoricalHinge,
}
_IDS = [f"{n}-{d}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for n, d, kw in CASES]


def _data(kind):
    t, p = DATA[kind]
    return np.asarray(t, np.float32 if t.dtype.kind == "f" else t.dtype), p.astype(np.float32)


def _ref(name, kind, kw):
    t, p = _data(kind)
    return REFERENCE[name](t.astype(np.float64), p.astype(np.float64), **kw)


def test_every_loss_is_covered():
    assert {n for n, _, _ in CASES} == set(CLASS_OF) == set(REFERENCE)


@pytest.mark.parametrize("name,kind,kw", CASES, ids=_IDS)
def test_function_matches_reference(name, kind, kw):
    t, p = _data(kind)
    with jax.numpy_dtype_promotion("strict"):
        out = jax.jit(lambda a, b: getattr(losses, name)(a, b, **kw))(t, p)
    assert out.shape == (_N,) and out.dtype == jnp.float32
    np.testing.assert_allclose(out, _ref(name, kind, kw), rtol=2e-5, atol=2e-6)


def _reduce_ref(per, sw, reduction, keep):
    """Keras: weighted sum over the count of (unmasked) elements, or over the weights."""
    w = per * sw * keep
    if reduction == "none":
        return w
    if reduction == "sum":
        return w.sum()
    if reduction == "mean_with_sample_weight":
        return w.sum() / (sw * keep).sum()
    return w.sum() / keep.sum()


@pytest.mark.parametrize("name,kind,kw", CASES, ids=_IDS)
def test_class_reductions_and_sample_weight(name, kind, kw):
    t, p = _data(kind)
    per = _ref(name, kind, kw)
    sw = np.array([1.0, 3.0, 0.0, 0.5])
    keep = np.ones(_N)
    if kw.get("ignore_class") is not None:
        keep = (t != kw["ignore_class"]).astype(float)
        assert keep.sum() < _N
    for reduction in ("sum_over_batch_size", "sum", "none", "mean", "mean_with_sample_weight"):
        loss = CLASS_OF[name](**kw, reduction=reduction)
        got = loss(t, p, sample_weight=sw.astype(np.float32))
        want = _reduce_ref(per, sw, reduction, keep)
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6, err_msg=reduction)
    unweighted = CLASS_OF[name](**kw)(t, p)
    np.testing.assert_allclose(unweighted, _reduce_ref(per, 1.0, "mean", keep), rtol=2e-5,
                               atol=2e-6)


def test_sum_over_batch_size_counts_every_element_and_broadcasts_weights():
    t, p = _data("real")
    per = REFERENCE["mean_squared_error"](t.astype(float), p.astype(float))
    loss = losses.MeanSquaredError()
    np.testing.assert_allclose(loss(t, p, sample_weight=2.0), 2 * per.mean(), rtol=1e-5)
    np.testing.assert_allclose(loss(t, p, sample_weight=np.ones((_N, 1)) * 3), 3 * per.mean(),
                               rtol=1e-5)
    # (batch, time, d) outputs: per-example losses (batch, time), weights (batch,).
    t3, p3 = t.reshape(2, 2, _C), p.reshape(2, 2, _C)
    got = loss(t3, p3, sample_weight=np.array([1.0, 0.0], np.float32))
    np.testing.assert_allclose(got, per[:2].sum() / 4, rtol=1e-5)


def test_rank_adjustment_as_keras():
    y = np.array([1.0, 2.0, 3.0], np.float32)
    out = np.array([[1.5], [2.0], [2.0]], np.float32)
    np.testing.assert_allclose(losses.mse(y, out), [0.25, 0.0, 1.0])
    np.testing.assert_allclose(losses.mse(out, y), [0.25, 0.0, 1.0])
    np.testing.assert_allclose(losses.MeanSquaredError()(y, out), 1.25 / 3, rtol=1e-6)
    labels = np.array([[0], [3], [1], [4]])
    np.testing.assert_allclose(losses.sparse_categorical_crossentropy(labels, _probs),
                               r_sparse(_LABELS, _probs), rtol=1e-5)


def test_aliases_are_the_keras_functions():
    assert losses.mse is losses.mean_squared_error
    assert losses.mae is losses.mean_absolute_error
    assert losses.mape is losses.mean_absolute_percentage_error
    assert losses.msle is losses.mean_squared_logarithmic_error
    assert losses.kld is losses.kullback_leibler_divergence is losses.kl_divergence
    assert losses.logcosh is losses.log_cosh


def test_cosine_similarity_is_negative_and_safe_at_zero():
    v = np.array([[1.0, 2.0, 3.0]], np.float32)
    np.testing.assert_allclose(losses.cosine_similarity(v, 2 * v), [-1.0], rtol=1e-6)
    zero = np.zeros((1, 3), np.float32)
    assert float(losses.cosine_similarity(zero, v)[0]) == 0.0
    g = jax.jit(jax.grad(lambda p: losses.cosine_similarity(v, p).sum()))(zero)
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(losses.cosine_similarity(v.T, v.T, axis=0), [-1.0], rtol=1e-6)


# ---- Numerical stability ------------------------------------------------------------------

def test_huge_logits_are_finite_and_exact():
    y = np.array([[1.0, 0.0, 1.0, 0.0]], np.float32)
    x = np.array([[1e4, -1e4, -1e4, 1e4]], np.float32)
    np.testing.assert_allclose(losses.binary_crossentropy(y, x, from_logits=True), [5e3])
    onehot = np.array([[0.0, 0.0, 1.0]], np.float32)
    big = np.array([[1e4, 0.0, -1e4]], np.float32)
    np.testing.assert_allclose(losses.categorical_crossentropy(onehot, big, from_logits=True),
                               [2e4])
    np.testing.assert_allclose(losses.sparse_categorical_crossentropy([2], big, from_logits=True),
                               [2e4])
    np.testing.assert_allclose(
        losses.categorical_focal_crossentropy(onehot, big, from_logits=True), [0.25 * 2e4])
    np.testing.assert_allclose(
        losses.binary_focal_crossentropy(y, x, from_logits=True), [5e3])
    np.testing.assert_allclose(losses.log_cosh(np.zeros((1, 1)), np.full((1, 1), 1e4)),
                               [1e4 - np.log(2.0)], rtol=1e-6)
    for fn, t, p in [(losses.binary_crossentropy, y, x), (losses.categorical_crossentropy,
                                                            onehot, big)]:
        g = jax.jit(jax.grad(lambda p_: fn(t, p_, from_logits=True).sum()))(jnp.asarray(p))
        assert np.all(np.isfinite(g))
    # gamma=0 (plain cross-entropy) where p == label exactly: the focal factor 0**0 has a
    # finite gradient.
    for gamma in (0.0, 2.0):
        g = jax.jit(jax.grad(lambda p_: losses.categorical_focal_crossentropy(
            onehot, p_, gamma=gamma, from_logits=True).sum()))(jnp.asarray(-big))
        assert np.all(np.isfinite(g))


def test_saturated_probabilities_are_clipped_as_keras():
    y = np.array([[1.0, 0.0]], np.float32)
    p = np.array([[0.0, 1.0]], np.float32)
    want = -np.log(np.float64(np.float32(1e-7)))  # about 16.1, not inf
    np.testing.assert_allclose(losses.binary_crossentropy(y, p), r_bce(y, p), rtol=1e-5)
    np.testing.assert_allclose(losses.binary_crossentropy(y[:, :1], p[:, :1]), [want], rtol=1e-5)
    np.testing.assert_allclose(losses.categorical_crossentropy(y, p), [want], rtol=1e-5)
    g = jax.jit(jax.grad(lambda q: losses.categorical_crossentropy(y, q).sum()))(p)
    assert np.all(np.isfinite(g))


# ---- dtypes and transformations -------------------------------------------------------------

def test_dtypes_float32_out_never_float64():
    t, p = _data("real")
    assert losses.mse(t.astype(np.float64), p).dtype == jnp.float32
    assert losses.mse(t, p.astype(jnp.bfloat16)).dtype == jnp.float32
    assert losses.mse(t.astype(int), p.astype(int)).dtype == jnp.float32
    assert losses.sparse_categorical_crossentropy(_LABELS.astype(np.uint8), p).dtype == jnp.float32
    with jax.numpy_dtype_promotion("strict"):
        assert losses.CategoricalCrossentropy(label_smoothing=0.1)(
            *_data("onehot"), sample_weight=np.ones(_N, np.float32)).dtype == jnp.float32
        assert losses.SparseCategoricalCrossentropy(ignore_class=1)(
            *_data("sparse")).dtype == jnp.float32


def test_jit_grad_vmap():
    t, p = _data("onehot_logits")
    loss = losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)
    eager = loss(t, p)
    np.testing.assert_allclose(jax.jit(loss)(t, p), eager, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(lambda a, b, f: f(a, b), static_argnums=2)(t, p, loss),
                               eager, rtol=1e-6)
    g = jax.grad(lambda q: loss(t, q))(p)
    # d/dlogits of mean CE = (softmax - smoothed target) / batch
    smoothed = t * 0.9 + 0.1 / _C
    np.testing.assert_allclose(g, (np.exp(_log_softmax(p.astype(float))) - smoothed) / _N,
                               rtol=1e-4, atol=1e-6)
    per = jax.vmap(losses.sparse_categorical_crossentropy, in_axes=(0, 0, None))(
        _LABELS, p, True)
    np.testing.assert_allclose(per, r_sparse(_LABELS, p.astype(float), True), rtol=1e-5)


@pytest.mark.parametrize("name,kind,kw", CASES, ids=_IDS)
def test_grad_is_finite(name, kind, kw):
    t, p = _data(kind)
    g = jax.jit(jax.grad(lambda q: CLASS_OF[name](**kw)(t, q)))(jnp.asarray(p))
    assert g.shape == p.shape and np.all(np.isfinite(g))
