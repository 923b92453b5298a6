"""Normalization layers: Keras 3 parity over a grid of options (BatchNormalization's moving
statistics after a training step included), synchronized BatchNormalization under pmap,
masks, dtypes, gradients and every error message."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from keras_oracle import compare, keras, keras_weights, to_kerax
from kerax import errors
from kerax.layers.normalization import (
    BatchNormalization,
    GroupNormalization,
    LayerNormalization,
    RMSNormalization,
    UnitNormalization,
)

KEY = jax.random.key(0)
RNG = np.random.default_rng(0)


def _x(*shape, loc=0.0):
    return (RNG.normal(size=shape) * 2.0 + loc).astype(np.float32)


def _randomize(keras_layer, shape):
    """Builds ``keras_layer`` and gives every weight random values (variances positive), so
    parity does not hinge on the trivial ones/zeros initial values."""
    keras_layer.build(shape)
    for v in keras_layer.weights:
        values = RNG.uniform(0.5, 1.5, v.shape) if "variance" in v.path else RNG.normal(size=v.shape)
        v.assign(values.astype(np.float32))
    return keras_layer


def _kerax_state(kx_layer, keras_layer, x):
    params, state = kx_layer.init(KEY, x)
    return to_kerax(params, state, keras_weights(keras_layer))


def _close(a, b, tol=1e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


# -- BatchNormalization ------------------------------------------------------------------------

BN_GRID = [
    ((6, 3), {}),
    ((6, 3), {"center": False, "epsilon": 1e-5}),
    ((6, 3), {"scale": False, "momentum": 0.5}),
    ((6, 3), {"axis": 0}),
    ((2, 4, 5, 3), {}),
    ((2, 4, 5, 3), {"axis": 1, "center": False, "scale": False}),
    ((2, 4, 5, 3), {"axis": -2, "epsilon": 0.1, "momentum": 0.9}),
]


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("shape,kw", BN_GRID)
def test_batch_normalization_matches_keras(shape, kw, training):
    x = _x(*shape, loc=1.5)
    ref = _randomize(keras.layers.BatchNormalization(**kw), shape)
    layer = BatchNormalization(**kw)
    params, state = _kerax_state(layer, ref, x)
    y, new_state = layer.apply(params, state, x, training=training)
    _close(y, ref(x, training=training))
    # Keras's moving statistics after the call are the new state (unchanged in inference).
    _close(new_state["moving_mean"], ref.moving_mean.numpy())
    _close(new_state["moving_variance"], ref.moving_variance.numpy())
    if not training:
        assert new_state is state


def test_batch_normalization_masked_moments_match_keras():
    x = _x(3, 5, 4, loc=-1.0)
    mask = np.array([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]], bool)
    ref = _randomize(keras.layers.BatchNormalization(momentum=0.8), x.shape)
    layer = BatchNormalization(momentum=0.8)
    params, state = _kerax_state(layer, ref, x)
    y, new_state, out_mask = layer.apply_masked(params, state, x, mask, training=True)
    _close(y, ref(x, training=True, mask=mask))
    _close(new_state["moving_mean"], ref.moving_mean.numpy())
    _close(new_state["moving_variance"], ref.moving_variance.numpy())
    assert out_mask is mask
    # The masked positions do not move the statistics: same as the unmasked rows alone.
    rows = x[mask]
    _, alone = layer.apply(params, state, rows, training=True)
    jax.tree.map(_close, new_state, alone)


def test_batch_normalization_under_jit_and_grad():
    x = _x(8, 3)
    layer = BatchNormalization()
    params, state = layer.init(KEY, x)
    eager = layer.apply(params, state, x, training=True)
    jitted = jax.jit(layer.apply, static_argnames="training")(params, state, x, training=True)
    jax.tree.map(_close, eager, jitted)
    grads = jax.grad(lambda p: jnp.sum(layer.apply(p, state, x, training=True)[0] ** 3))(params)
    assert set(grads) == {"gamma", "beta"}


def test_batch_normalization_bfloat16_keeps_float32_statistics():
    x = jnp.asarray(_x(16, 3, loc=3.0), jnp.bfloat16)
    layer = BatchNormalization(dtype="bfloat16", momentum=0.0)
    params, state = layer.init(KEY, x)
    assert all(v.dtype == jnp.bfloat16 for v in jax.tree.leaves((params, state)))
    y, new_state = layer.apply(params, state, x, training=True)
    assert y.dtype == jnp.bfloat16 and new_state["moving_mean"].dtype == jnp.bfloat16
    x32 = np.asarray(x, np.float32)
    mean, var = x32.mean(0), x32.var(0)
    _close(new_state["moving_mean"], np.asarray(jnp.asarray(mean, jnp.bfloat16), np.float32), 0)
    _close(new_state["moving_variance"], np.asarray(jnp.asarray(var, jnp.bfloat16), np.float32), 0)
    expected = jnp.asarray((x32 - mean) / np.sqrt(var + 1e-3), jnp.bfloat16)
    np.testing.assert_array_equal(np.asarray(y, np.float32), np.asarray(expected, np.float32))


# -- synchronized BatchNormalization ---------------------------------------------------------------


def _replicate(tree, n):
    return jax.tree.map(lambda a: jnp.broadcast_to(a, (n, *a.shape)), tree)


@pytest.mark.parametrize("masked", [False, True])
def test_synchronized_batch_normalization_under_pmap_equals_one_device(masked):
    n = 4
    assert jax.device_count() >= n
    x = _x(8, 3, 2, loc=2.0)
    mask = RNG.uniform(size=(8, 3)) < 0.7 if masked else None
    sync = BatchNormalization(synchronized=True, momentum=0.7, gamma_initializer="random_uniform")
    params, state = sync.init(KEY, x)
    y1, state1, _ = sync.apply_masked(params, state, x, mask, training=True)

    def step(p, s, xs, ms):
        y, s, _ = sync.apply_masked(p, s, xs, ms, training=True)
        return y, s

    shard = lambda a: None if a is None else a.reshape(n, -1, *a.shape[1:])  # noqa: E731
    yp, statep = jax.pmap(step, axis_name="data")(_replicate(params, n), _replicate(state, n),
                                                  shard(x), shard(mask))
    _close(yp.reshape(x.shape), y1)
    for i in range(n):  # every device holds the global batch's statistics
        jax.tree.map(lambda a, b: _close(a[i], b), statep, state1)


def test_synchronized_batch_normalization_under_shard_map_equals_one_device():
    mesh = jax.make_mesh((4,), ("data",))
    x = _x(8, 5, loc=-2.0)
    layer = BatchNormalization(synchronized=True)
    params, state = layer.init(KEY, x)
    expected = layer.apply(params, state, x, training=True)
    step = jax.shard_map(lambda p, s, xs: layer.apply(p, s, xs, training=True), mesh=mesh,
                         in_specs=(jax.P(), jax.P(), jax.P("data")), out_specs=(jax.P("data"), jax.P()))
    xs = jax.device_put(x, jax.NamedSharding(mesh, jax.P("data")))
    jax.tree.map(_close, jax.jit(step)(params, state, xs), expected)


def test_unsynchronized_batch_normalization_under_pmap_uses_local_statistics():
    n = 4
    x = _x(8, 3, loc=2.0)
    layer = BatchNormalization()
    params, state = layer.init(KEY, x)
    yp, statep = jax.pmap(lambda p, s, xs: layer.apply(p, s, xs, training=True), axis_name="data")(
        _replicate(params, n), _replicate(state, n), x.reshape(n, 2, 3))
    for i in range(n):
        y_i, s_i = layer.apply(params, state, x[2 * i: 2 * i + 2], training=True)
        _close(yp[i], y_i)
        jax.tree.map(lambda a, b: _close(a[i], b), statep, s_i)


def test_synchronized_batch_normalization_without_the_axis_bound_is_unchanged():
    x = _x(8, 4, loc=1.0)
    sync, plain = BatchNormalization(synchronized=True), BatchNormalization()
    params, state = plain.init(KEY, x)
    expected = plain.apply(params, state, x, training=True)
    jax.tree.map(_close, sync.apply(params, state, x, training=True), expected)
    run = jax.jit(lambda p, s, x: sync.apply(p, s, x, training=True))
    jax.tree.map(_close, run(params, state, x), expected)
    # jit over a batch sharded on a "data" mesh axis: XLA sees the global batch.
    mesh = jax.make_mesh((4,), ("data",))
    xs = jax.device_put(x, jax.NamedSharding(mesh, jax.P("data")))
    jax.tree.map(_close, run(params, state, xs), expected)
    # A pmap over another axis name leaves "data" unbound: local statistics.
    yp, _ = jax.pmap(lambda xs: sync.apply(params, state, xs, training=True), axis_name="batch")(
        x.reshape(4, 2, 4))
    _close(yp[0], plain.apply(params, state, x[:2], training=True)[0])


# -- LayerNormalization ----------------------------------------------------------------------------

LN_GRID = [
    ((5, 6), {}),
    ((5, 6), {"center": False, "epsilon": 1e-5}),
    ((5, 6), {"scale": False}),
    ((5, 6), {"rms_scaling": True}),
    ((2, 3, 4, 5), {}),
    ((2, 3, 4, 5), {"axis": [1, 3], "epsilon": 0.1}),
    ((2, 3, 4, 5), {"axis": (1, 2, 3), "rms_scaling": True}),
    ((2, 3, 4, 5), {"axis": 1, "center": False, "scale": False}),
]


@pytest.mark.parametrize("shape,kw", LN_GRID)
def test_layer_normalization_matches_keras(shape, kw):
    x = _x(*shape, loc=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras deprecates rms_scaling
        ref = _randomize(keras.layers.LayerNormalization(**kw), shape)
        compare(LayerNormalization(**kw), ref, x, training="center" in kw)  # no training mode


# -- GroupNormalization ----------------------------------------------------------------------------

GN_GRID = [
    ((4, 6), {"groups": 3}),
    ((4, 6), {"groups": 1, "center": False}),
    ((2, 4, 5, 6), {"groups": 2}),
    ((2, 4, 5, 6), {"groups": -1, "scale": False, "epsilon": 1e-5}),
    ((2, 6, 5, 4), {"groups": 3, "axis": 1}),
    ((2, 5, 4, 3), {"groups": 2, "axis": -2, "center": False, "scale": False}),
]


@pytest.mark.parametrize("shape,kw", GN_GRID)
def test_group_normalization_matches_keras(shape, kw):
    x, training = _x(*shape, loc=-0.5), kw.get("groups") in (1, 2)  # no training mode: same output
    compare(GroupNormalization(**kw), _randomize(keras.layers.GroupNormalization(**kw), shape), x,
            training=training)


def test_group_normalization_reference():
    x = _x(2, 3, 6)
    layer = GroupNormalization(groups=2, epsilon=0.0)
    params, _ = layer.init(KEY, x)
    y, _ = layer.apply(params, {}, x)
    g = x.reshape(2, 3, 2, 3)
    ref = (g - g.mean((1, 3), keepdims=True)) / g.std((1, 3), keepdims=True)
    _close(y, ref.reshape(x.shape))


# -- UnitNormalization and RMSNormalization --------------------------------------------------------


@pytest.mark.parametrize("shape,axis", [((4, 5), -1), ((2, 3, 4), 1), ((2, 3, 4, 2), [1, 2]), ((2, 3, 4), (0, 2))])
def test_unit_normalization_matches_keras(shape, axis):
    x = _x(*shape)
    x[0] = 0.0  # zero vectors stay zero
    compare(UnitNormalization(axis=axis), keras.layers.UnitNormalization(axis=axis), x)


@pytest.mark.parametrize("shape,kw", [((4, 5), {}), ((2, 3, 4), {"epsilon": 0.1}), ((2, 3, 4, 5), {"axis": [2, 3]}),
                                      ((2, 3, 4, 5), {"axis": -1, "epsilon": 1e-3})])
def test_rms_normalization_matches_keras(shape, kw):
    x = _x(*shape, loc=1.0)
    compare(RMSNormalization(**kw), _randomize(keras.layers.RMSNormalization(**kw), shape), x)


def test_rms_normalization_on_a_middle_axis_reference():
    # Keras multiplies by an unbroadcast ``scale`` (fails unless the axes are trailing);
    # kerax lays ``scale`` over the normalized axes.
    x = _x(2, 3, 4)
    layer = RMSNormalization(axis=1, scale_initializer="random_uniform")
    params, _ = layer.init(KEY, x)
    assert params["scale"].shape == (3,)
    y, _ = layer.apply(params, {}, x)
    ref = x / np.sqrt((x**2).mean(1, keepdims=True) + 1e-6) * np.asarray(params["scale"])[:, None]
    _close(y, ref)


# -- shared behaviour ------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", [BatchNormalization(), LayerNormalization(), GroupNormalization(groups=2),
                                   UnitNormalization(), RMSNormalization()], ids=lambda l: type(l).__name__)
def test_masks_pass_through(layer):
    x, mask = _x(2, 3, 4), np.array([[True, True, False], [True, False, False]])
    params, state = layer.init(KEY, x)
    y, _, out_mask = layer.apply_masked(params, state, x, mask)
    assert out_mask is mask and y.shape == x.shape


def test_regularizers_penalize_their_weights():
    layer = BatchNormalization(gamma_regularizer="l2", beta_regularizer="l1")
    params, _ = layer.init(KEY, _x(2, 3))
    params = {"gamma": jnp.full((3,), 2.0), "beta": jnp.full((3,), -1.0)}
    _close(layer.penalty(params), 0.01 * 12.0 + 0.01 * 3.0)


@pytest.fixture
def x64():
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


GRAD = [
    (BatchNormalization(dtype="float64", gamma_initializer="random_uniform"), (6, 3), True),
    (LayerNormalization(axis=[1, 2], dtype="float64", beta_initializer="random_uniform"), (2, 3, 4), False),
    (GroupNormalization(groups=2, dtype="float64", gamma_initializer="random_uniform"), (2, 3, 4), False),
    (UnitNormalization(dtype="float64"), (2, 5), False),
    (RMSNormalization(dtype="float64"), (2, 3, 4), False),
]


@pytest.mark.parametrize("layer,shape,training", GRAD, ids=lambda v: type(v).__name__ if not isinstance(v, (tuple, bool)) else None)
def test_gradients_match_finite_differences(x64, layer, shape, training):
    x = jnp.asarray(np.random.default_rng(1).normal(size=shape))
    params, state = layer.init(KEY, x)
    assert all(v.dtype == jnp.float64 for v in jax.tree.leaves((params, state)))
    check_grads(jax.jit(lambda p, x: layer.apply(p, state, x, training=training)[0]), (params, x), order=1,
                modes=("rev",), atol=1e-6, rtol=1e-6)


def test_config_keeps_keras_names():
    config = BatchNormalization(momentum=0.9, synchronized=True).get_config()
    assert {"axis", "momentum", "epsilon", "center", "scale", "beta_initializer", "gamma_initializer",
            "moving_mean_initializer", "moving_variance_initializer", "synchronized", "axis_name"} <= set(config)
    assert LayerNormalization(axis=(1, 2)).get_config()["axis"] == [1, 2]


# -- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("make,match", [
    (lambda: BatchNormalization(axis=[1, 2]), r"axis must be an integer; received axis=\[1, 2\]"),
    (lambda: BatchNormalization(axis="last"), "axis must be an integer; received axis='last'"),
    (lambda: LayerNormalization(axis=1.0), "axis must be an integer or a list of integers; received axis=1.0"),
    (lambda: LayerNormalization(axis=[1, 1]), r"non-empty list of distinct integers; received axis=\[1, 1\]"),
    (lambda: UnitNormalization(axis=[]), r"list of distinct integers; received axis=\[\]"),
    (lambda: BatchNormalization(momentum=1.5), r"momentum must be a number in \[0, 1\]; received momentum=1.5"),
    (lambda: LayerNormalization(epsilon=-1.0), "epsilon must be a number >= 0; received epsilon=-1.0"),
    (lambda: RMSNormalization(epsilon="small"), "epsilon must be a number >= 0; received epsilon='small'"),
    (lambda: BatchNormalization(axis_name=""), "axis_name must be a non-empty string"),
    (lambda: BatchNormalization(gamma_initializer=None), "gamma_initializer must not be None"),
    (lambda: GroupNormalization(groups=0), r"groups must be a positive integer \(or -1 .*received groups=0"),
    (lambda: GroupNormalization(groups=2.5), "received groups=2.5"),
], ids=range(12))
def test_config_errors(make, match):
    with pytest.raises(errors.ConfigError, match=match):
        make()


def test_groups_must_divide_channels():
    with pytest.raises(errors.ShapeError, match=r"groups=4 must divide the number of channels; received input "
                       r"of shape \(2, 6\) \(6 channels on axis 1\)"):
        GroupNormalization(groups=4).init(KEY, _x(2, 6))
    with pytest.raises(errors.ShapeError, match=r"groups=32 must divide .*\(8 channels"):
        GroupNormalization().init(KEY, _x(2, 3, 8))
    with pytest.raises(errors.ShapeError, match="axis=0 is the batch axis"):
        GroupNormalization(groups=1, axis=0).init(KEY, _x(2, 6))


@pytest.mark.parametrize("layer", [BatchNormalization(axis=3), LayerNormalization(axis=[1, -4]), GroupNormalization(axis=-4),
                                   UnitNormalization(axis=3), RMSNormalization(axis=(1, 5))], ids=lambda l: type(l).__name__)
def test_axis_out_of_bounds(layer):
    with pytest.raises(errors.ShapeError, match=r"axis=.* is out of bounds for an input of rank 3; received input "
                       r"of shape \(2, 3, 4\)"):
        layer.init(KEY, _x(2, 3, 4))


def test_axis_naming_one_axis_twice():
    with pytest.raises(errors.ShapeError, match=r"axis=\(1, -1\) names the same axis twice for an input of rank 2"):
        LayerNormalization(axis=[1, -1]).init(KEY, _x(2, 3))


@pytest.mark.parametrize("layer,built,shape,match", [
    (BatchNormalization(), (4, 3), (4, 5), r"expected input shape \(None, 3\) \(size \(3,\) on axis \(1,\)"),
    (BatchNormalization(axis=1, center=False, scale=False), (4, 3, 2), (4, 2, 3),
     r"expected input shape \(None, 3, None\)"),
    (LayerNormalization(axis=[1, 2]), (2, 3, 4), (2, 3, 5),
     r"expected input shape \(None, 3, 4\) .*received input of shape \(2, 3, 5\)"),
    (GroupNormalization(groups=1), (2, 3), (2, 5), r"expected input shape \(None, 3\)"),
    (RMSNormalization(), (2, 3), (2, 5), r"expected input shape \(None, 3\) .*received input of shape \(2, 5\)"),
], ids=range(5))
def test_channel_count_mismatch_at_apply(layer, built, shape, match):
    params, state = layer.init(KEY, _x(*built))
    with pytest.raises(errors.ShapeError, match=match):
        layer.apply(params, state, _x(*shape))


def test_batch_normalization_mask_shape_mismatch():
    layer = BatchNormalization()
    x = _x(2, 3, 4)
    params, state = layer.init(KEY, x)
    with pytest.raises(errors.ShapeError, match=r"expected a mask of shape \(2, 3\) .*received mask of shape \(2, 4\)"):
        layer.apply(params, state, x, training=True, mask=np.ones((2, 4), bool))


def test_string_input_is_a_dtype_error():
    layer = LayerNormalization()
    params, state = layer.init(KEY, _x(2, 3))
    with pytest.raises(errors.DTypeError, match="expected a numeric input"):
        layer.apply(params, state, np.array([["a", "b", "c"]]))
