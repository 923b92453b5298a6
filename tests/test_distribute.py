"""Data parallelism on 4 simulated CPU devices: the same numbers as one device (RELIABILITY
E1, E2), in both modes, through the pure step builders and through fit."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest

import kerax as kx
from kerax import errors, layers

LOSS = kx.losses.SparseCategoricalCrossentropy(from_logits=True)
MODES = ["shard", "pmap"]


def _data(n=32, shape=(4,), seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *shape)).astype(np.float32), rng.integers(0, 3, n).astype(np.int32)


def mlp():
    return kx.Sequential([layers.Dense(8, activation="relu", input_shape=(4,)), layers.Dense(3)])


def cnn_bn():
    return kx.Sequential([
        layers.Conv2D(4, 3, use_bias=False, input_shape=(6, 6, 2)),  # a bias before BN has no gradient
        layers.BatchNormalization(synchronized=True),
        layers.Activation("relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dense(3),
    ])


def lstm():
    return kx.Sequential([layers.LSTM(8, input_shape=(5, 3)), layers.Dense(3)])


MODELS = {"mlp": (mlp, (4,)), "cnn_bn": (cnn_bn, (6, 6, 2)), "lstm": (lstm, (5, 3))}


def _close(a, b, tol=1e-5, atol=None):
    atol = tol if atol is None else atol
    jax.tree.map(lambda u, v: np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=tol, atol=atol), a, b)


def _pure(make, shape, dp, batch=32, steps=20, tx=None):
    x, y = _data(batch, shape)
    model = make()
    model.build(seed=0)
    ts = kx.TrainState.create(model, model.params, model.state, tx or optax.adam(1e-2), rng=0)
    step = kx.make_train_step(model, loss=LOSS, metrics=["accuracy"], distribute=dp)
    if dp is not None:
        ts = dp.replicate(ts)
    history = []
    for _ in range(steps):
        ts, logs = step(ts, (x, y))
        history.append({k: float(v) for k, v in logs.items()})
    return (ts if dp is None else dp.unreplicate(ts)), history, ts


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("tx", [optax.sgd(0.1), optax.adam(1e-2)], ids=["sgd", "adam"])
def test_e1_pure_steps_match_one_device(name, mode, tx):
    make, shape = MODELS[name]
    one, h1, _ = _pure(make, shape, None, tx=tx)
    many, h4, replicated = _pure(make, shape, kx.distribute.DataParallel(mode=mode), tx=tx)
    _close(one.params, many.params, atol=1e-6)  # E1: 20 steps, allclose(rtol=1e-5, atol=1e-6)
    _close(one.state, many.state, atol=1e-6)
    for a, b in zip(h1, h4):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], abs=1e-6)
    # E2: every device holds bitwise the same replica
    for leaf in jax.tree.leaves(replicated.params):
        shards = [np.asarray(s.data) for s in leaf.addressable_shards]
        shards = [s[0] if mode == "pmap" else s for s in shards]
        for s in shards[1:]:
            np.testing.assert_array_equal(shards[0], s)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_e1_fit_matches_one_device(name, mode):
    make, shape = MODELS[name]
    x, y = _data(48, shape)

    def run(dp):
        model = make()
        model.compile(optimizer="adam", loss=LOSS, metrics=["accuracy"], distribute=dp)
        history = model.fit(x, y, batch_size=16, epochs=2, shuffle=True, verbose=0, seed=0)
        return model, history.history

    m1, h1 = run(None)
    m4, h4 = run(kx.distribute.DataParallel(mode=mode))
    _close(m1.params, m4.params)
    _close(m1.state, m4.state)
    for k in h1:
        np.testing.assert_allclose(h1[k], h4[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_global_batch_of_30_on_4_devices(mode, caplog):
    x, y = _data(60)

    def run(dp):
        model = mlp()
        model.compile(optimizer="sgd", loss=LOSS, metrics=["accuracy"], distribute=dp)
        with caplog.at_level("WARNING", logger="kerax"):
            history = model.fit(x, y, batch_size=30, epochs=2, shuffle=False, verbose=0, seed=1)
        return model, history.history, model.evaluate(x, y, batch_size=30, verbose=0, return_dict=True)

    m1, h1, e1 = run(None)
    m4, h4, e4 = run(kx.distribute.DataParallel(mode=mode))
    _close(m1.params, m4.params)
    for k in h1:
        np.testing.assert_allclose(h1[k], h4[k], rtol=1e-5, atol=1e-6)
    assert e1 == pytest.approx(e4, abs=1e-6)
    assert sum("padded with 2 masked rows" in r.message for r in caplog.records) == 1  # said once


@pytest.mark.parametrize("mode", MODES)
def test_steps_per_execution_under_data_parallelism(mode):
    x, y = _data(64)

    def run(dp, k):
        model = mlp()
        model.compile(optimizer="adam", loss=LOSS, distribute=dp, steps_per_execution=k)
        model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0, seed=0)
        return model.params

    _close(run(None, 1), run(kx.distribute.DataParallel(mode=mode), 4))


def test_bad_setups_get_clear_errors():
    with pytest.raises(errors.ConfigError, match=r"mode must be one of \['shard', 'pmap'\]"):
        kx.distribute.DataParallel(mode="ring")
    dp = kx.distribute.DataParallel()
    with pytest.raises(errors.ConfigError, match=r"axis 'model' is not in the mesh; its only axis is 'data'"):
        dp.sharding("model")
    model = mlp()
    model.compile(optimizer="sgd", loss=LOSS, distribute=dp)
    x, y = _data(16)
    with pytest.raises(errors.ConfigError, match=r"batch_size=2 is smaller than the 4 devices"):
        model.fit(x, y, batch_size=2, verbose=0)
    with pytest.raises(errors.ConfigError, match="expects a kx.distribute.DataParallel"):
        model.compile(optimizer="sgd", loss=LOSS, distribute="mirrored")
    with pytest.raises(errors.ShapeError, match=r"6 rows do not split over 4 devices"):
        kx.distribute.shard_batch(np.zeros((6, 2)))


def test_replicate_helpers_round_trip():
    tree = {"w": np.arange(6.0).reshape(2, 3)}
    rep = kx.distribute.replicate(tree)
    assert rep["w"].shape == (4, 2, 3)
    np.testing.assert_array_equal(kx.distribute.unreplicate(rep)["w"], tree["w"])
    sharded = kx.distribute.shard_batch(np.arange(8.0).reshape(8, 1))
    assert sharded.shape == (4, 2, 1)
