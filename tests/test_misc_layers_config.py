"""ActivityRegularization's penalty, and config round trips and errors of the reshaping,
preprocessing, activation and noise layers."""

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
from test_misc_layers import (  # shared data and references
    KEY,
    R,
    X3,
    X4,
    X5,
)


# -- activity regularization ---------------------------------------------------------------------


def test_activity_regularization_penalty_in_state():
    x = R.normal(size=(4, 3, 2)).astype("float32")
    layer = ActivityRegularization(l1=0.01, l2=0.1)
    params, state = layer.init(KEY, x)
    assert params == {} and jax.tree.map(jnp.shape, state) == {"aux_loss": ()}
    y, new_state = layer.apply(params, state, x)
    np.testing.assert_array_equal(y, x)
    expected = (0.01 * np.abs(x).sum() + 0.1 * np.square(x).sum()) / 4  # Keras 3: / batch size
    assert float(aux_losses(new_state)) == pytest.approx(expected, rel=1e-6)
    assert float(aux_losses(layer.apply(params, state, x, training=True)[1])) == pytest.approx(expected, rel=1e-6)
    model = kx.Sequential([layers.Dense(3), layer, ActivityRegularization(l2=1.0)])
    p, s = model.init(KEY, x)
    h = np.asarray(model.apply(p, s, x)[0])
    total = expected_for(h, 0.01, 0.1) + expected_for(h, 0.0, 1.0)
    assert float(aux_losses(model.apply(p, s, x)[1])) == pytest.approx(total, rel=1e-5)


def expected_for(h, l1, l2):
    return (l1 * np.abs(h).sum() + l2 * np.square(h).sum()) / h.shape[0]


def _pair(l1, l2):
    x = R.normal(size=(16, 4)).astype("float32")
    y = R.normal(size=(16, 2)).astype("float32")
    plain = kx.Sequential([layers.Dense(2, input_shape=(4,))])
    reg = kx.Sequential([layers.Dense(2, input_shape=(4,)), ActivityRegularization(l1=l1, l2=l2)])
    for m in (plain, reg):
        m.compile(optimizer=kx.optimizers.SGD(0.1), loss="mse")
        m.build(seed=0)
    reg.params = plain.params
    return x, y, plain, reg


def test_evaluate_and_fit_include_the_penalty_like_keras():
    l1, l2 = 0.01, 0.05
    x, y, plain, reg = _pair(l1, l2)
    h = np.asarray(plain.predict(x, verbose=0))
    penalty = expected_for(h, l1, l2)
    base = plain.evaluate(x, y, batch_size=16, verbose=0)
    assert reg.evaluate(x, y, batch_size=16, verbose=0) == pytest.approx(base + penalty, rel=1e-5)
    # Keras computes the same evaluation loss with the same weights
    ref = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2), keras.layers.ActivityRegularization(l1, l2)])
    ref.layers[0].set_weights([np.asarray(plain.params["dense"]["kernel"]), np.asarray(plain.params["dense"]["bias"])])
    ref.compile(optimizer="sgd", loss="mse")
    assert ref.evaluate(x, y, batch_size=16, verbose=0) == pytest.approx(base + penalty, rel=1e-5)
    # one SGD step on the whole batch follows the gradient of mse + penalty
    start = plain.params

    def loss(p):
        out = x @ p["dense"]["kernel"] + p["dense"]["bias"]
        return jnp.mean(jnp.mean((out - y) ** 2, -1)) + (l1 * jnp.abs(out).sum() + l2 * (out**2).sum()) / 16

    grads = jax.grad(loss)(start)
    reg.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    expected = jax.tree.map(lambda p, g: p - 0.1 * g, start, grads)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), reg.params, expected)


# -- config round trips and errors ----------------------------------------------------------------


def test_configs_are_keras_shaped():
    assert UpSampling2D().get_config()["size"] == [2, 2]
    assert ZeroPadding3D(2).get_config()["padding"] == [[2, 2]] * 3
    assert PReLU(shared_axes=1).shared_axes == (1,)
    assert Softmax([1, 2]).axis == (1, 2)
    assert Rescaling([1, 2]).get_config()["scale"] == [1.0, 2.0]
    assert AlphaDropout(0.1, noise_shape=[None, 1]).noise_shape == (None, 1)


CONFIG_ERRORS = [
    (lambda: UpSampling1D(0), "size must be a positive integer"),
    (lambda: UpSampling2D((2, 0)), "size must be a positive integer or a tuple of 2"),
    (lambda: UpSampling2D(interpolation="area"), "interpolation must be one of 'nearest'"),
    (lambda: UpSampling3D(data_format="channels_first"), "kerax layers are channels-last"),
    (lambda: ZeroPadding1D(-1), "padding must be an int or a pair"),
    (lambda: ZeroPadding2D((1, 2, 3)), r"padding must be an int, a tuple of 2 ints, or a tuple of 2 pairs"),
    (lambda: ZeroPadding3D(((1, 1), (1, -1), (0, 0))), "non-negative integers; received padding"),
    (lambda: Cropping1D("a"), "cropping must be an int or a pair"),
    (lambda: Cropping2D(((1, 1, 1), (0, 0))), "cropping must be an int, a tuple of 2 ints"),
    (lambda: Cropping3D(1.5), "cropping must be an int, a tuple of 3 ints"),
    (lambda: Rescaling("x"), "scale must be a finite number"),
    (lambda: Rescaling(1.0, offset=float("nan")), "offset must be a finite number"),
    (lambda: CenterCrop(0, 2), "height must be a positive integer"),
    (lambda: CenterCrop(2, 2, data_format="channels_first"), "channels-last"),
    (lambda: Resizing(2, 2.5), "width must be a positive integer"),
    (lambda: Resizing(2, 2, interpolation="area"), "interpolation must be one of 'bilinear'"),
    (lambda: Resizing(2, 2, fill_mode="reflect"), "fill_mode must be 'constant'"),
    (lambda: Resizing(2, 2, crop_to_aspect_ratio=True, pad_to_aspect_ratio=True), "only one of"),
    (lambda: Resizing(2, 2, fill_value="0"), "fill_value must be a number"),
    (lambda: Normalization(axis="x"), "axis must be an int, a tuple of ints or None"),
    (lambda: Normalization(mean=1.0), "pass both mean and variance, or neither"),
    (lambda: Normalization(mean=[1.0, 2.0], variance=[1.0]), "mean and variance must have the same shape"),
    (lambda: Normalization(mean=[[1.0]], variance=[[1.0]]), r"mean must have rank <= the number of axes 1"),
    (lambda: Normalization(mean=0.0, variance=-1.0), "variance must be >= 0"),
    (lambda: Normalization(mean="a", variance=1.0), "mean must be a finite number"),
    (lambda: ReLU(max_value=-1), "max_value must be a number >= 0"),
    (lambda: ReLU(negative_slope=None), "negative_slope must be a number >= 0"),
    (lambda: ReLU(threshold=-0.5), "threshold must be a number >= 0"),
    (lambda: LeakyReLU(-0.1), "negative_slope must be a number >= 0"),
    (lambda: ELU("1"), "alpha must be a number; received"),
    (lambda: PReLU(shared_axes=[0]), "shared_axes must be None, a positive int or a list"),
    (lambda: Softmax(axis=()), "axis must be an int or a tuple of ints"),
    (lambda: SpatialDropout1D(1.0), r"rate must be a number in \[0, 1\)"),
    (lambda: SpatialDropout2D(0.1, data_format="channels_first"), "channels-last"),
    (lambda: GaussianNoise(1.5), r"stddev must be a number in \[0, 1\]"),
    (lambda: GaussianDropout(-0.1), r"rate must be a number in \[0, 1\)"),
    (lambda: AlphaDropout(True), r"rate must be a number in \[0, 1\)"),
    (lambda: AlphaDropout(0.1, noise_shape=(None, 0)), "noise_shape must be a tuple of positive ints"),
    (lambda: ActivityRegularization(l1=-1.0), "l1 must be a finite number >= 0"),
    (lambda: ActivityRegularization(l2=float("inf")), "l2 must be a finite number >= 0"),
]


@pytest.mark.parametrize("make, match", CONFIG_ERRORS, ids=[m for _, m in CONFIG_ERRORS])
def test_config_errors(make, match):
    with pytest.raises(errors.ConfigError, match=match):
        make()


SHAPE_ERRORS = [
    (UpSampling1D(), X4, r"expected input of rank 3 \(batch, steps, channels\); received input of shape \(2, 5, 6, 3\)"),
    (UpSampling2D(), X3, r"expected input of rank 4 .* Add a batch axis"),
    (UpSampling3D(), X4, "expected input of rank 5"),
    (ZeroPadding2D(), X5, "expected input of rank 4"),
    (Cropping1D((3, 2)), X3, r"cropping \(3, 2\) must leave at least one entry .*spatial shape \(5,\)"),
    (Cropping2D(((0, 0), (3, 3))), X4, r"cropping \(\(0, 0\), \(3, 3\)\) must leave at least one entry"),
    (Cropping3D(2), X5, "must leave at least one entry on every spatial axis"),
    (Cropping3D(), X3, "expected input of rank 5"),
    (CenterCrop(2, 2), X3[0], r"expected images of rank 4 .* received input of shape \(5, 3\)"),
    (Resizing(2, 2), X5, "expected images of rank 4"),
    (Normalization(axis=3, mean=0.0, variance=1.0), X3, r"axis \(3,\) is out of range for input of shape \(2, 5, 3\)"),
    (Normalization(mean=[1.0, 2.0], variance=[1.0, 1.0]), X3,
     r"mean and variance of shape \(2,\) do not match the input's axes \(2,\) \(sizes \(3,\)\)"),
    (PReLU(), X3[0, 0], r"expected input of rank >= 2; received shape \(3,\)"),
    (PReLU(shared_axes=3), X3, r"shared_axes \(3,\) must be input axes 1..2"),
    (Softmax(axis=3), X3, r"axis 3 is out of range for input of shape \(2, 5, 3\)"),
    (SpatialDropout2D(0.5), X3, "expected input of rank 4"),
]


@pytest.mark.parametrize("layer, x, match", SHAPE_ERRORS, ids=[type(s[0]).__name__ for s in SHAPE_ERRORS])
def test_shape_errors(layer, x, match):
    with pytest.raises(errors.ShapeError, match=match):
        layer.init(KEY, x)
        layer.apply({}, {}, x)


def test_apply_time_errors():
    params, _ = PReLU().init(KEY, X3)
    with pytest.raises(errors.ShapeError, match=r"expected input shape \(None, 5, 3\) \(alpha of shape \(5, 3\)\); "
                                                 r"received input of shape \(2, 4, 3\)"):
        PReLU().apply(params, {}, X3[:, :4])
    with pytest.raises(errors.ShapeError, match=r"the mask must broadcast against the input .* mask of shape \(2, 4\)"):
        Softmax().apply({}, {}, X3, mask=np.ones((2, 4), bool))
    with pytest.raises(errors.ShapeError, match=r"noise_shape \(None, 1\) must have the input's rank 3"):
        AlphaDropout(0.5, noise_shape=(None, 1)).apply({}, {}, X3, rng=KEY, training=True)
    with pytest.raises(errors.NotBuiltError, match=r"has no mean and variance yet: call norm = norm.adapt\(data\)"):
        Normalization().apply({}, {}, X3)
    with pytest.raises(errors.NotBuiltError, match="norm.adapt"):
        kx.Sequential([Normalization(), layers.Dense(1)]).init(KEY, X3)
    with pytest.raises(errors.ShapeError, match=r"expected input shape \(None, None, 4\) \(alpha of shape \(1, 4\)\)"):
        PReLU(shared_axes=1).apply({"alpha": jnp.zeros((1, 4))}, {}, X3)
    with pytest.raises(errors.UnknownNameError, match="Unknown initializer 'nope'"):
        PReLU(alpha_initializer="nope")
    for layer in [SpatialDropout1D(0.5), GaussianNoise(0.1), GaussianDropout(0.1), AlphaDropout(0.1)]:
        with pytest.raises(errors.MissingRNGError, match="needs a random key when training"):
            layer.apply({}, {}, X3, training=True)


def test_adapt_errors():
    norm = Normalization()
    with pytest.raises(errors.DataError, match="adapt expects an array or an iterable of batches; received int"):
        norm.adapt(3)
    with pytest.raises(errors.DataError, match="adapt received no data"):
        norm.adapt([])
    with pytest.raises(errors.ShapeError, match=r"incompatible shapes \(2, 3\) and \(2, 4\)"):
        norm.adapt([np.ones((2, 3)), np.ones((2, 4))])
    with pytest.raises(errors.DTypeError, match="adapt expects numeric data; received dtype <U1"):
        norm.adapt(np.array([["a"]]))
    with pytest.raises(errors.ShapeError, match=r"axis \(2,\) is out of range"):
        Normalization(axis=2).adapt(np.ones((3, 2)))
