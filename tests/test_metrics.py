"""Tests for kerax.metrics: every metric against an independent float64 NumPy version of
its Keras definition, with sample weights (zeros drop examples), accumulation over
batches, merge, jit, vmap and pmap + psum; ``get`` resolution, configs and error messages.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kerax import losses, metrics
from kerax.errors import ConfigError, ShapeError, UnknownNameError

N, C = 48, 5  # N splits into 3 batches and over 4 devices
EPS = 1e-7


# -- data ------------------------------------------------------------------------------


def _data(kind, seed=0, n=N):
    r = np.random.default_rng(seed)
    f32 = np.float32
    if kind == "values":
        return r.normal(size=(n, 3)).astype(f32), None
    if kind == "exact":
        return r.integers(0, 3, (n, 2)).astype(f32), r.integers(0, 3, (n, 2)).astype(f32)
    if kind == "binary":
        return r.integers(0, 2, (n, 1)).astype(f32), r.random((n, 1)).astype(f32)
    if kind == "binary_flat":  # y_true (n,) against y_pred (n, 1)
        return r.integers(0, 2, (n,)).astype(f32), r.random((n, 1)).astype(f32)
    if kind == "scores":
        y = r.integers(0, 2, (n,))
        return y.astype(f32), (1 / (1 + np.exp(-(1.5 * y - 0.75 + r.normal(size=n))))).astype(f32)
    if kind == "logits":
        y = r.integers(0, 2, (n,))
        return y.astype(f32), (2 * y - 1 + 1.5 * r.normal(size=n)).astype(f32)
    if kind == "sparse":
        return r.integers(0, C, (n,)), r.random((n, C)).astype(f32)
    if kind == "sparse_col":
        return r.integers(0, C, (n, 1)), r.random((n, C)).astype(f32)
    if kind == "onehot":
        return np.eye(C, dtype=f32)[r.integers(0, C, n)], r.random((n, C)).astype(f32)
    if kind == "multilabel":
        return r.integers(0, 2, (n, C)).astype(f32), r.random((n, C)).astype(f32)
    if kind == "regression":
        return r.normal(size=(n, 3)).astype(f32), r.normal(size=(n, 3)).astype(f32)
    raise ValueError(kind)


def _weights(seed=1, n=N):
    w = np.random.default_rng(seed).uniform(0.2, 2.0, n).astype(np.float32)
    w[::5] = 0.0
    return w


# -- independent float64 NumPy references of the Keras definitions ---------------------


def _f64(*xs):
    return [None if x is None else np.asarray(x, np.float64) for x in xs]


def _rows(x):
    """Per-example mean over every axis but the first."""
    return x.reshape(len(x), -1).mean(axis=1)


def _avg(per_example, w):
    w = np.ones(len(per_example)) if w is None else w
    return np.sum(w * per_example) / np.sum(w)


def ref_mean(v, _, w):
    return _avg(_rows(v), w)


def ref_sum(v, _, w):
    w = np.ones(len(v)) if w is None else w
    return np.sum(w * v.reshape(len(v), -1).sum(axis=1))


def ref_accuracy(t, p, w):
    return _avg(_rows(t == p), w)


def ref_binary_accuracy(threshold):
    def ref(t, p, w):
        t, p = t.reshape(len(t), -1), p.reshape(len(p), -1)
        return _avg(_rows(t == (p > threshold)), w)
    return ref


def ref_categorical(t, p, w):
    return _avg(np.argmax(t, -1) == np.argmax(p, -1), w)


def ref_sparse(t, p, w):
    return _avg(t.reshape(len(t)) == np.argmax(p, -1), w)


def _in_top_k(target, p, k):
    target = target.astype(int)
    score = p[np.arange(len(p)), target]
    return (p > score[:, None]).sum(axis=1) < k


def ref_top_k(k, sparse):
    def ref(t, p, w):
        target = t.reshape(len(t)) if sparse else np.argmax(t, -1)
        return _avg(_in_top_k(target, p, k), w)
    return ref


def ref_mse(t, p, w):
    return _avg(_rows((t - p) ** 2), w)


def ref_mae(t, p, w):
    return _avg(_rows(np.abs(t - p)), w)


def ref_rmse(t, p, w):
    return np.sqrt(ref_mse(t, p, w))


def _cube(y_true, y_pred):  # a custom per-example function for MeanMetricWrapper
    return jnp.mean(jnp.abs(y_true - y_pred) ** 3, axis=-1)


def ref_cube(t, p, w):
    return _avg(np.mean(np.abs(t - p) ** 3, -1), w)


def _confusion(t, p, w, thresholds, class_id=None, top_k=None):
    """Keras's confusion counts: positive label = y_true != 0, predicted = y_pred > t."""
    t, p = t.reshape(p.shape) if t.size == p.size else t, p
    w = np.ones(len(p)) if w is None else w
    w = np.broadcast_to(w.reshape((-1,) + (1,) * (p.ndim - 1)), p.shape)
    if top_k is not None:
        order = np.argsort(-p, axis=-1)[..., :top_k]
        keep = np.zeros(p.shape, bool)
        np.put_along_axis(keep, order, True, axis=-1)
        p = np.where(keep, p, -1e10)
    if class_id is not None:
        t, p, w = t[..., class_id], p[..., class_id], w[..., class_id]
    pos, p, w = t.ravel() != 0, p.ravel(), w.ravel()
    above = p[None, :] > np.asarray(thresholds, np.float64)[:, None]
    tp = (above & pos) @ w
    fp = (above & ~pos) @ w
    fn = (~above & pos) @ w
    tn = (~above & ~pos) @ w
    return tp, fp, fn, tn


def _safe_div(a, b):
    return np.where(b == 0, 0.0, a / np.where(b == 0, 1.0, b))


def ref_precision(thresholds=None, class_id=None, top_k=None):
    def ref(t, p, w):
        thr = [0.5 if top_k is None else -1e10] if thresholds is None else np.atleast_1d(thresholds)
        tp, fp, _, _ = _confusion(t, p, w, thr, class_id, top_k)
        out = _safe_div(tp, tp + fp)
        return out[0] if len(thr) == 1 else out
    return ref


def ref_recall(thresholds=None):
    def ref(t, p, w):
        thr = [0.5] if thresholds is None else np.atleast_1d(thresholds)
        tp, _, fn, _ = _confusion(t, p, w, thr)
        out = _safe_div(tp, tp + fn)
        return out[0] if len(thr) == 1 else out
    return ref


def keras_auc(t, p, w, num_thresholds=200, curve="ROC", summation="interpolation",
              thresholds=None, from_logits=False):
    """Keras's AUC in NumPy: counts at fixed thresholds, then a Riemann sum."""
    if from_logits:
        p = 1 / (1 + np.exp(-p))
    if thresholds is None:
        inner = [(i + 1) / (num_thresholds - 1) for i in range(num_thresholds - 2)]
    else:
        inner = sorted(thresholds)
    thr = np.array([0.0 - EPS] + inner + [1.0 + EPS])
    tp, fp, fn, tn = _confusion(t, p, w, thr)
    if curve == "PR" and summation == "interpolation":  # Davis & Goadrich 2006
        dtp = tp[:-1] - tp[1:]
        pp = tp + fp
        dp = pp[:-1] - pp[1:]
        slope = _safe_div(dtp, np.maximum(dp, 0))
        intercept = tp[1:] - slope * pp[1:]
        both = (pp[:-1] > 0) & (pp[1:] > 0)
        ratio = np.where(both, _safe_div(pp[:-1], np.maximum(pp[1:], 0)), 1.0)
        with np.errstate(divide="ignore"):
            logs = np.where(ratio > 0, np.log(np.where(ratio > 0, ratio, 1.0)), 0.0)
        return np.sum(_safe_div(slope * (dtp + intercept * logs), np.maximum(tp[1:] + fn[1:], 0)))
    recall = _safe_div(tp, tp + fn)
    if curve == "ROC":
        x, y = _safe_div(fp, fp + tn), recall
    else:
        x, y = recall, _safe_div(tp, tp + fp)
    heights = {"interpolation": (y[:-1] + y[1:]) / 2, "minoring": np.minimum(y[:-1], y[1:]),
               "majoring": np.maximum(y[:-1], y[1:])}[summation]
    return np.sum((x[:-1] - x[1:]) * heights)


def ref_auc(**kwargs):
    return lambda t, p, w: keras_auc(t, p, w, **kwargs)


def exact_roc_auc(t, p):
    """Rank-based (Mann-Whitney) ROC AUC: P(score_pos > score_neg), ties counting 1/2."""
    pos, neg = p[t == 1], p[t == 0]
    diff = pos[:, None] - neg[None, :]
    return ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / (len(pos) * len(neg))


def ref_f1(average=None, threshold=None):
    def ref(t, p, w):
        w = np.ones(len(p)) if w is None else w
        if threshold is None:
            pred = (p >= p.max(-1, keepdims=True)) & (np.abs(p) > 1e-9)
        else:
            pred = p > threshold
        ww = w[:, None]
        tp = (pred * t * ww).sum(0)
        fp = (pred * (1 - t) * ww).sum(0)
        fn = ((1 - pred) * t * ww).sum(0)
        support = (t * ww).sum(0)
        if average == "micro":
            tp, fp, fn = tp.sum(), fp.sum(), fn.sum()
        prec, rec = tp / (tp + fp + EPS), tp / (tp + fn + EPS)
        f1 = 2 * prec * rec / (prec + rec + EPS)
        if average == "weighted":
            return np.sum(f1 * support / (support.sum() + EPS))
        return np.mean(f1) if average == "macro" else f1
    return ref


# -- the descriptor table: (id, metric, data kind, reference) --------------------------

CASES = [
    ("mean", metrics.Mean(), "values", ref_mean),
    ("sum", metrics.Sum(), "values", ref_sum),
    ("accuracy", metrics.Accuracy(), "exact", ref_accuracy),
    ("binary_accuracy", metrics.BinaryAccuracy(), "binary", ref_binary_accuracy(0.5)),
    ("binary_accuracy_flat", metrics.BinaryAccuracy(threshold=0.3), "binary_flat",
     ref_binary_accuracy(0.3)),
    ("categorical_accuracy", metrics.CategoricalAccuracy(), "onehot", ref_categorical),
    ("sparse_categorical_accuracy", metrics.SparseCategoricalAccuracy(), "sparse", ref_sparse),
    ("sparse_categorical_accuracy_col", metrics.SparseCategoricalAccuracy(), "sparse_col",
     ref_sparse),
    ("top_k", metrics.TopKCategoricalAccuracy(k=2), "onehot", ref_top_k(2, sparse=False)),
    ("sparse_top_k", metrics.SparseTopKCategoricalAccuracy(k=3), "sparse_col",
     ref_top_k(3, sparse=True)),
    ("mse", metrics.MeanSquaredError(), "regression", ref_mse),
    ("mae", metrics.MeanAbsoluteError(), "regression", ref_mae),
    ("rmse", metrics.RootMeanSquaredError(), "regression", ref_rmse),
    ("wrapper", metrics.MeanMetricWrapper(_cube), "regression", ref_cube),
    ("precision", metrics.Precision(), "scores", ref_precision()),
    ("precision_thresholds", metrics.Precision(thresholds=[0.2, 0.5, 0.8]), "multilabel",
     ref_precision([0.2, 0.5, 0.8])),
    ("precision_class_id", metrics.Precision(class_id=2), "multilabel",
     ref_precision(class_id=2)),
    ("precision_top_k", metrics.Precision(top_k=2), "multilabel", ref_precision(top_k=2)),
    ("recall", metrics.Recall(), "binary", ref_recall()),
    ("recall_thresholds", metrics.Recall(thresholds=[0.3, 0.6]), "multilabel",
     ref_recall([0.3, 0.6])),
    ("auc_roc", metrics.AUC(), "scores", ref_auc()),
    ("auc_pr", metrics.AUC(curve="PR"), "scores", ref_auc(curve="PR")),
    ("auc_roc_minoring", metrics.AUC(num_thresholds=50, summation_method="minoring"),
     "scores", ref_auc(num_thresholds=50, summation="minoring")),
    ("auc_pr_majoring", metrics.AUC(curve="pr", summation_method="majoring"), "multilabel",
     ref_auc(curve="PR", summation="majoring")),
    ("auc_thresholds", metrics.AUC(thresholds=[0.7, 0.1, 0.4]), "scores",
     ref_auc(thresholds=[0.1, 0.4, 0.7])),
    ("auc_logits", metrics.AUC(from_logits=True), "logits", ref_auc(from_logits=True)),
    ("f1_none", metrics.F1Score(num_classes=C), "multilabel", ref_f1()),
    ("f1_micro", metrics.F1Score("micro", 0.5, num_classes=C), "multilabel",
     ref_f1("micro", 0.5)),
    ("f1_macro", metrics.F1Score("macro", num_classes=C), "onehot", ref_f1("macro")),
    ("f1_weighted", metrics.F1Score("weighted", 0.4, num_classes=C), "multilabel",
     ref_f1("weighted", 0.4)),
]
IDS = [c[0] for c in CASES]


def _update(metric, state, t, p, w=None):
    if p is None:  # Mean / Sum take the values only
        return metric.update(state, t, sample_weight=w)
    return metric.update(state, t, p, sample_weight=w)


def _close(got, want, tol=1e-5, what=""):
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=tol, atol=tol,
                               err_msg=what)


def _split(x, k):
    """``k`` equal batches along the first axis, stacked: ``(k, n / k, ...)``."""
    return None if x is None else x.reshape((k, -1) + x.shape[1:])


def _all_ways(metric, t, p, w, t_pad, p_pad, w_pad):
    """Values and states computed every way the protocol promises to agree (traced once)."""
    m, init = metric, metric.init()
    padded = _update(m, init, t_pad, p_pad, w_pad)
    values = {"unweighted": m.compute(_update(m, init, t, p, None)),
              "weighted": m.compute(padded), "empty": m.compute(init)}
    # three batches; Mean and Sum have no y_pred, so a placeholder rides along
    batches = (_split(t, 3), jnp.zeros(3) if p is None else _split(p, 3), _split(w, 3))

    def step(state, batch):  # batch after batch, under lax.scan
        bt, bp, bw = batch
        return _update(m, state, bt, None if p is None else bp, bw), None

    per_batch = jax.vmap(lambda bt, bp, bw: _update(m, init, bt, None if p is None else bp, bw))(
        *batches)
    s0, s1, s2 = (jax.tree.map(lambda x, i=i: x[i], per_batch) for i in range(3))
    states = {"padded": padded, "batches": jax.lax.scan(step, init, batches)[0],
              "merge": m.merge(s0, m.merge(s1, s2)), "merge_reversed": m.merge(m.merge(s2, s1), s0),
              "merge_empty": m.merge(init, m.merge(init, padded))}
    return values, states


def _inputs(kind):
    """Data, weights (some 0), and the same with 8 zero-weight NaN rows appended."""
    t, p = _data(kind)
    w = _weights()
    pad_t, pad_p = _data(kind, seed=7, n=8)
    if p is None:
        pad_t = np.full_like(pad_t, np.nan)
    else:
        pad_p = np.full_like(pad_p, np.nan)
    padded = (np.concatenate([t, pad_t]), None if p is None else np.concatenate([p, pad_p]),
              np.concatenate([w, np.zeros(8, np.float32)]))
    return (t, p, w) + padded


# The test programs run once: LLVM -O0 halves their compile time, numerics unchanged.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


@pytest.fixture(scope="module")
def every_way():
    """Every case's `_all_ways`, traced under strict dtype promotion in one jit."""
    inputs = {name: _inputs(kind) for name, _, kind, _ in CASES}
    run = jax.jit(lambda a: {name: _all_ways(m, *a[name]) for name, m, _, _ in CASES},
                  compiler_options=FAST_COMPILE)
    with jax.numpy_dtype_promotion("strict"):
        return inputs, run(inputs)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_matches_reference_every_way(case, every_way):
    """The reference value, weighted and not; zero weights drop padded NaN rows; the states
    of one update, of lax.scan over batches, and of merging vmapped per-batch states (any
    order, with empty states) agree. All under jit and strict dtype promotion."""
    name, _, _, ref = case
    inputs, results = every_way
    t, p, w = inputs[name][:3]
    values, states = results[name]
    _close(values["unweighted"], ref(*_f64(t, p, None)), what="unweighted")
    _close(values["weighted"], ref(*_f64(t, p, w)), what="weighted, zero-weight padding")
    assert np.all(np.isfinite(np.asarray(values["empty"])))
    want = states.pop("padded")
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(want))
    for what, state in states.items():
        assert jax.tree.structure(state) == jax.tree.structure(want), what
        jax.tree.map(lambda a, b, what=what: _close(a, np.asarray(b), what=what), state, want)


@pytest.mark.skipif(jax.local_device_count() < 4, reason="needs 4 (simulated) devices")
def test_pmap_psum_equals_one_device():
    """Every metric at once, under pmap: per-device states summed with lax.psum give the
    one-device value (the reference, which test_matches_reference_every_way pins)."""
    data = {i: (*_data(kind), _weights()) for i, (_, _, kind, _) in enumerate(CASES)}

    def per_device(data):
        states = {i: _update(CASES[i][1], CASES[i][1].init(), *d) for i, d in data.items()}
        states = jax.lax.psum(states, "devices")
        return {i: CASES[i][1].compute(s) for i, s in states.items()}

    many = jax.pmap(per_device, axis_name="devices")(jax.tree.map(lambda x: _split(x, 4), data))
    for i, (name, _, _, ref) in enumerate(CASES):
        want = ref(*_f64(*data[i]))
        for device in range(4):
            _close(many[i][device], want, what=f"{name} on device {device}")


# (a custom function has no name to save: see test_get_errors)
@pytest.mark.parametrize("metric", [c[1] for c in CASES if c[0] != "wrapper"],
                         ids=[i for i in IDS if i != "wrapper"])
def test_config_round_trip(metric):
    config = metric.get_config()
    assert json.loads(json.dumps(config)) == config
    assert type(metric).from_config(config) == metric
    assert metrics.get(metrics.serialize(metric)) == metric


# -- Keras's documented examples -------------------------------------------------------

KERAS_EXAMPLES = [
    (metrics.Mean(), ([1, 3, 5, 7],), {"sample_weight": [1, 1, 0, 0]}, 2.0),
    (metrics.Sum(), ([1, 3, 5, 7],), {"sample_weight": [1, 1, 0, 0]}, 4.0),
    (metrics.Accuracy(), ([[1], [2], [3], [4]], [[0], [2], [3], [4]]), {}, 0.75),
    (metrics.BinaryAccuracy(), ([[1], [1], [0], [0]], [[0.98], [1], [0], [0.6]]),
     {"sample_weight": [1, 0, 0, 1]}, 0.5),
    (metrics.CategoricalAccuracy(), ([[0, 0, 1], [0, 1, 0]], [[0.1, 0.9, 0.8], [0.05, 0.95, 0]]),
     {"sample_weight": [0.7, 0.3]}, 0.3),
    (metrics.SparseCategoricalAccuracy(), ([[2], [1]], [[0.1, 0.6, 0.3], [0.05, 0.95, 0]]),
     {}, 0.5),
    (metrics.TopKCategoricalAccuracy(k=1),
     ([[0, 0, 1], [0, 1, 0]], [[0.1, 0.9, 0.8], [0.05, 0.95, 0]]), {}, 0.5),
    (metrics.SparseTopKCategoricalAccuracy(k=1), ([2, 1], [[0.1, 0.9, 0.8], [0.05, 0.95, 0]]),
     {"sample_weight": [0.7, 0.3]}, 0.3),
    (metrics.Precision(), ([0, 1, 1, 1], [1, 0, 1, 1]), {}, 2 / 3),
    (metrics.Precision(), ([0, 1, 1, 1], [1, 0, 1, 1]), {"sample_weight": [0, 0, 1, 0]}, 1.0),
    (metrics.Precision(top_k=2), ([0, 0, 1, 1], [1, 1, 1, 1]), {}, 0.0),
    (metrics.Precision(top_k=4), ([0, 0, 1, 1], [1, 1, 1, 1]), {}, 0.5),
    (metrics.Recall(), ([0, 1, 1, 1], [1, 0, 1, 1]), {}, 2 / 3),
    (metrics.AUC(num_thresholds=3), ([0, 0, 1, 1], [0, 0.5, 0.3, 0.9]), {}, 0.75),
    (metrics.AUC(num_thresholds=3), ([0, 0, 1, 1], [0, 0.5, 0.3, 0.9]),
     {"sample_weight": [1, 0, 0, 1]}, 1.0),
    (metrics.F1Score(threshold=0.5, num_classes=3),
     ([[1, 1, 1], [1, 0, 0], [1, 1, 0]], [[0.2, 0.6, 0.7], [0.2, 0.6, 0.6], [0.6, 0.8, 0.0]]),
     {}, [0.5, 0.8, 0.6666667]),
]


def test_keras_documented_values():
    """The examples of Keras's docstrings, eagerly (one metric) and all under one jit."""
    metric, args, kwargs, expected = KERAS_EXAMPLES[0]
    _close(metric(*args, **kwargs), expected)
    got = jax.jit(lambda: [m(*a, **kw) for m, a, kw, _ in KERAS_EXAMPLES])()
    for value, (metric, _, _, expected) in zip(got, KERAS_EXAMPLES):
        _close(value, expected, what=repr(metric))


def test_auc_close_to_exact_rank_auc():
    r = np.random.default_rng(3)
    y = r.integers(0, 2, 400)
    scores = 1 / (1 + np.exp(-(1.2 * y - 0.6 + r.normal(size=400))))
    exact = exact_roc_auc(y, scores)
    assert 0.7 < exact < 0.95
    got = float(jax.jit(metrics.AUC())(y, scores.astype(np.float32)))
    assert abs(got - exact) < 1e-2
    _close(got, keras_auc(y.astype(float), scores.astype(np.float32).astype(float), None))


def test_vector_results_and_scalar_mean_update():
    def run():
        m = metrics.Mean()  # a scalar batch loss weighted by its batch size, as trainers log
        s = m.update(m.update(m.init(), 2.0, sample_weight=4), 4.0, sample_weight=2)
        return (metrics.Precision(thresholds=[0.2, 0.5, 0.8])([0, 1, 1], [0.3, 0.6, 0.9]),
                metrics.Precision(thresholds=[0.5])([0, 1], [0.6, 0.9]),
                metrics.F1Score(num_classes=4)(jnp.eye(4), jnp.eye(4)), m.compute(s))

    several, one, f1, mean = jax.jit(run)()
    assert several.shape == (3,) and one.shape == () and f1.shape == (4,)
    _close(several, [2 / 3, 1.0, 1.0])
    _close(f1, np.ones(4))
    _close(mean, (2 * 4 + 4 * 2) / 6)
