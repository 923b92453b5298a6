"""Sequential and Functional models against the same computation written in jax.numpy."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kerax as kx
from kerax import errors, layers

KEY = jax.random.key(0)


def dense(p, x):
    return x @ p["kernel"] + p["bias"]


def test_sequential_matches_hand_written():
    model = kx.Sequential([
        layers.Dense(8, activation="relu", input_shape=(4,)),
        layers.Dense(8, activation="tanh"),
        layers.Dense(3),
    ])
    params, state = model.init(KEY, jnp.zeros((1, 4)))
    assert list(params) == ["dense", "dense_1", "dense_2"] and state == {}
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    y, _ = model.apply(params, state, x)
    h = jax.nn.relu(dense(params["dense"], x))
    h = jnp.tanh(dense(params["dense_1"], h))
    np.testing.assert_allclose(y, dense(params["dense_2"], h), rtol=1e-6, atol=1e-6)


def test_sequential_add_and_input_first():
    model = kx.Sequential(name="seq")
    model.add(kx.Input(shape=(3,)))
    model.add(layers.Dense(2))
    assert model.input_shape == (3,)
    assert [w.shape for w in model.get_weights()] == [(3, 2), (2,)]
    with pytest.raises(errors.ConfigError, match="cannot add a layer after the model is built"):
        model.add(layers.Dense(1))


def _multi_io():
    a = kx.Input(shape=(4,), name="a")
    b = kx.Input(shape=(2,), name="b")
    shared = layers.Dense(3, name="shared")
    inner = kx.Sequential([layers.Dense(5, activation="relu"), layers.Dense(3)], name="inner")
    ha, hb = shared(a), layers.Dense(3, name="proj_b")(b)
    merged = layers.concatenate([ha, hb])
    out_sum = layers.Add()([inner(merged), shared(a)])
    out_score = layers.Dense(1, activation="sigmoid", name="score")(merged)
    return kx.Model([a, b], {"sum": out_sum, "score": out_score}, name="multi")


def _multi_io_by_hand(p, a, b):
    ha = dense(p["shared"], a)
    merged = jnp.concatenate([ha, dense(p["proj_b"], b)], axis=-1)
    inner = dense(p["inner"]["dense_1"], jax.nn.relu(dense(p["inner"]["dense"], merged)))
    return {"sum": inner + dense(p["shared"], a), "score": jax.nn.sigmoid(dense(p["score"], merged))}


def test_functional_multi_input_output_shared_nested():
    model = _multi_io()
    rng = np.random.default_rng(1)
    a = rng.normal(size=(6, 4)).astype(np.float32)
    b = rng.normal(size=(6, 2)).astype(np.float32)
    params, state = model.init(KEY, [a, b])
    assert sorted(params) == ["inner", "proj_b", "score", "shared"]
    assert sorted(params["inner"]) == ["dense", "dense_1"]
    y, _ = model.apply(params, state, [a, b])
    ref = _multi_io_by_hand(params, a, b)
    for k in ("sum", "score"):
        np.testing.assert_allclose(y[k], ref[k], rtol=1e-5, atol=1e-6)
    y_dict, _ = model.apply(params, state, {"a": a, "b": b})  # inputs by name work too
    np.testing.assert_allclose(y_dict["sum"], y["sum"])
    y_jit, _ = jax.jit(model.apply)(params, state, [a, b])
    np.testing.assert_allclose(y_jit["sum"], y["sum"], rtol=1e-6)


def test_shared_layer_gets_both_gradients():
    model = _multi_io()
    a, b = jnp.ones((2, 4)), jnp.ones((2, 2))
    params, state = model.init(KEY, [a, b])
    g = jax.grad(lambda p: model.apply(p, state, [a, b])[0]["sum"].sum())(params)
    g_ref = jax.grad(lambda p: _multi_io_by_hand(p, a, b)["sum"].sum())(params)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), g, g_ref)


def test_functional_config_round_trip_is_json_and_equivalent():
    model = _multi_io()
    config = json.loads(json.dumps(model.get_config()))
    clone = kx.Model.from_config(config)
    assert clone.get_config() == model.get_config()
    assert clone.layer_names() == model.layer_names()
    a, b = jnp.ones((2, 4)), jnp.ones((2, 2))
    params, state = model.init(KEY, [a, b])
    y1, _ = model.apply(params, state, [a, b])
    y2, _ = clone.apply(params, state, [a, b])
    jax.tree.map(np.testing.assert_array_equal, y1, y2)


def test_sequential_config_round_trip():
    model = kx.Sequential([layers.Dense(4, input_shape=(3,)), layers.Dropout(0.2), layers.Dense(1)], name="s")
    config = json.loads(json.dumps(model.get_config()))
    clone = kx.Sequential.from_config(config)
    assert clone.get_config() == model.get_config()
    assert clone.layer_names() == ["dense", "dropout", "dense_1"]


def test_model_nested_in_sequential_and_get_layer():
    inner = kx.Sequential([layers.Dense(3)], name="block")
    outer = kx.Sequential([layers.Dense(3, input_shape=(2,)), inner, layers.Dense(1)])
    params, _ = outer.init(KEY, jnp.zeros((1, 2)))
    assert list(params) == ["dense", "block", "dense_1"]
    assert outer.get_layer("block") is inner
    assert outer.get_layer(index=-1).units == 1
    with pytest.raises(errors.LayerNameError, match=r"no layer named 'blok'\. Did you mean 'block'\?"):
        outer.get_layer("blok")


def test_init_does_not_run_forward_and_works_under_jit():
    model = _multi_io()
    specs = [jax.ShapeDtypeStruct((7, 4), jnp.float32), jax.ShapeDtypeStruct((7, 2), jnp.float32)]
    eager = model.init(KEY, specs)
    jitted = jax.jit(model.init, static_argnums=())(KEY, specs)
    jax.tree.map(np.testing.assert_array_equal, eager, jitted)


def test_same_layer_twice_in_sequential_shares_weights():
    d = layers.Dense(3)
    model = kx.Sequential([d, layers.Activation("relu"), d])
    params, state = model.init(KEY, jnp.zeros((1, 3)))
    assert list(params) == ["dense"]
    x = jnp.ones((2, 3))
    y, _ = model.apply(params, state, x)
    np.testing.assert_allclose(y, dense(params["dense"], jax.nn.relu(dense(params["dense"], x))), rtol=1e-6)


def test_held_weights_assignment_is_checked():
    model = kx.Sequential([layers.Dense(2, input_shape=(3,))])
    params = model.params
    bigger = {"dense": {"kernel": jnp.zeros((4, 2)), "bias": jnp.zeros((2,))}}
    with pytest.raises(errors.WeightsError, match=r"'dense/kernel' expected shape \(3, 2\); received \(4, 2\)"):
        model.params = bigger
    with pytest.raises(errors.WeightsError, match=r"missing \['dense/bias'\]"):
        model.params = {"dense": {"kernel": jnp.zeros((3, 2))}}
    model.params = jax.tree.map(jnp.ones_like, params)
    np.testing.assert_array_equal(model(jnp.ones((1, 3))), [[4.0, 4.0]])
    model.set_weights([np.zeros((3, 2)), np.full((2,), 5.0)])
    np.testing.assert_array_equal(model(jnp.ones((1, 3))), [[5.0, 5.0]])
    with pytest.raises(errors.WeightsError, match="expected a list of 2 arrays; received 1"):
        model.set_weights([np.zeros((3, 2))])


def test_unbuilt_model_explains_how_to_build():
    model = kx.Sequential([layers.Dense(2)])
    with pytest.raises(errors.NotBuiltError, match=r"call model.build\(input_shape\)"):
        model.params
    model.build((None, 5))
    assert model.params["dense"]["kernel"].shape == (5, 2)


def test_build_is_deterministic_for_a_seed():
    def weights(seed):
        m = kx.Sequential([layers.Dense(4, input_shape=(3,)), layers.Dense(2)])
        m.build(seed=seed)
        return m.get_weights()

    for a, b in zip(weights(7), weights(7)):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(weights(7)[0], weights(8)[0])


def test_adding_a_layer_leaves_other_layers_init_unchanged():
    x = jnp.zeros((1, 3))
    p1, _ = kx.Sequential([layers.Dense(4, name="a"), layers.Dense(2, name="b")]).init(KEY, x)
    p2, _ = kx.Sequential([layers.Dense(4, name="a"), layers.Dense(4, name="c"), layers.Dense(2, name="b")]).init(KEY, jnp.zeros((1, 3)))
    np.testing.assert_array_equal(p1["a"]["kernel"], p2["a"]["kernel"])
