"""Spatial reshaping, preprocessing, activation and noise layers: Keras 3 parity over grids of
options, NumPy references, training-mode statistics of the noise layers, activity
regularization in the loss, masks, and every error message."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import kerax as kx
from keras_oracle import compare, keras
from kerax import errors, layers
from kerax.core.layer import aux_losses
from kerax.layers.activation import ELU, LeakyReLU, PReLU, ReLU, Softmax
from kerax.layers.noise import (
    ActivityRegularization,
    AlphaDropout,
    GaussianDropout,
    GaussianNoise,
    SpatialDropout1D,
    SpatialDropout2D,
    SpatialDropout3D,
)
from kerax.layers.preprocessing import CenterCrop, Normalization, Rescaling, Resizing
from kerax.layers.spatial_reshaping import (
    Cropping1D,
    Cropping2D,
    Cropping3D,
    UpSampling1D,
    UpSampling2D,
    UpSampling3D,
    ZeroPadding1D,
    ZeroPadding2D,
    ZeroPadding3D,
)

KEY = jax.random.key(0)
R = np.random.default_rng(0)
X3 = R.normal(size=(2, 5, 3)).astype("float32")
X4 = R.normal(size=(2, 5, 6, 3)).astype("float32")
X5 = R.normal(size=(2, 4, 5, 3, 2)).astype("float32")


def run(layer, x, **kwargs):
    params, state = layer.init(KEY, x)
    return layer.apply(params, state, x, **kwargs)[0]


# -- Keras parity: spatial reshaping ------------------------------------------------------------

SPATIAL = [
    ("UpSampling1D", X3, [2, 3]),
    ("UpSampling3D", X5, [2, (1, 2, 3)]),
    ("ZeroPadding1D", X3, [1, (0, 2)]),
    ("ZeroPadding2D", X4, [2, (1, 2), ((1, 0), (2, 3))]),
    ("ZeroPadding3D", X5, [1, (1, 0, 2), ((0, 1), (2, 0), (1, 1))]),
    ("Cropping1D", X3, [1, (0, 2), (3, 0)]),
    ("Cropping2D", X4, [1, (1, 2), ((0, 1), (2, 0)), ((0, 0), (0, 0))]),
    ("Cropping3D", X5, [1, (1, 0, 1), ((0, 1), (1, 0), (0, 0))]),
]


@pytest.mark.parametrize("cls, x, args", SPATIAL, ids=[s[0] for s in SPATIAL])
def test_spatial_layers_match_keras(cls, x, args):
    import kerax.layers.spatial_reshaping as mod

    for arg in args:
        y, _ = compare(getattr(mod, cls)(arg), getattr(keras.layers, cls)(arg), x)
        assert y.dtype == x.dtype


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "bicubic", "lanczos3", "lanczos5"])
def test_up_sampling2d_matches_keras(interpolation):
    for size in [2, (1, 3)]:
        compare(UpSampling2D(size, interpolation=interpolation),
                keras.layers.UpSampling2D(size, interpolation=interpolation), X4)


def test_spatial_layers_match_numpy():
    np.testing.assert_array_equal(run(UpSampling1D(2), X3), np.repeat(X3, 2, axis=1))
    np.testing.assert_array_equal(run(UpSampling2D((2, 3)), X4), np.repeat(np.repeat(X4, 2, 1), 3, 2))
    np.testing.assert_array_equal(run(ZeroPadding2D(((1, 0), (0, 2))), X4),
                                  np.pad(X4, [(0, 0), (1, 0), (0, 2), (0, 0)]))
    np.testing.assert_array_equal(run(Cropping3D(((1, 0), (0, 2), (1, 1))), X5), X5[:, 1:, :-2, 1:-1])
    assert ZeroPadding2D().padding == ((1, 1), (1, 1)) and Cropping2D(2).cropping == ((2, 2), (2, 2))
    assert ZeroPadding1D().padding == (1, 1) and Cropping1D(2).cropping == (2, 2)


# -- Keras parity: preprocessing ----------------------------------------------------------------


def test_rescaling_matches_keras():
    xi = R.integers(0, 255, (2, 4, 4, 3)).astype("uint8")
    for scale, offset in [(1 / 255, 0.0), (1 / 127.5, -1.0), ([0.5, 1.0, 2.0], [0.0, 1.0, -1.0])]:
        y, _ = compare(Rescaling(scale, offset), keras.layers.Rescaling(scale, offset), xi)
        assert y.dtype == jnp.float32


@pytest.mark.parametrize("hw", [(3, 4), (5, 6), (4, 6), (7, 2), (8, 9), (2, 8)])
def test_center_crop_matches_keras(hw):
    compare(CenterCrop(*hw), keras.layers.CenterCrop(*hw), X4)
    compare(CenterCrop(*hw), keras.layers.CenterCrop(*hw), X4[0])  # one image, rank 3


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest", "bicubic", "lanczos3", "lanczos5"])
def test_resizing_matches_keras(interpolation):
    for hw, antialias in [((3, 4), False), ((8, 9), False), ((2, 3), True)]:
        kw = dict(interpolation=interpolation, antialias=antialias)
        compare(Resizing(*hw, **kw), keras.layers.Resizing(*hw, **kw), X4)


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_resizing_to_aspect_ratio_matches_keras(interpolation):
    for hw in [(3, 4), (8, 9), (2, 7)]:
        for crop, pad in [(True, False), (False, True)]:
            kw = dict(interpolation=interpolation, crop_to_aspect_ratio=crop, pad_to_aspect_ratio=pad)
            compare(Resizing(*hw, **kw), keras.layers.Resizing(*hw, **kw), X4)
    kw = dict(interpolation=interpolation, pad_to_aspect_ratio=True, fill_value=2.0)
    compare(Resizing(4, 6, **kw), keras.layers.Resizing(4, 6, **kw), X4[0])  # one image, rank 3


def test_resizing_keeps_integer_images_integer_like_keras():
    xi = R.integers(0, 255, (2, 5, 7, 3)).astype("uint8")
    for interpolation in ["bilinear", "bicubic", "nearest"]:
        y = run(Resizing(3, 4, interpolation=interpolation), xi)
        ref = np.asarray(keras.layers.Resizing(3, 4, interpolation=interpolation)(xi))
        assert y.dtype == jnp.uint8
        np.testing.assert_array_equal(np.asarray(y), ref)


NORM_GRID = [
    dict(axis=-1),
    dict(axis=None),
    dict(axis=1),
    dict(axis=(1, 2)),
    dict(axis=(-1, 1), invert=True),
]


@pytest.mark.parametrize("kw", NORM_GRID, ids=str)
def test_normalization_adapt_matches_keras(kw):
    data = (R.normal(size=(20, 3, 4)) * [1.0, 2.0, 0.5, 3.0] + [0.0, 1.0, -2.0, 5.0]).astype("float32")
    ref = keras.layers.Normalization(**kw)
    ref.adapt(data)
    norm = Normalization(**kw)
    adapted = norm.adapt(data)
    assert adapted is not norm and norm.mean is None
    np.testing.assert_allclose(np.asarray(adapted.mean), np.asarray(ref.adapt_mean), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(adapted.variance), np.asarray(ref.adapt_variance), rtol=1e-5)
    x = data[:5]
    np.testing.assert_allclose(np.asarray(run(adapted, x)), np.asarray(ref(x)), rtol=1e-5, atol=1e-5)
    # a list of batches gives the statistics of the whole (Keras's iterable path, exactly)
    batched = norm.adapt([data[:7], (data[7:], np.zeros(13))])
    np.testing.assert_allclose(np.asarray(batched.mean), np.asarray(adapted.mean), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(batched.variance), np.asarray(adapted.variance), rtol=1e-6)


def test_normalization_given_statistics_match_keras():
    grid = [
        dict(mean=1.0, variance=4.0),
        dict(mean=[1.0, 2.0, 3.0], variance=[1.0, 0.25, 9.0]),
        dict(mean=[1.0, 2.0, 3.0], variance=[1.0, 0.25, 0.0], invert=True),
        dict(axis=(1, 2), mean=[1.0, 2.0, 3.0], variance=[1.0, 0.25, 9.0]),  # broadcast from the right
        dict(axis=(1, 2), mean=[[1.0, 2.0, 3.0]] * 5, variance=[[2.0, 0.5, 1.0]] * 5),
    ]
    for kw in grid:
        np.testing.assert_allclose(np.asarray(run(Normalization(**kw), X3)),
                                   np.asarray(keras.layers.Normalization(**kw)(X3)), rtol=1e-5, atol=1e-5)


def test_normalization_numpy_reference_and_config():
    data = R.normal(size=(50, 4)) * 3 + 1
    norm = Normalization().adapt(data)
    np.testing.assert_allclose(norm.mean, data.mean(0), rtol=1e-12)
    np.testing.assert_allclose(norm.variance, data.var(0), rtol=1e-12)  # population variance
    cfg = norm.get_config()
    assert isinstance(cfg["mean"], list) and len(cfg["mean"]) == 4 and cfg["axis"] == [-1]
    clone = Normalization.from_config(cfg)
    np.testing.assert_array_equal(run(clone, data[:3]), run(norm, data[:3]))
    assert np.asarray(run(norm, data)).std(0) == pytest.approx(np.ones(4), rel=1e-4)
    scalar = Normalization(axis=None).adapt(iter([data[:10], data[10:]]))
    assert scalar.mean == pytest.approx(data.mean()) and scalar.variance == pytest.approx(data.var())


# -- Keras parity: activations ------------------------------------------------------------------


def test_relu_matches_keras_and_numpy():
    x = np.linspace(-3, 8, 45, dtype="float32").reshape(3, 15)
    for max_value in [None, 6.0, 1.5]:
        for slope in [0.0, 0.1]:
            for threshold in [0.0, 0.5]:
                kw = dict(max_value=max_value, negative_slope=slope, threshold=threshold)
                y, _ = compare(ReLU(**kw), keras.layers.ReLU(**kw), x)
                top = np.inf if max_value is None else max_value
                ref = np.where(x >= top, top, np.where(x > threshold, x, slope * (x - threshold)))
                np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-6)


def test_leaky_relu_elu_match_keras():
    for slope in [0.3, 0.01, 0.0]:
        compare(LeakyReLU(slope), keras.layers.LeakyReLU(slope), X3)
    for alpha in [1.0, 0.5, 2.0]:
        compare(ELU(alpha), keras.layers.ELU(alpha), X3)


@pytest.mark.parametrize("shared_axes, x", [(None, X3), ([1], X3), ([1, 2], X4), (3, X4)])
def test_prelu_matches_keras(shared_axes, x):
    ref = keras.layers.PReLU(alpha_initializer="random_uniform", shared_axes=shared_axes)
    compare(PReLU(shared_axes=shared_axes), ref, x)
    params, _ = PReLU(shared_axes=shared_axes).init(KEY, x)
    assert params["alpha"].shape == tuple(ref.alpha.shape)
    np.testing.assert_array_equal(params["alpha"], 0.0)  # "zeros": starts as a ReLU


@pytest.fixture
def x64():
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


def test_gradients_match_finite_differences(x64):
    for layer, shape in [(PReLU(alpha_initializer="random_uniform", shared_axes=1, dtype="float64"), (2, 3, 4)),
                         (Normalization(mean=[1.0, 2.0], variance=[2.0, 3.0], dtype="float64"), (2, 2))]:
        x = jnp.asarray(R.normal(size=shape))
        params, state = layer.init(KEY, x)
        assert all(v.dtype == jnp.float64 for v in jax.tree.leaves(params))
        check_grads(lambda p, x: layer.apply(p, state, x)[0], (params, x), order=1, modes=("rev",),
                    atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("axis", [-1, 1, (1, 2)])
def test_softmax_matches_keras_with_and_without_mask(axis):
    compare(Softmax(axis), keras.layers.Softmax(axis), X3)
    mask = R.random(X3.shape) > 0.3
    y, _ = compare(Softmax(axis), keras.layers.Softmax(axis), X3, keras_kwargs={"mask": mask},
                   kx_kwargs={"mask": mask})
    assert np.all(np.asarray(y)[~mask] == 0)
    m2 = R.random((1, 5, 3)) > 0.5  # broadcast from the right, as Keras
    compare(Softmax(axis), keras.layers.Softmax(axis), X3, keras_kwargs={"mask": m2}, kx_kwargs={"mask": m2})


def test_softmax_padding_mask_and_propagation():
    mask = np.array([[True, True, False, True, False], [True] * 5])
    y = np.asarray(run(Softmax(), X3, mask=mask))
    assert np.all(y[0, [2, 4]] == 0) and np.allclose(y[0, [0, 1, 3]].sum(-1), 1, atol=1e-6)
    model = kx.Sequential([layers.Embedding(10, 4, mask_zero=True), ReLU(), LeakyReLU(), ELU(),
                           PReLU(), Softmax(), Rescaling(2.0), GaussianNoise(0.1), ActivityRegularization()])
    ids = np.array([[1, 2, 0, 0], [3, 0, 4, 5]])
    params, state = model.init(KEY, ids)
    probs, _, out_mask = model.apply_masked(params, state, ids, None)
    np.testing.assert_array_equal(out_mask, ids != 0)
    np.testing.assert_array_equal(np.asarray(probs)[ids == 0], 0.0)
    np.testing.assert_allclose(np.asarray(probs)[ids != 0].sum(-1), 2.0, rtol=1e-5)


# -- noise layers --------------------------------------------------------------------------------

NOISE = [
    (SpatialDropout1D(0.4), keras.layers.SpatialDropout1D(0.4), X3),
    (SpatialDropout2D(0.4), keras.layers.SpatialDropout2D(0.4), X4),
    (SpatialDropout3D(0.4), keras.layers.SpatialDropout3D(0.4), X5),
    (GaussianNoise(0.5), keras.layers.GaussianNoise(0.5), X4),
    (GaussianDropout(0.3), keras.layers.GaussianDropout(0.3), X4),
    (AlphaDropout(0.3), keras.layers.AlphaDropout(0.3), X4),
]


@pytest.mark.parametrize("kx_layer, keras_layer, x", NOISE, ids=[type(n[0]).__name__ for n in NOISE])
def test_noise_layers_are_identity_in_inference_like_keras(kx_layer, keras_layer, x):
    y, _ = compare(kx_layer, keras_layer, x, training=False)
    np.testing.assert_array_equal(y, x)
    assert kx_layer.compute_mask(x, "m") == "m"


@pytest.mark.parametrize("cls, shape", [(SpatialDropout1D, (64, 6, 32)), (SpatialDropout2D, (64, 3, 4, 32)),
                                        (SpatialDropout3D, (64, 2, 3, 2, 32))])
def test_spatial_dropout_drops_whole_channels(cls, shape):
    rate = 0.3
    y = np.asarray(run(cls(rate), np.ones(shape, "float32"), training=True, rng=jax.random.key(5)))
    per_channel = y.reshape(shape[0], -1, shape[-1])
    assert np.all(per_channel == per_channel[:, :1])  # one decision per (example, channel)
    assert set(np.unique(y)) <= {0.0, np.float32(1 / (1 - rate))}
    assert abs((per_channel[:, 0] == 0).mean() - rate) < 0.05


def test_gaussian_noise_and_dropout_statistics():
    zeros = np.zeros((200, 500), "float32")
    y = np.asarray(run(GaussianNoise(0.5), zeros, training=True, rng=jax.random.key(1)))
    assert abs(y.mean()) < 0.01 and abs(y.std() - 0.5) < 0.01
    rate = 0.2
    y = np.asarray(run(GaussianDropout(rate), zeros + 2.0, training=True, rng=jax.random.key(2)))
    assert abs(y.mean() - 2.0) < 0.02 and abs(y.std() - 2.0 * np.sqrt(rate / (1 - rate))) < 0.02


def test_alpha_dropout_keeps_mean_and_variance():
    x = R.normal(size=(400, 500)).astype("float32")
    for rate in [0.1, 0.3]:
        y = np.asarray(run(AlphaDropout(rate), x, training=True, rng=jax.random.key(3)))
        assert abs(y.mean()) < 0.01 and abs(y.var() - 1.0) < 0.02
        alpha_p = -1.6732632423543772 * 1.0507009873554805
        a = ((1 - rate) * (1 + rate * alpha_p**2)) ** -0.5
        dropped = np.isclose(y, a * alpha_p - a * alpha_p * rate)
        assert abs(dropped.mean() - rate) < 0.01
    y = np.asarray(run(AlphaDropout(0.5, noise_shape=(None, 1)), x[:, :20], training=True, rng=KEY))
    assert np.all((y == y[:, :1]).all(1) | ~np.isclose(y, y[:, :1]).all(1))  # rows dropped whole
    assert np.isclose(y, y[:, :1]).all(1).any()


def test_noise_layers_are_reproducible_and_seeded():
    x = np.ones((8, 16), "float32")
    for layer in [GaussianNoise(0.3), GaussianDropout(0.3), AlphaDropout(0.3)]:
        a = run(layer, x, training=True, rng=jax.random.key(1))
        np.testing.assert_array_equal(a, run(layer, x, training=True, rng=jax.random.key(1)))
        assert not np.array_equal(a, run(layer, x, training=True, rng=jax.random.key(2)))
        seeded = type(layer)(0.3, seed=7)
        assert not np.array_equal(a, run(seeded, x, training=True, rng=jax.random.key(1)))
        assert jax.jit(lambda x, k: seeded.apply({}, {}, x, rng=k, training=True)[0])(x, KEY).shape == x.shape
