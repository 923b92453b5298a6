"""Core, merge, reshaping and regularization layers against NumPy formulas."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kerax import errors, layers

KEY = jax.random.key(0)
RNG = np.random.default_rng(0)


def _run(layer, x, **kw):
    params, state = layer.init(KEY, x)
    return np.asarray(layer.apply(params, state, x, **kw)[0]), params


def test_dense_matches_numpy_and_keras_layout():
    x = RNG.normal(size=(5, 3)).astype(np.float32)
    y, p = _run(layers.Dense(4, activation="tanh", bias_initializer="ones"), x)
    k, b = np.asarray(p["kernel"], np.float64), np.asarray(p["bias"], np.float64)
    assert k.shape == (3, 4) and b.shape == (4,)
    np.testing.assert_allclose(y, np.tanh(x.astype(np.float64) @ k + b), rtol=1e-5, atol=1e-6)
    limit = np.sqrt(6 / (3 + 4))  # glorot_uniform
    assert np.all(np.abs(k) <= limit) and np.all(b == 1)


def test_dense_on_rank3_applies_to_last_axis():
    x = RNG.normal(size=(2, 3, 5)).astype(np.float32)
    y, p = _run(layers.Dense(2, use_bias=False), x)
    np.testing.assert_allclose(y, np.einsum("bti,io->bto", x, np.asarray(p["kernel"])), rtol=1e-5, atol=1e-6)
    assert "bias" not in p


@pytest.mark.parametrize("cls, ref", [
    (layers.Add, lambda a, b, c: a + b + c),
    (layers.Multiply, lambda a, b, c: a * b * c),
    (layers.Average, lambda a, b, c: (a + b + c) / 3),
    (layers.Maximum, lambda a, b, c: np.maximum(np.maximum(a, b), c)),
    (layers.Minimum, lambda a, b, c: np.minimum(np.minimum(a, b), c)),
])
def test_elementwise_merges(cls, ref):
    xs = [RNG.normal(size=(4, 3)).astype(np.float32) for _ in range(3)]
    y, _ = _run(cls(), xs)
    np.testing.assert_allclose(y, ref(*xs), rtol=1e-6)


def test_subtract_concatenate_and_broadcast():
    a, b = RNG.normal(size=(4, 3)).astype(np.float32), RNG.normal(size=(4, 1)).astype(np.float32)
    np.testing.assert_allclose(_run(layers.Subtract(), [a, b])[0], a - b, rtol=1e-6)
    c = RNG.normal(size=(4, 2, 5)).astype(np.float32)
    d = RNG.normal(size=(4, 3, 5)).astype(np.float32)
    np.testing.assert_array_equal(_run(layers.Concatenate(axis=1), [c, d])[0], np.concatenate([c, d], 1))


def test_dot_matches_keras_batch_dot():
    a = RNG.normal(size=(4, 3)).astype(np.float32)
    b = RNG.normal(size=(4, 3)).astype(np.float32)
    y, _ = _run(layers.Dot(axes=1), [a, b])
    np.testing.assert_allclose(y, np.sum(a * b, axis=1, keepdims=True), rtol=1e-5)
    p = RNG.normal(size=(2, 3, 4)).astype(np.float32)
    q = RNG.normal(size=(2, 5, 4)).astype(np.float32)
    y, _ = _run(layers.Dot(axes=(2, 2), normalize=True), [p, q])
    pn = p / np.linalg.norm(p, axis=2, keepdims=True)
    qn = q / np.linalg.norm(q, axis=2, keepdims=True)
    np.testing.assert_allclose(y, np.einsum("bik,bjk->bij", pn, qn), rtol=1e-5, atol=1e-6)


def test_functional_merge_helpers_build_layers():
    import kerax as kx

    a, b = kx.Input((3,)), kx.Input((3,))
    out = layers.concatenate([layers.add([a, b]), layers.multiply([a, b])])
    assert out.shape == (None, 6) and type(out.node.layer).__name__ == "Concatenate"


def test_reshaping_layers():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(_run(layers.Flatten(), x)[0], x.reshape(2, 12))
    np.testing.assert_array_equal(_run(layers.Reshape((4, -1)), x)[0], x.reshape(2, 4, 3))
    np.testing.assert_array_equal(_run(layers.Permute((2, 1)), x)[0], x.transpose(0, 2, 1))
    v = x[:, 0, :]
    np.testing.assert_array_equal(_run(layers.RepeatVector(3), v)[0], np.repeat(v[:, None], 3, axis=1))
    np.testing.assert_array_equal(_run(layers.Identity(), x)[0], x)


def test_activation_layer_and_embedding():
    x = RNG.normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_allclose(_run(layers.Activation("softmax"), x)[0],
                               np.exp(x) / np.exp(x).sum(1, keepdims=True), rtol=1e-5)
    ids = np.array([[0, 2], [9, 1]], np.int32)
    y, p = _run(layers.Embedding(10, 3), ids)
    np.testing.assert_array_equal(y, np.asarray(p["embeddings"])[ids])
    assert np.all(np.abs(np.asarray(p["embeddings"])) <= 0.05)
    y, _ = _run(layers.Embedding(10, 3), np.array([[10, -1]], np.int32))
    assert np.all(np.isnan(y)), "out-of-range ids must not silently read another row"


def test_dropout_statistics_and_scaling():
    x = np.ones((200, 50), np.float32)
    layer = layers.Dropout(0.3)
    y, _ = _run(layer, x, rng=jax.random.key(7), training=True)
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.02
    np.testing.assert_allclose(y[kept], 1 / 0.7, rtol=1e-6)
    np.testing.assert_array_equal(_run(layer, x)[0], x)  # inference: identity
    y, _ = _run(layers.Dropout(0.5, noise_shape=(None, 1)), x, rng=jax.random.key(1), training=True)
    assert all(len(set(row.tolist())) == 1 for row in y), "noise_shape shares the mask along axis 1"


def test_dropout_keys_differ_per_call_site():
    import kerax as kx

    d = layers.Dropout(0.5)
    a = kx.Input((100,))
    model = kx.Model(a, layers.concatenate([d(a), d(a)]))
    y, _ = model.apply({}, {}, jnp.ones((1, 100)), rng=jax.random.key(0), training=True)
    assert not np.array_equal(np.asarray(y[:, :100]) == 0, np.asarray(y[:, 100:]) == 0)


def test_stax_pair_and_unpacking():
    from jax.example_libraries import stax

    layer = layers.FunctionLayer(*stax.serial(stax.Dense(4), stax.Relu))
    x = RNG.normal(size=(2, 3)).astype(np.float32)
    y, p = _run(layer, x)
    (w, b), _ = p
    np.testing.assert_allclose(y, np.maximum(x @ np.asarray(w) + np.asarray(b), 0), rtol=1e-5, atol=1e-6)
    init, apply = layers.Dense(2)
    params, state = init(KEY, x)
    assert apply(params, state, x)[0].shape == (2, 2)


def test_custom_layer_by_subclassing_is_a_frozen_dataclass():
    import dataclasses

    import kerax as kx

    class Scale(kx.Layer):
        factor: float = 2.0

        def init(self, rng, x):
            return {"s": jnp.ones(x.shape[-1:])}, {}

        def apply(self, params, state, x, *, rng=None, training=False):
            return x * params["s"] * self.factor, state

    layer = Scale(3.0, name="scale")
    assert layer.get_config() == {"name": "scale", "input_shape": None, "dtype": None, "factor": 3.0}
    with pytest.raises(dataclasses.FrozenInstanceError):
        layer.factor = 1.0
    x = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(_run(layer, x)[0], 3 * x)
    assert Scale() is not Scale() and Scale() != Scale()  # identity, not equality
    with pytest.raises(errors.UnsafeContentError, match="unknown layer class 'Scale'"):
        kx.Sequential.from_config({"name": None, "input_shape": None, "layers": [{"class_name": "Scale", "config": {}}]})
    kx.register_layer(Scale)
    model = kx.Sequential.from_config({"name": None, "input_shape": None, "layers": [{"class_name": "Scale", "config": {"factor": 5.0}}]})
    assert model.layers[0].factor == 5.0
