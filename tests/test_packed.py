"""``Packed`` (fit's metric state as one vector per dtype) holds exactly the tree it packed,
and the train step computes the same with it as with the plain dict."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import kerax as kx
from kerax import layers
from kerax.training import setup
from kerax.training.objectives import NAN_KEY
from kerax.training.packed import Packed, unpacked


def _tree():
    rng = np.random.default_rng(0)
    return {
        "loss": {"total": np.float32(2.5), "count": np.float32(8.0)},
        "cm": rng.integers(0, 9, (3, 3)).astype(np.int32),
        "tp": rng.normal(size=(4,)).astype(np.float32),
        "flags": np.array([True, False]),
        NAN_KEY: np.array([1.0, 0.0], np.float32),
    }


def _assert_same(got, want):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert np.asarray(g).dtype == np.asarray(w).dtype
        assert np.shape(g) == np.shape(w)
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def _bump(x):
    return ~x if x.dtype == bool else x * 2 + 1


def test_pack_keeps_every_leaf_with_one_vector_per_dtype():
    tree = _tree()
    p = Packed.pack(tree)
    assert sorted(str(v.dtype) for v in p.vectors) == ["bool", "float32", "int32"]
    assert sum(v.size for v in p.vectors) == sum(np.size(a) for a in jax.tree.leaves(tree))
    _assert_same(p.unpack(), tree)
    _assert_same(p["loss"], tree["loss"])
    assert unpacked(p).keys() == tree.keys() and unpacked(tree) is tree


def test_host_copy_unpacks_to_numpy():
    tree = _tree()
    h = Packed.pack(tree).host()
    assert all(isinstance(v, np.ndarray) for v in h.vectors)
    out = h.unpack()
    assert all(isinstance(a, np.ndarray) for a in jax.tree.leaves(out))
    _assert_same(out, tree)


def test_leading_axes_survive_stacking_and_jit():
    a, b = _tree(), jax.tree.map(_bump, _tree())
    stacked = jax.tree.map(lambda *v: jnp.stack(v), Packed.pack(a), Packed.pack(b))
    _assert_same(stacked.unpack(), jax.tree.map(lambda *v: np.stack(v), a, b))
    # Through jit: the layout is static, the vectors are the only arguments.
    bumped = jax.jit(lambda p: Packed.pack(jax.tree.map(_bump, unpacked(p))))(Packed.pack(a))
    _assert_same(bumped.unpack(), jax.tree.map(_bump, a))
    assert len(jax.tree.leaves(Packed.pack(a))) == 3


def test_train_step_with_the_packed_state_equals_the_dict_one():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(48, 5)).astype(np.float32)
    y = rng.integers(0, 3, 48)
    model = kx.Sequential([kx.Input((5,)), layers.Dense(6, activation="relu"), layers.Dense(3)])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.build(seed=0)
    compiled = setup.require_compiled(model, "fit")
    objectives = setup.objectives_for(model, compiled, x)
    step = setup.train_step_for(model, compiled, objectives, "warn")
    plain = jax.jit(step._run)  # the dict state, as the pure API and ensembles pass it
    batches = [(x[i:i + 16][None], y[i:i + 16][None], None) for i in range(0, 48, 16)]

    def train(run, mstate):
        ts = kx.TrainState.create(model, model.params, model.state, compiled.optimizer, rng=jax.random.key(0))
        for b in batches:
            ts, mstate, token = run(ts, mstate, b, None, None)
        return ts, mstate, token

    ts_p, m_p, token = train(step.run, step.init_metrics())
    ts_d, m_d, _ = train(plain, objectives.init())
    assert isinstance(m_p, Packed) and token is None  # the loop waits on the state itself
    assert len(jax.tree.leaves(m_p)) == 1  # all float32: one vector
    _assert_same(m_p.unpack(), m_d)
    _assert_same(ts_p.params, ts_d.params)
    assert step.compute(m_p) == step.compute(m_d)
    # The logs are the batches' mean loss and accuracy (48 rows, all counted).
    assert float(m_p["loss"]["count"]) == 48.0
    np.testing.assert_array_equal(m_p.host()[NAN_KEY], [0.0, 0.0])
