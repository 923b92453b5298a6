"""Numerical parity with Keras 3 (JAX backend) for the core, merge, convolution and
pooling layers: Keras's weights copied in by name, outputs equal within 1e-5."""

from __future__ import annotations

import numpy as np
import pytest

from keras_oracle import compare, keras
from kerax import layers

RNG = np.random.default_rng(0)


def _x(*shape):
    return RNG.normal(size=shape).astype(np.float32)


@pytest.mark.parametrize("kw", [{}, {"activation": "relu"}, {"use_bias": False}, {"activation": "gelu"}])
def test_dense(kw):
    compare(layers.Dense(5, **kw), keras.layers.Dense(5, **kw), _x(3, 4))
    compare(layers.Dense(2, **kw), keras.layers.Dense(2, **kw), _x(2, 3, 4))


def test_embedding():
    ids = RNG.integers(0, 10, size=(3, 5)).astype(np.int32)
    compare(layers.Embedding(10, 4), keras.layers.Embedding(10, 4), ids)


@pytest.mark.parametrize("name", ["Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"])
def test_merge(name):
    xs = [_x(3, 4), _x(3, 4)]
    compare(getattr(layers, name)(), getattr(keras.layers, name)(), xs)


def test_concatenate_and_dot():
    compare(layers.Concatenate(axis=1), keras.layers.Concatenate(axis=1), [_x(2, 3, 4), _x(2, 2, 4)])
    compare(layers.Dot(axes=1), keras.layers.Dot(axes=1), [_x(3, 4), _x(3, 4)])
    compare(layers.Dot(axes=(2, 2), normalize=True), keras.layers.Dot(axes=(2, 2), normalize=True),
            [_x(2, 3, 4), _x(2, 5, 4)])


@pytest.mark.parametrize("make", [
    lambda L: L.Flatten(), lambda L: L.Reshape((4, 3)), lambda L: L.Permute((2, 1)),
    lambda L: L.Activation("softmax"),
])
def test_reshaping(make):
    compare(make(layers), make(keras.layers), _x(2, 3, 4))
    compare(layers.RepeatVector(3), keras.layers.RepeatVector(3), _x(2, 4))


CONV = [
    ("Conv1D", (2, 9, 3), dict(filters=4, kernel_size=3)),
    ("Conv1D", (2, 9, 3), dict(filters=4, kernel_size=3, padding="causal", dilation_rate=2)),
    ("Conv1D", (2, 9, 4), dict(filters=4, kernel_size=2, strides=2, padding="same", groups=2)),
    ("Conv2D", (2, 8, 8, 3), dict(filters=4, kernel_size=3, padding="same", strides=2)),
    ("Conv2D", (2, 8, 8, 3), dict(filters=4, kernel_size=(3, 2), dilation_rate=2, activation="relu")),
    ("Conv2D", (2, 7, 7, 4), dict(filters=6, kernel_size=3, groups=2, use_bias=False)),
    ("Conv3D", (1, 5, 5, 5, 2), dict(filters=3, kernel_size=2, padding="same")),
    ("Conv1DTranspose", (2, 5, 3), dict(filters=4, kernel_size=3, strides=2)),
    ("Conv2DTranspose", (2, 5, 5, 3), dict(filters=4, kernel_size=3, strides=2, padding="same")),
    ("Conv2DTranspose", (2, 4, 4, 3), dict(filters=2, kernel_size=2, strides=3)),
    ("Conv3DTranspose", (1, 3, 3, 3, 2), dict(filters=2, kernel_size=2, strides=2)),
    ("DepthwiseConv1D", (2, 9, 3), dict(kernel_size=3, depth_multiplier=2)),
    ("DepthwiseConv2D", (2, 8, 8, 3), dict(kernel_size=3, padding="same", depth_multiplier=2, strides=2)),
    ("SeparableConv1D", (2, 9, 3), dict(filters=4, kernel_size=3, depth_multiplier=2)),
    ("SeparableConv2D", (2, 8, 8, 3), dict(filters=4, kernel_size=3, padding="same", dilation_rate=2)),
]


@pytest.mark.parametrize("name, shape, kw", CONV, ids=[f"{c[0]}-{i}" for i, c in enumerate(CONV)])
def test_convolutions(name, shape, kw):
    compare(getattr(layers, name)(**kw), getattr(keras.layers, name)(**kw), _x(*shape), rtol=1e-4, atol=1e-5)


POOL = [
    ("MaxPooling1D", (2, 9, 3), dict(pool_size=2)),
    ("MaxPooling2D", (2, 7, 7, 3), dict(pool_size=3, strides=2, padding="same")),
    ("MaxPooling3D", (1, 4, 4, 4, 2), dict(pool_size=2)),
    ("AveragePooling1D", (2, 9, 3), dict(pool_size=3, strides=2, padding="same")),
    ("AveragePooling2D", (2, 7, 7, 3), dict(pool_size=2, padding="same")),
    ("AveragePooling3D", (1, 5, 5, 5, 2), dict(pool_size=2, strides=2, padding="same")),
    ("GlobalAveragePooling1D", (2, 9, 3), dict()),
    ("GlobalAveragePooling2D", (2, 5, 5, 3), dict(keepdims=True)),
    ("GlobalMaxPooling2D", (2, 5, 5, 3), dict()),
    ("GlobalMaxPooling3D", (1, 3, 3, 3, 2), dict(keepdims=True)),
]


@pytest.mark.parametrize("name, shape, kw", POOL, ids=[f"{c[0]}-{i}" for i, c in enumerate(POOL)])
def test_pooling(name, shape, kw):
    compare(getattr(layers, name)(**kw), getattr(keras.layers, name)(**kw), _x(*shape))


def test_sequential_model_with_copied_weights():
    import kerax as kx

    k_model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                                keras.layers.MaxPooling2D(2), keras.layers.Flatten(), keras.layers.Dense(3)])
    model = kx.Sequential([kx.Input((8, 8, 1)), layers.Conv2D(4, 3, activation="relu"),
                           layers.MaxPooling2D(2), layers.Flatten(), layers.Dense(3)])
    model.build()
    model.set_weights(k_model.get_weights())  # Keras's flat order == kerax's
    x = _x(5, 8, 8, 1)
    np.testing.assert_allclose(model.predict(x), k_model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
