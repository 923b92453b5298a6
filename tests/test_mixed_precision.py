"""Mixed precision: dtype policies as layer config (kerax.mixed_precision). References: Keras
3's DTypePolicy and its documented rules, float32 models and NumPy formulas. Loss scaling
for float16 is tested in test_loss_scale.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kerax as kx
from kerax import errors, layers
from kerax.mixed_precision import Policy

BF16, F16, F32 = jnp.bfloat16, jnp.float16, jnp.float32


def _probe(seen: list):
    """A layer with one weight that records, inside apply, the dtypes it runs with."""

    class Probe(kx.Layer):
        def init(self, rng, x):
            return {"w": jnp.ones(x.shape[-1:], self.param_dtype)}, {}

        def apply(self, params, state, x, *, rng=None, training=False):
            seen.append((self.name, str(x.dtype), str(params["w"].dtype), self.compute_dtype))
            return x * params["w"], state

    return Probe


# -- policies -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["float32", "bfloat16", "float16", "mixed_bfloat16", "mixed_float16"])
def test_policy_dtypes_match_keras(name):
    keras = pytest.importorskip("keras")
    want = keras.DTypePolicy(name)
    got = Policy(name)
    assert (got.variable_dtype, got.compute_dtype) == (want.variable_dtype, want.compute_dtype)
    assert kx.mixed_precision.get(name) == got


def test_unknown_policy_names_list_the_valid_ones():
    valid = r"Valid dtype policy names: bfloat16, float16, float32, float64, mixed_bfloat16, mixed_float16"
    with pytest.raises(errors.UnknownNameError, match=r"Unknown dtype policy 'mixed_bf16'\. Did you mean 'mixed_bfloat16'\?.*" + valid):
        Policy("mixed_bf16")
    with pytest.raises(errors.UnknownNameError, match=r"Dense: Unknown dtype policy 'half'.*" + valid):
        layers.Dense(2, dtype_policy="half")
    with pytest.raises(errors.UnknownNameError, match=r"Sequential: Unknown dtype policy 'fp16'.*" + valid):
        kx.Sequential([layers.Dense(2)], dtype_policy="fp16")
    x = kx.Input((3,))
    with pytest.raises(errors.UnknownNameError, match=r"Model: Unknown dtype policy 'mixed'.*" + valid):
        kx.Model(x, layers.Dense(2)(x), dtype_policy="mixed")
    with pytest.raises(errors.ConfigError, match=r"Dense: dtype_policy must be one of \['float32'.*; received 16"):
        layers.Dense(2, dtype_policy=16)


def test_dtype_and_dtype_policy_conflicts_are_refused():
    with pytest.raises(errors.ConfigError, match=r"Dense: pass dtype= or dtype_policy=, not both; received dtype='float32', dtype_policy='mixed_bfloat16'"):
        layers.Dense(2, dtype="float32", dtype_policy="mixed_bfloat16")
    with pytest.raises(errors.ConfigError, match=r"Dense: dtype='mixed_float16' and dtype_policy='mixed_bfloat16' disagree"):
        layers.Dense(2, dtype="mixed_float16", dtype_policy="mixed_bfloat16")
    # Keras spells a policy as dtype=: that is the policy.
    assert layers.Dense(2, dtype="mixed_float16").dtype_policy == "mixed_float16"


def test_policy_resolution_layer_model_and_nested():
    """Own policy wins; an explicit dtype= keeps its dtype; others take the innermost
    container's policy; nested containers without one pass the outer one on."""
    seen: list = []
    Probe = _probe(seen)
    inner = kx.Sequential([Probe(name="inner_default"), Probe(name="inner_f16", dtype_policy="mixed_float16")])
    inner_own = kx.Sequential([Probe(name="inner_own_default")], dtype_policy="float32")
    model = kx.Sequential([
        Probe(name="default"), Probe(name="own_f32", dtype_policy="float32"),
        Probe(name="explicit_dtype", dtype="float32"), inner, inner_own,
    ], dtype_policy="mixed_bfloat16")
    x = jnp.ones((2, 3))
    params, state = model.init(jax.random.key(0), x)
    assert {str(a.dtype) for a in jax.tree.leaves(params)} == {"float32"}
    seen.clear()
    y, _ = model.apply(params, state, x)
    want = {  # name: (input dtype, weight dtype inside apply, compute_dtype)
        "default": ("bfloat16", "bfloat16", "bfloat16"),
        "own_f32": ("float32", "float32", "float32"),
        "explicit_dtype": ("float32", "float32", "float32"),
        "inner_default": ("bfloat16", "bfloat16", "bfloat16"),
        "inner_f16": ("float16", "float16", "float16"),
        "inner_own_default": ("float32", "float32", "float32"),
    }
    assert {n: tuple(rest) for n, *rest in seen} == want and len(seen) == len(want)
    assert y.dtype == F32
    # Without any policy nothing is cast: the layers see what they always saw.
    seen.clear()
    plain = kx.Sequential([Probe(name="p")])
    p, s = plain.init(jax.random.key(0), x.astype(BF16))
    seen.clear()
    plain.apply(p, s, x.astype(BF16))
    assert seen == [("p", "bfloat16", "float32", "float32")]


def test_a_layer_policy_applies_inside_a_model_without_one():
    model = kx.Sequential([layers.Dense(4, dtype_policy="mixed_bfloat16"), layers.Dense(2)])
    x = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    params, state = model.init(jax.random.key(0), x)
    h, _, _ = model.core.layers[0].apply_masked(params["dense"], {}, x, None)
    assert h.dtype == BF16
    y, _ = model.apply(params, state, x)
    assert y.dtype == F32  # the float32 Dense casts its bfloat16 input back (its own policy)


def test_intermediate_outputs_are_bf16_model_outputs_float32():
    x = np.random.default_rng(1).normal(size=(4, 6)).astype(np.float32)
    inp = kx.Input((6,))
    h = layers.Dense(8, activation="relu")(inp)
    out = layers.Dense(3)(h)
    model = kx.Model(inp, [h, out], dtype_policy="mixed_bfloat16")
    params, state = model.init(jax.random.key(0), x)
    (hc, oc), _ = model.core.apply(params, state, x)  # the pure core: compute dtype
    (hm, om), _ = model.apply(params, state, x)       # the model: float32 outputs
    assert (hc.dtype, oc.dtype, hm.dtype, om.dtype) == (BF16, BF16, F32, F32)
    # Reference: the same math with every operand rounded to bfloat16 by hand.
    r = lambda a: np.asarray(jnp.asarray(a, BF16), np.float32)
    k1, b1, k2, b2 = (params["dense"]["kernel"], params["dense"]["bias"],
                      params["dense_1"]["kernel"], params["dense_1"]["bias"])
    h_ref = np.maximum(r(r(x) @ r(k1)) + r(b1), 0)
    o_ref = r(r(h_ref) @ r(k2)) + r(b2)
    np.testing.assert_allclose(np.asarray(om), o_ref, rtol=3e-2, atol=3e-2)
    f32 = kx.Model(inp, [h, out])
    np.testing.assert_allclose(np.asarray(om), np.asarray(f32.apply(params, state, x)[0][1]), rtol=5e-2, atol=5e-2)


def test_softmax_runs_in_float32_under_a_mixed_policy():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5, 7)).astype(np.float32)
    model = kx.Sequential([layers.Dense(40, activation="softmax")], dtype_policy="mixed_bfloat16")
    params, state = model.init(jax.random.key(0), x)
    y, _, _ = model.core.apply_masked(params, state, x, None)
    assert y.dtype == F32
    logits = np.asarray((jnp.asarray(x, BF16) @ params["dense"]["kernel"].astype(BF16)
                         + params["dense"]["bias"].astype(BF16)).astype(F32), np.float64)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(np.asarray(y), e / e.sum(-1, keepdims=True), rtol=1e-5, atol=1e-7)
    soft = kx.Sequential([layers.Dense(40), layers.Softmax()], dtype_policy="mixed_bfloat16")
    y2, _, _ = soft.core.apply_masked(params, state, x, None)
    assert y2.dtype == F32
    np.testing.assert_allclose(np.asarray(y2), np.asarray(y), rtol=1e-6)


def test_batch_normalization_statistics_in_float32():
    # Values near 100 with unit spread: bfloat16 holds them to 0.5, and a bfloat16 mean
    # or variance would be far off; float32 statistics of the rounded inputs are exact.
    x = (100.0 + np.random.default_rng(3).normal(size=(64, 4))).astype(np.float32)
    model = kx.Sequential([layers.BatchNormalization()], dtype_policy="mixed_bfloat16")
    params, state = model.init(jax.random.key(0), x)
    y, new_state, _ = model.core.apply_masked(params, state, x, None, training=True)
    assert y.dtype == BF16 and new_state["batch_normalization"]["moving_mean"].dtype == F32
    xr = np.asarray(jnp.asarray(x, BF16), np.float64)
    ref = (xr - xr.mean(0)) / np.sqrt(xr.var(0) + 1e-3)
    np.testing.assert_allclose(np.asarray(y, np.float32), ref, atol=0.03)
    np.testing.assert_allclose(np.asarray(new_state["batch_normalization"]["moving_mean"]),
                               0.01 * xr.mean(0), rtol=1e-5)


def test_gradients_are_float32_and_match_the_float32_model():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(16, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 10, 16)
    make = lambda policy: kx.Sequential([layers.Conv2D(4, 3, activation="relu"), layers.Flatten(),
                                         layers.Dense(10, activation="softmax")], dtype_policy=policy)
    mixed, full = make("mixed_bfloat16"), make(None)
    params, state = full.init(jax.random.key(0), x)

    def grads(model):
        loss = lambda p: kx.losses.sparse_categorical_crossentropy(y, model.apply(p, state, x)[0]).mean()
        return jax.grad(loss)(params)

    gm, gf = grads(mixed), grads(full)
    assert {a.dtype for a in jax.tree.leaves(gm)} == {np.dtype("float32")}
    # bfloat16 keeps 8 bits of mantissa and XLA sums the conv's 576 positions per batch in
    # it: a few percent per tensor, far less than the gradient's own size.
    for a, b in zip(jax.tree.leaves(gm), jax.tree.leaves(gf)):
        assert np.linalg.norm(a - b) <= 0.1 * np.linalg.norm(b)
    flat = lambda g: np.concatenate([np.ravel(a) for a in jax.tree.leaves(g)])
    assert np.linalg.norm(flat(gm) - flat(gf)) <= 0.03 * np.linalg.norm(flat(gf))


def test_full_low_precision_policies_store_weights_in_that_dtype():
    x = jnp.ones((2, 3))
    p, _ = layers.Dense(2, dtype_policy="bfloat16").init(jax.random.key(0), x)
    assert {a.dtype for a in jax.tree.leaves(p)} == {np.dtype(BF16)}
    model = kx.Sequential([layers.Dense(2), layers.Dense(2, dtype="float32")], dtype_policy="float16")
    p, s = model.init(jax.random.key(0), x)
    assert p["dense"]["kernel"].dtype == F16 and p["dense_1"]["kernel"].dtype == F32
    assert model.apply(p, s, x)[0].dtype == F32  # the explicit float32 layer runs last
    nested = kx.Sequential([kx.Sequential([layers.Dense(2, dtype="bfloat16"), layers.Dense(2)])],
                           dtype_policy="mixed_bfloat16")
    p, _ = nested.init(jax.random.key(0), x)
    assert p["sequential"]["dense"]["kernel"].dtype == BF16  # an explicit dtype is kept
    assert p["sequential"]["dense_1"]["kernel"].dtype == F32


# -- config and saving ------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["bfloat16", "float16"])
def test_full_low_precision_policies_keep_keras_weight_order(policy):
    """get_weights / set_weights list gamma before beta (Keras's creation order) under every
    policy; casting the weights used to sort the keys, which swapped them silently."""
    def build(p):
        m = kx.Sequential([kx.Input((3,)), layers.Dense(3), layers.BatchNormalization()], dtype_policy=p)
        m.build(seed=0)
        return m

    model = build(policy)
    values = [np.full(a.shape, i + 1, np.float32) for i, a in enumerate(build(None).get_weights())]
    model.set_weights(values)  # kernel, bias, gamma, beta, moving_mean, moving_variance
    bn = model.params["batch_normalization"]
    np.testing.assert_array_equal(np.asarray(bn["gamma"], np.float32), 3.0)
    np.testing.assert_array_equal(np.asarray(bn["beta"], np.float32), 4.0)
    assert [float(np.asarray(a, np.float32).ravel()[0]) for a in model.get_weights()] == [1, 2, 3, 4, 5, 6]


def test_config_round_trip_and_none_is_left_out():
    assert "dtype_policy" not in layers.Dense(3).get_config()
    assert "dtype_policy" not in kx.Sequential([layers.Dense(3)]).get_config()
    model = kx.Sequential([layers.Dense(3, dtype_policy="float32"), layers.Dense(2)],
                          dtype_policy="mixed_float16")
    config = model.get_config()
    assert config["dtype_policy"] == "mixed_float16"
    assert config["layers"][0]["config"]["dtype_policy"] == "float32"
    again = kx.Sequential.from_config(config)
    assert again.dtype_policy == "mixed_float16" and again.get_config() == config
    inp = kx.Input((4,))
    fmodel = kx.Model(inp, layers.Dense(2)(inp), dtype_policy="mixed_bfloat16")
    fconfig = fmodel.get_config()
    back = kx.Model.from_config(fconfig)
    assert back.dtype_policy == "mixed_bfloat16" and back.core.dtype_policy == "mixed_bfloat16"
    assert back.get_config() == fconfig


def test_keras_dtype_policy_configs_are_understood():
    keras = pytest.importorskip("keras")
    kconf = keras.layers.Dense(3, dtype="mixed_bfloat16").get_config()["dtype"]
    assert isinstance(kconf, dict)  # Keras 3 writes a DTypePolicy object config
    layer = layers.Dense.from_config({"units": 3, "dtype": kconf})
    assert layer.dtype_policy == "mixed_bfloat16" and layer.dtype is None
    f32 = keras.layers.Dense(3, dtype="float32").get_config()["dtype"]
    assert layers.Dense.from_config({"units": 3, "dtype": f32}).dtype == "float32"


def test_save_and_load_a_mixed_model(tmp_path):
    x = np.random.default_rng(5).normal(size=(8, 5)).astype(np.float32)
    y = np.random.default_rng(6).normal(size=(8, 2)).astype(np.float32)
    model = kx.Sequential([kx.Input((5,)), layers.Dense(6, activation="relu"), layers.Dense(2)],
                          dtype_policy="mixed_bfloat16")
    model.compile("adam", "mse")
    model.fit(x, y, epochs=2, verbose=0, seed=0)
    path = str(tmp_path / "m.kerax")
    model.save(path)
    loaded = kx.load_model(path)
    assert loaded.dtype_policy == "mixed_bfloat16"
    assert {a.dtype for a in jax.tree.leaves(loaded.params)} == {np.dtype("float32")}
    want, got = model.predict(x), loaded.predict(x)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)


# -- training: mixed_bfloat16 on the digits CNN --------------------------------------------------


def _digits_cnn(policy):
    return kx.Sequential([kx.Input((8, 8, 1)), layers.Conv2D(16, 3, activation="relu"),
                          layers.Flatten(), layers.Dense(10, activation="softmax")],
                         dtype_policy=policy)


def _train_digits(policy):
    (xtr, ytr), (xte, yte) = kx.datasets.load_digits()
    model = _digits_cnn(policy)
    model.compile(kx.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(xtr, ytr, epochs=4, batch_size=64, verbose=0, seed=0)
    return model.evaluate(xte, yte, verbose=0)[1]


@pytest.fixture(scope="module")
def float32_digits_accuracy():
    return _train_digits(None)


def test_mixed_bfloat16_digits_cnn_reaches_float32_accuracy(float32_digits_accuracy):
    mixed = _train_digits("mixed_bfloat16")
    print(f"digits CNN test accuracy: float32 {float32_digits_accuracy:.4f}, mixed_bfloat16 {mixed:.4f}")
    assert float32_digits_accuracy > 0.9
    assert abs(mixed - float32_digits_accuracy) <= 0.01
