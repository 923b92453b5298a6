"""DP-SGD's microbatch groups: the documented rule, data-parallel padding that never joins a
real group, sharded training equal to one device, and the accountant's noise multiplier
matching the groups' sensitivity."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import kerax as kx
from kerax import errors, layers
from kerax.privacy.per_example import grouped_grads, loss_from_spec

SCE = kx.losses.SparseCategoricalCrossentropy(from_logits=True)


def _mlp():
    return kx.Sequential([layers.Dense(8, activation="tanh"), layers.Dense(3)])


def _data(n, seed=0):
    rs = np.random.RandomState(seed)
    return rs.randn(n, 5).astype(np.float32), rs.randint(0, 3, n).astype(np.int32)


def _flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(a)) for a in jax.tree.leaves(tree)])


@pytest.mark.parametrize("rows,micro,size,groups", [
    (10, None, 1, 10),   # per example
    (10, 5, 2, 5),       # m divides the batch: m groups of B / m
    (7, 5, 2, 4),        # a short last batch: groups of ceil(7 / 5) = 2, the last one shorter
    (3, 5, 1, 3),        # fewer rows than m: one row per group
    (10, 10, 1, 10),     # m = B: per example (TensorFlow Privacy's idiom)
])
def test_group_rule(rows, micro, size, groups):
    dp = kx.privacy.DPSGD(1.0, 1.0, microbatches=micro)
    assert (dp.group_size(rows), dp.groups(rows)) == (size, groups)
    model = kx.Sequential([layers.Dense(2)])
    params, state = model.init(jax.random.key(0), jnp.zeros((1, 3)))
    x, y = np.ones((rows, 3), np.float32), np.ones((rows, 2), np.float32)
    g = jax.jit(lambda x, y: grouped_grads(model, loss_from_spec("mse"), params, state, x, y, None,
                                           jnp.ones(rows), None, min(micro or rows, rows)))(x, y)
    real = np.asarray(g.mask.sum(1)).astype(int)
    assert real[real > 0].tolist() == [size] * (rows // size) + ([rows % size] if rows % size else [])


def test_effective_noise_follows_the_group_size():
    assert kx.privacy.DPSGD(1.0, 1.2, microbatches=14).effective_noise(14) == 1.2  # one example per group
    assert kx.privacy.DPSGD(1.0, 1.2, microbatches=7).effective_noise(14) == 0.6   # two: sensitivity 2C
    assert kx.privacy.DPSGD(1.0, 1.2).effective_noise(14) == 1.2


def test_fit_refuses_microbatches_that_do_not_divide_the_batch_size():
    x, y = _data(20)
    model = _mlp()
    model.compile(optimizer=optax.sgd(0.1), loss=SCE, dp=kx.privacy.DPSGD(1.0, 1.0, microbatches=6))
    with pytest.raises(errors.ConfigError, match=r"fit: DPSGD\(microbatches=6\) must divide batch_size=10.*"
                                                 r"received 10 % 6 = 4; use e.g. microbatches=5"):
        model.fit(x, y, batch_size=10, verbose=0)
    with pytest.raises(errors.ConfigError, match=r"microbatches=6\) must divide batch_size=32"):
        model.fit(x, y, verbose=0)  # the default batch_size
    with pytest.raises(errors.ConfigError, match=r"DPSGD.epsilon: DPSGD\(microbatches=6\) must divide batch_size=10"):
        kx.privacy.DPSGD(1.0, 1.0, microbatches=6).epsilon(100, 10, 1)
    assert kx.privacy.privacy_spent(model).steps == 0  # nothing ran
    # Not refused: train_on_batch's one batch (cut by the rule as it comes: 20 rows, groups
    # of 4), and microbatches >= batch_size (one example per group).
    model.train_on_batch(x, y)
    assert kx.privacy.privacy_spent(model).steps == 1
    assert kx.privacy.DPSGD(1.0, 1.0, microbatches=64).epsilon(100, 10, 1) == pytest.approx(
        kx.privacy.DPSGD(1.0, 1.0).epsilon(100, 10, 1))


def test_padding_rows_never_share_a_group_with_real_rows():
    # A multi-process batch: each process pads its own 7 rows to 8, so the padding sits in
    # the middle. The 14 real rows must form the 7 groups of 2 they form on one device.
    model = _mlp()
    params, state = model.init(jax.random.key(0), jnp.zeros((1, 5)))
    x, y = _data(14, seed=1)
    loss, rng = loss_from_spec(SCE), jax.random.key(4)
    groups = jax.jit(lambda x, y, m: grouped_grads(model, loss, params, state, x, y, None, m, rng, 7))
    ref = groups(x, y, jnp.ones(14))
    pad = lambda a: np.concatenate([a[:7], a[:1], a[7:], a[:1]])  # noqa: E731
    mask = jnp.asarray([1.0] * 7 + [0.0] + [1.0] * 7 + [0.0])
    got = groups(pad(x), pad(y), mask)
    real = np.asarray(got.mask.sum(1)).astype(int)
    assert real.tolist() == [2] * 7
    np.testing.assert_allclose(_flat(got.grads), _flat(ref.grads), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(got.y_pred)[np.asarray(mask) > 0], np.asarray(ref.y_pred), rtol=1e-6)


@pytest.mark.parametrize("micro,noise", [(7, 0.5), (14, 1.0)])
def test_sharded_fit_with_microbatches_equals_one_device(micro, noise):
    # 4 devices pad each batch of 14 (and the last of 2) with masked rows; with the same seed
    # the noise is the same, so the groups must be the same.
    x, y = _data(30, seed=12)
    weights, ledgers = [], []
    for dist in (None, kx.distribute.DataParallel(mode="shard")):
        model = _mlp()
        model.compile(optimizer=optax.sgd(0.5), loss=SCE, distribute=dist,
                      dp=kx.privacy.DPSGD(0.05, 1.0, microbatches=micro, delta=1e-3))
        model.fit(x, y, batch_size=14, epochs=1, seed=3, verbose=0)
        weights.append(model.get_weights())
        ledgers.append(kx.privacy.accountant.ledger_of(model))
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # microbatches=14 is one example per group: sensitivity C, the accountant uses sigma.
    assert ledgers[0] == ledgers[1] == (kx.privacy.accountant.Segment(3, noise, 14 / 30),)
