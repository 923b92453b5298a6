"""kx.privacy: per-example gradients, DP-SGD steps and the accountant, checked against
independent references (a Python loop of jax.grad, NumPy clipping and averaging, plain SGD,
published epsilon values, the closed-form Gaussian mechanism)."""

from __future__ import annotations

import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

import kerax as kx
from kerax import errors, layers
from kerax.privacy import accountant
from kerax.privacy.dpsgd import dp_value_and_grad
from kerax.privacy.per_example import grouped_grads, loss_from_spec

SCE = kx.losses.SparseCategoricalCrossentropy(from_logits=True)


def _flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(a)) for a in jax.tree.leaves(tree)])


def _rows(tree, i) -> np.ndarray:
    return _flat(jax.tree.map(lambda a: a[i], tree))


def _mlp(dropout: float = 0.0):
    return kx.Sequential([layers.Dense(8, activation="tanh"), layers.Dropout(dropout), layers.Dense(3)])


def _data(n=10, d=5, seed=0):
    rs = np.random.RandomState(seed)
    return rs.randn(n, d).astype(np.float32), rs.randint(0, 3, n).astype(np.int32)


def _loop_grads(model, params, state, x, y, loss=SCE, sw=None, rng=None):
    """The reference: one jax.grad per example, each example a batch of one."""
    loss_obj = kx.losses.get(loss)

    @jax.jit
    def one(p, xi, yi, wi, i):
        key = None if rng is None else jax.random.fold_in(rng, i)
        f = lambda p: jnp.mean(loss_obj.call(yi, model.apply(p, state, xi, rng=key, training=True)[0])) * wi
        return jax.grad(f)(p)

    w = np.ones(len(x), np.float32) if sw is None else sw
    return np.stack([_flat(one(params, x[i:i + 1], y[i:i + 1], w[i], i)) for i in range(len(x))])


@pytest.fixture(scope="module")
def mlp():
    model = _mlp()
    params, state = model.init(jax.random.key(0), jnp.zeros((1, 5)))
    return model, params, state


# -- per-example gradients -----------------------------------------------------------------------


def test_per_example_grads_equal_a_loop_mlp_with_weights_and_dropout():
    model = _mlp(dropout=0.3)
    params, state = model.init(jax.random.key(0), jnp.zeros((1, 5)))
    x, y = _data(6)
    sw = np.linspace(0.5, 2.0, 6).astype(np.float32)
    rng = jax.random.key(7)
    grads = jax.jit(kx.privacy.per_example_grads(model, SCE))(params, state, x, y, sw, rng)
    assert grads["dense"]["kernel"].shape == (6, 5, 8) and grads["dense_1"]["bias"].shape == (6, 3)
    want = _loop_grads(model, params, state, x, y, sw=sw, rng=rng)
    for i in range(6):
        np.testing.assert_allclose(_rows(grads, i), want[i], rtol=1e-5, atol=1e-5)


def test_per_example_grads_equal_a_loop_conv():
    model = kx.Sequential([layers.Conv2D(3, 3, activation="relu"), layers.Flatten(), layers.Dense(2)])
    x = np.random.RandomState(1).randn(4, 6, 6, 1).astype(np.float32)
    y = np.random.RandomState(2).randn(4, 2).astype(np.float32)
    params, state = model.init(jax.random.key(1), jnp.zeros((1, 6, 6, 1)))
    grads = kx.privacy.per_example_grads(model, kx.losses.MeanSquaredError())(params, state, x, y)
    want = _loop_grads(model, params, state, x, y, loss="mse")
    for i in range(4):
        np.testing.assert_allclose(_rows(grads, i), want[i], rtol=1e-5, atol=1e-6)


def test_per_example_errors():
    model = _mlp()
    params, state = model.init(jax.random.key(0), jnp.zeros((1, 5)))
    with pytest.raises(errors.ShapeError, match="leading batch axis"):
        kx.privacy.per_example_grads(model, "mse")(params, state, jnp.zeros(()), jnp.zeros(()))
    with pytest.raises(errors.ConfigError, match=r"groups must be an int in \[1, 4\]"):
        grouped_grads(model, loss_from_spec(SCE), params, state, np.zeros((4, 5), np.float32),
                      np.zeros(4, np.int32), None, jnp.ones(4), None, 5)
    with pytest.raises(errors.ConfigError, match="no leaves"):
        kx.privacy.global_norms({})
    with pytest.raises(errors.UnknownNameError, match="Unknown loss"):
        kx.privacy.per_example_grads(model, "not_a_loss")


# -- clipping ----------------------------------------------------------------------------------


def test_clipping_bounds_every_norm_and_matches_numpy():
    rs = np.random.RandomState(0)
    tree = {"a": rs.randn(7, 3, 4).astype(np.float32) * rs.uniform(0.1, 3, (7, 1, 1)).astype(np.float32),
            "b": {"c": rs.randn(7, 5).astype(np.float32)}}
    flat = np.stack([_rows(tree, i) for i in range(7)])
    norms = np.linalg.norm(flat, axis=1)
    np.testing.assert_allclose(kx.privacy.global_norms(tree), norms, rtol=1e-5)
    c = float(np.median(norms))  # some rows clipped, some not
    clipped = kx.privacy.clip_per_example(tree, c)
    got = np.stack([_rows(clipped, i) for i in range(7)])
    want = flat * np.minimum(1.0, c / norms)[:, None]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert np.all(np.linalg.norm(got, axis=1) <= c * (1 + 1e-5))
    w = np.array([1, 0, 1, 1, 0, 1, 1], np.float32)
    summed = kx.privacy.clip_and_aggregate(tree, c, w)
    np.testing.assert_allclose(_flat(summed), (want * w[:, None]).sum(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_flat(kx.privacy.clip_and_aggregate(tree, c)), want.sum(0), rtol=1e-5, atol=1e-6)


# -- DP-SGD steps ------------------------------------------------------------------------------


def _ts(model, params, state, lr):
    return kx.TrainState.create(model, params, state, optax.sgd(lr), rng=jax.random.key(3))


def test_dp_step_update_is_minus_lr_times_mean_of_clipped_grads(mlp):
    model, params, state = mlp
    x, y = _data(8, seed=4)
    per = _loop_grads(model, params, state, x, y)
    norms = np.linalg.norm(per, axis=1)
    c = float(np.median(norms))
    step = kx.make_train_step(model, SCE, dp=kx.privacy.DPSGD(c, 0.0))
    ts, logs = step(_ts(model, params, state, 0.5), (x, y))
    want = -0.5 * (per * np.minimum(1.0, c / norms)[:, None]).mean(0)
    np.testing.assert_allclose(_flat(ts.params) - _flat(params), want, rtol=1e-4, atol=1e-6)
    # The logged loss is the batch's loss, as without DP.
    plain = float(jnp.mean(kx.losses.get(SCE).call(y, model.apply(params, state, x)[0])))
    assert float(logs["loss"]) == pytest.approx(plain, rel=1e-5)


@pytest.mark.parametrize("batch,micro", [(8, 2), (6, 4)])
def test_microbatches_clip_the_mean_gradient_of_each_group(mlp, batch, micro):
    model, params, state = mlp
    x, y = _data(batch, seed=5)
    per = _loop_grads(model, params, state, x, y)
    k = -(-batch // micro)
    groups = [per[j * k:(j + 1) * k].mean(0) for j in range(micro) if j * k < batch]  # (6, 4): 3 real groups
    groups = np.stack(groups)
    c = float(np.median(np.linalg.norm(groups, axis=1)))
    clipped = groups * np.minimum(1.0, c / np.linalg.norm(groups, axis=1))[:, None]
    step = kx.make_train_step(model, SCE, dp=kx.privacy.DPSGD(c, 0.0, microbatches=micro))
    ts, _ = step(_ts(model, params, state, 1.0), (x, y))
    np.testing.assert_allclose(_flat(ts.params) - _flat(params), -clipped.mean(0), rtol=1e-4, atol=1e-6)


def test_masked_rows_contribute_nothing(mlp):
    model, params, state = mlp
    x, y = _data(7, seed=6)
    keep = np.array([1, 1, 0, 1, 0, 1, 1], np.float32)
    loss = loss_from_spec(SCE)
    dp = kx.privacy.DPSGD(0.5, 1.3)
    rng = jax.random.key(11)
    step = jax.jit(lambda x, y, m: dp_value_and_grad(dp, model, loss, params, state, x, y, None, m, rng))
    total, _, _, _, grads = step(x, y, jnp.asarray(keep))
    rows = keep > 0
    total2, _, _, _, grads2 = step(x[rows], y[rows], jnp.ones(int(rows.sum())))
    np.testing.assert_allclose(_flat(grads), _flat(grads2), rtol=1e-5, atol=1e-6)
    assert float(total) == pytest.approx(float(total2), rel=1e-5)


def test_noise_has_std_noise_multiplier_times_clip_over_batch():
    # No bias and zero inputs: the data gradient is exactly 0, so the update is the noise alone.
    model = kx.Sequential([layers.Dense(4000, use_bias=False)])
    params, state = model.init(jax.random.key(0), jnp.zeros((1, 10)))
    x, y = np.zeros((4, 10), np.float32), np.zeros((4, 4000), np.float32)
    step = kx.make_train_step(model, "mse", dp=kx.privacy.DPSGD(l2_norm_clip=0.5, noise_multiplier=2.0))
    ts0 = _ts(model, params, state, 1.0)
    ts1, _ = step(ts0, (x, y))
    k1 = np.asarray(ts1.params["dense"]["kernel"])  # read before the next step donates ts1
    d1 = (k1 - np.asarray(params["dense"]["kernel"])).ravel()
    std = 2.0 * 0.5 / 4  # sigma * C / batch
    assert abs(d1.mean()) < 4 * std / math.sqrt(d1.size)
    assert d1.std() == pytest.approx(std, rel=0.02)  # 40 000 samples: the sd's error is ~0.35%
    assert stats.kstest(d1 / std, "norm").pvalue > 1e-3
    ts2, _ = step(ts1, (x, y))
    d2 = (np.asarray(ts2.params["dense"]["kernel"]) - k1).ravel()
    assert abs(np.corrcoef(d1, d2)[0, 1]) < 0.03  # a fresh key every step
    again, _ = step(_ts(model, params, state, 1.0), (x, y))  # same seed, same noise
    np.testing.assert_array_equal(np.asarray(again.params["dense"]["kernel"]), k1)


def test_fit_with_no_noise_and_huge_clip_equals_plain_sgd():
    x, y = _data(40, seed=8)
    hist, weights = [], []
    for dp in (None, kx.privacy.DPSGD(1e6, 0.0)):
        model = _mlp()
        model.compile(optimizer=optax.sgd(0.1), loss=SCE, metrics=["accuracy"], dp=dp)
        h = model.fit(x, y, batch_size=16, epochs=2, seed=5, verbose=0)
        hist.append(h.history)
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(hist[0]["loss"], hist[1]["loss"], rtol=1e-5)
    assert hist[0]["accuracy"] == hist[1]["accuracy"]


def test_sharded_fit_with_padded_rows_equals_one_device():
    # 14 rows over 4 devices: the shard path pads 2 masked rows; with the same seed the noise
    # is the same, so the masked rows must change nothing.
    x, y = _data(30, seed=12)
    weights = []
    for dist in (None, kx.distribute.DataParallel(mode="shard")):
        model = _mlp()
        model.compile(optimizer=optax.sgd(0.1), loss=SCE, dp=kx.privacy.DPSGD(0.5, 1.0), distribute=dist)
        model.fit(x, y, batch_size=14, epochs=1, seed=3, verbose=0)
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_fit_reports_the_epsilon_of_its_steps_and_sample_rate(capsys):
    x, y = _data(50, seed=9)
    model = _mlp()
    dp = kx.privacy.DPSGD(1.0, 1.1, delta=1e-4)
    model.compile(optimizer=optax.sgd(0.05), loss=SCE, dp=dp)
    h = model.fit(x, y, batch_size=16, epochs=2, validation_split=0.2, seed=1, verbose=2)
    # 40 training rows -> 3 steps per epoch (16, 16, 8), sample rate 16 / 40.
    want = accountant.compute_epsilon(6, 1.1, 0.4, 1e-4)
    assert h.privacy.steps == 6 and h.privacy.delta == 1e-4
    assert h.privacy.epsilon == pytest.approx(want, rel=1e-9)
    assert "DP-SGD: (epsilon = " in capsys.readouterr().out
    # A second fit composes with the first.
    model.fit(x, y, batch_size=16, epochs=1, validation_split=0.2, seed=1, verbose=0)
    assert kx.privacy.privacy_spent(model).epsilon == pytest.approx(accountant.compute_epsilon(9, 1.1, 0.4, 1e-4))


def test_fit_on_an_iterable_warns_that_epsilon_is_unknown():
    x, y = _data(32, seed=10)
    model = _mlp()
    model.compile(optimizer="sgd", loss=SCE, dp=kx.privacy.DPSGD(1.0, 1.0))
    batches = [(x[i:i + 8], y[i:i + 8]) for i in range(0, 32, 8)]
    with pytest.warns(UserWarning, match="data set of unknown size"):
        h = model.fit(iter(batches), epochs=1, verbose=0)
    assert h.privacy is None
    with pytest.raises(errors.ConfigError, match="unknown size"):
        kx.privacy.privacy_spent(model)


# -- refusals ----------------------------------------------------------------------------------


def test_batch_normalization_is_refused_naming_the_layer():
    bn = kx.Sequential([layers.Dense(4), layers.BatchNormalization(), layers.Dense(2)])
    with pytest.raises(errors.ConfigError, match="'batch_normalization' \\(BatchNormalization\\).*GroupNormalization"):
        bn.compile(optimizer="sgd", loss="mse", dp=kx.privacy.DPSGD(1.0, 1.0))
    inner = kx.Sequential([layers.Dense(4), layers.BatchNormalization(name="bn")], name="block")
    inp = kx.Input((3,))
    nested = kx.Model(inp, layers.Dense(1)(inner(inp)))
    with pytest.raises(errors.ConfigError, match="'block/bn' \\(BatchNormalization\\)"):
        kx.make_train_step(nested, "mse", dp=kx.privacy.DPSGD(1.0, 1.0))
    wrapped = kx.Sequential([layers.TimeDistributed(layers.BatchNormalization())])
    with pytest.raises(errors.ConfigError, match="BatchNormalization"):
        wrapped.compile(optimizer="sgd", loss="mse", dp=kx.privacy.DPSGD(1.0, 1.0))
    # GroupNormalization does not mix examples: accepted.
    kx.Sequential([layers.Dense(4), layers.GroupNormalization(groups=2)]).compile(
        optimizer="sgd", loss="mse", dp=kx.privacy.DPSGD(1.0, 1.0))


def test_dp_config_errors():
    with pytest.raises(errors.ConfigError, match="l2_norm_clip must be a finite number > 0; received 0"):
        kx.privacy.DPSGD(0, 1.0)
    with pytest.raises(errors.ConfigError, match="noise_multiplier must be a finite number >= 0; received -1"):
        kx.privacy.DPSGD(1.0, -1)
    with pytest.raises(errors.ConfigError, match="microbatches must be None or an int >= 1; received 0"):
        kx.privacy.DPSGD(1.0, 1.0, microbatches=0)
    with pytest.raises(errors.ConfigError, match=r"delta must be in \(0, 1\); received 1.5"):
        kx.privacy.DPSGD(1.0, 1.0, delta=1.5)
    model = _mlp()
    with pytest.raises(errors.ConfigError, match="dp= expects a kx.privacy.DPSGD; received dict"):
        model.compile(optimizer="sgd", loss=SCE, dp={"l2_norm_clip": 1.0})
    with pytest.raises(errors.ConfigError, match="mode='pmap'"):
        model.compile(optimizer="sgd", loss=SCE, dp=kx.privacy.DPSGD(1.0, 1.0),
                      distribute=kx.distribute.DataParallel(mode="pmap"))
    with pytest.raises(errors.ConfigError, match="batch_size <= n; received n=10, batch_size=20"):
        kx.privacy.DPSGD(1.0, 1.0).epsilon(10, 20, 1)
    with pytest.raises(errors.ConfigError, match="epochs must be a number >= 0; received -1"):
        kx.privacy.DPSGD(1.0, 1.0).epsilon(10, 2, -1)


# -- accountant --------------------------------------------------------------------------------

# Reference values from TensorFlow Privacy's own tests,
# tensorflow_privacy/privacy/analysis/compute_dp_sgd_privacy_test.py (github.com/tensorflow/privacy):
#   ('Test0', n=60000, batch_size=150, noise_multiplier=1.3, epochs=15, delta=1e-5) -> eps 0.7242234026109595
#   ('Test1', n=100000, batch_size=100, noise_multiplier=1.0, epochs=30, delta=1e-7) -> eps 1.4154988495444842
# computed there with steps = ceil(epochs * n / batch_size) and sample rate batch_size / n (RDP).
@pytest.mark.parametrize("n,batch,sigma,epochs,delta,expected", [
    (60000, 150, 1.3, 15, 1e-5, 0.7242234026109595),
    (100000, 100, 1.0, 30, 1e-7, 1.4154988495444842),
])
def test_accountant_matches_tensorflow_privacy_reference_values(n, batch, sigma, epochs, delta, expected):
    steps = math.ceil(epochs * n / batch)
    assert kx.privacy.compute_epsilon(steps, sigma, batch / n, delta) == pytest.approx(expected, rel=0.01)
    assert kx.privacy.DPSGD(1.0, sigma).epsilon(n, batch, epochs, delta) == pytest.approx(expected, rel=0.01)


def test_accountant_doubles_the_sensitivity_of_microbatches():
    # Same file, test_dp_sgd_privacy_statement_no_user_dp_with_rdp: 10000 examples, batch 64,
    # noise multiplier 2.0, 5 epochs, with microbatching, delta 1e-6: "Epsilon assuming
    # Poisson sampling (*): 1.616" (microbatching counts as sensitivity 2C).
    dp = kx.privacy.DPSGD(1.0, 2.0, microbatches=16)
    assert dp.epsilon(10000, 64, 5, delta=1e-6) == pytest.approx(1.616, rel=0.01)
    per_example = kx.privacy.DPSGD(1.0, 2.0).epsilon(10000, 64, 5, delta=1e-6)
    assert per_example < 0.6 * 1.616


def test_accountant_without_subsampling_brackets_the_exact_gaussian_mechanism():
    # q = 1: T Gaussian steps of multiplier sigma are one Gaussian mechanism with mu = sqrt(T) / sigma.
    # Its exact delta(eps) (Balle & Wang 2018, Thm 8) bounds the RDP epsilon from below; the
    # classic RDP conversion eps = min_a T a / (2 sigma^2) + log(1 / delta) / (a - 1) from above.
    steps, sigma, delta = 50, 4.0, 1e-5
    eps = kx.privacy.compute_epsilon(steps, sigma, 1.0, delta)
    mu = math.sqrt(steps) / sigma
    exact_delta = lambda e: stats.norm.cdf(-e / mu + mu / 2) - math.exp(e) * stats.norm.cdf(-e / mu - mu / 2)
    from scipy.optimize import brentq

    exact = brentq(lambda e: exact_delta(e) - delta, 1e-6, 100)
    classic = min(steps * a / (2 * sigma**2) + math.log(1 / delta) / (a - 1) for a in np.arange(1.01, 200, 0.01))
    assert exact <= eps <= classic * (1 + 1e-9)
    assert eps < 1.3 * exact  # and RDP is not far from exact here


def test_accountant_edge_cases_and_errors(monkeypatch):
    assert kx.privacy.compute_epsilon(0, 1.0, 0.1, 1e-5) == 0.0
    assert kx.privacy.compute_epsilon(10, 0.0, 0.1, 1e-5) == math.inf
    with pytest.raises(errors.ConfigError, match="steps must be an int >= 0; received -1"):
        kx.privacy.compute_epsilon(-1, 1.0, 0.1, 1e-5)
    with pytest.raises(errors.ConfigError, match="noise_multiplier must be a finite number >= 0; received -0.5"):
        kx.privacy.compute_epsilon(1, -0.5, 0.1, 1e-5)
    with pytest.raises(errors.ConfigError, match=r"sample_rate must be in \(0, 1\]; received 1.5"):
        kx.privacy.compute_epsilon(1, 1.0, 1.5, 1e-5)
    with pytest.raises(errors.ConfigError, match=r"delta must be in \(0, 1\); received 0"):
        kx.privacy.compute_epsilon(1, 1.0, 0.1, 0)
    monkeypatch.setitem(sys.modules, "dp_accounting", None)  # as if not installed
    with pytest.raises(ImportError, match=r'pip install "kerax\[privacy\]"'):
        kx.privacy.compute_epsilon(10, 1.0, 0.1, 1e-5)


def test_privacy_does_not_import_the_shell():
    import ast
    from pathlib import Path

    root = Path(kx.__file__).parent / "privacy"
    shell = ("kerax.models", "kerax.training", "kerax.saving", "kerax.cli", "kerax.distribute", "kerax.utils")
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not [n for n in names if n.startswith(shell)], (path.name, names)
