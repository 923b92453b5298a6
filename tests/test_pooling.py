"""Pooling layers against NumPy references (padding as NaN, ignored by nanmax / nanmean),
plus gradients, dtypes, aliases and every error message."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from kerax.errors import ConfigError, ShapeError
from kerax import layers as P

KEY = jax.random.key(0)


def ref_pool(x, pool, strides, padding, reduce):
    """Windows over NaN-padded input: padded positions never count (TensorFlow's rule)."""
    rank = x.ndim - 2
    pads = []
    for i in range(rank):
        n = x.shape[1 + i]
        if padding == "valid":
            pads.append((0, 0))
        else:
            total = max((-(-n // strides[i]) - 1) * strides[i] + pool[i] - n, 0)
            pads.append((total // 2, total - total // 2))
    xp = np.pad(x.astype(np.float64), [(0, 0), *pads, (0, 0)], constant_values=np.nan)
    out_shape = [(xp.shape[1 + i] - pool[i]) // strides[i] + 1 for i in range(rank)]
    out = np.empty((x.shape[0], *out_shape, x.shape[-1]))
    for o in np.ndindex(*out_shape):
        window = xp[(slice(None), *[slice(o[i] * strides[i], o[i] * strides[i] + pool[i]) for i in range(rank)])]
        out[(slice(None), *o)] = reduce(window.reshape(x.shape[0], -1, x.shape[-1]), axis=1)
    return out


def _apply(layer, x):
    params, state = layer.init(KEY, x)
    assert params == {} and state == {}
    y, state = layer.apply(params, {}, x)
    assert state == {}
    return np.asarray(y)


WINDOWED = [
    (1, dict(pool_size=2), (2, 7, 3)),
    (1, dict(pool_size=3, strides=2, padding="same"), (2, 8, 3)),
    (1, dict(pool_size=3, strides=1, padding="same"), (2, 5, 2)),
    (2, dict(pool_size=2), (2, 6, 5, 3)),
    (2, dict(pool_size=(3, 2), strides=(2, 1)), (2, 7, 5, 2)),
    (2, dict(pool_size=3, strides=2, padding="same"), (2, 6, 7, 2)),
    (2, dict(pool_size=(2, 3), strides=(3, 1), padding="same"), (1, 7, 4, 2)),
    (3, dict(pool_size=2, padding="same"), (1, 3, 4, 5, 2)),
    (3, dict(pool_size=(1, 2, 3), strides=1), (1, 2, 3, 4, 2)),
]
MAX = {1: P.MaxPooling1D, 2: P.MaxPooling2D, 3: P.MaxPooling3D}
AVG = {1: P.AveragePooling1D, 2: P.AveragePooling2D, 3: P.AveragePooling3D}


@pytest.mark.parametrize("kind", ["max", "average"])
@pytest.mark.parametrize("rank,kw,shape", WINDOWED)
def test_windowed_pooling_matches_reference(kind, rank, kw, shape):
    layer = (MAX if kind == "max" else AVG)[rank](**kw)
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    pool = (kw["pool_size"],) * rank if isinstance(kw["pool_size"], int) else kw["pool_size"]
    strides = kw.get("strides", pool)
    strides = (strides,) * rank if isinstance(strides, int) else strides
    expected = ref_pool(x, pool, strides, kw.get("padding", "valid"), np.nanmax if kind == "max" else np.nanmean)
    y = _apply(layer, x)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)


def test_same_average_excludes_padding():
    layer = P.AveragePooling1D(2, strides=2, padding="same")
    y = _apply(layer, jnp.array([[[1.0], [2.0], [3.0], [4.0], [5.0]]]))
    np.testing.assert_allclose(y[0, :, 0], [1.5, 3.5, 5.0])  # not 2.5 for the last window


def test_same_max_ignores_padding_for_negative_inputs():
    y = _apply(P.MaxPooling2D(2, padding="same"), -jnp.ones((1, 3, 3, 1)))
    np.testing.assert_array_equal(y, -np.ones((1, 2, 2, 1)))


@pytest.mark.parametrize("cls,rank,reduce", [
    (P.GlobalAveragePooling1D, 1, np.mean), (P.GlobalAveragePooling2D, 2, np.mean),
    (P.GlobalAveragePooling3D, 3, np.mean), (P.GlobalMaxPooling1D, 1, np.max),
    (P.GlobalMaxPooling2D, 2, np.max), (P.GlobalMaxPooling3D, 3, np.max),
])
@pytest.mark.parametrize("keepdims", [False, True])
def test_global_pooling_matches_numpy(cls, rank, reduce, keepdims):
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 2, 5)[: rank + 1] + (3,)).astype(np.float32)
    y = _apply(cls(keepdims=keepdims), x)
    expected = reduce(x.astype(np.float64), axis=tuple(range(1, rank + 1)), keepdims=keepdims)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)


def test_strides_default_to_pool_size_and_config_round_trips():
    layer = P.MaxPooling2D((3, 2))
    assert layer.strides == (3, 2) and layer.padding == "valid"
    assert P.MaxPooling1D().pool_size == (2,) and P.AveragePooling3D().pool_size == (2, 2, 2)
    for layer in [layer, P.AveragePooling1D(3, strides=1, padding="SAME"), P.GlobalMaxPooling2D(keepdims=True)]:
        assert type(layer).from_config(layer.get_config()).get_config() == layer.get_config()


def test_dtypes():
    assert _apply(P.MaxPooling1D(2), np.ones((1, 4, 2), np.int32)).dtype == np.float32
    assert _apply(P.GlobalAveragePooling1D(), np.ones((1, 4, 2), np.int32)).dtype == np.float32
    assert _apply(P.AveragePooling2D(2), jnp.ones((1, 4, 4, 2), jnp.bfloat16)).dtype == jnp.bfloat16
    assert _apply(P.AveragePooling2D(2, dtype="bfloat16"), np.ones((1, 4, 4, 2), np.float32)).dtype == jnp.bfloat16


def test_under_jit():
    layer = P.AveragePooling2D(3, strides=2, padding="same")
    x = np.random.default_rng(0).normal(size=(2, 5, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(jax.jit(layer.apply)({}, {}, x)[0], layer.apply({}, {}, x)[0], rtol=1e-6)


def test_aliases_and_names():
    assert P.MaxPool2D is P.MaxPooling2D and P.AvgPool1D is P.AveragePooling1D
    assert P.GlobalAvgPool3D is P.GlobalAveragePooling3D and P.GlobalMaxPool1D is P.GlobalMaxPooling1D
    assert P.MaxPooling2D.default_name() == "max_pooling2d"
    assert P.GlobalAveragePooling2D.default_name() == "global_average_pooling2d"


@pytest.fixture
def x64():
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


@pytest.mark.parametrize("layer", [
    P.MaxPooling2D(2, strides=1, padding="same"), P.AveragePooling2D(3, strides=2, padding="same"),
    P.AveragePooling1D(2), P.GlobalMaxPooling2D(), P.GlobalAveragePooling1D(),
], ids=lambda layer: type(layer).__name__)
def test_gradients_match_finite_differences(x64, layer):
    shape = (1, 5, 3) if layer.rank == 1 else (1, 4, 5, 2)
    x = jnp.asarray(np.random.default_rng(0).permutation(np.prod(shape)).reshape(shape) / 7.0)  # no ties
    check_grads(lambda x: layer.apply({}, {}, x)[0], (x,), order=1, modes=("rev",), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("make,match", [
    (lambda: P.MaxPooling2D(0), r"pool_size must be a positive integer or a tuple of 2 positive integers; received pool_size=0"),
    (lambda: P.AveragePooling1D((2, 2)), r"pool_size must be .*tuple of 1 positive integers; received pool_size=\(2, 2\)"),
    (lambda: P.MaxPooling3D(2, strides=(1, 1)), r"strides must be .*received strides=\(1, 1\)"),
    (lambda: P.AveragePooling2D(2, padding="causal"), r"padding must be one of 'valid', 'same'; received padding='causal'"),
    (lambda: P.MaxPooling2D(2, data_format="channels_first"), r"channels-last.*received data_format='channels_first'"),
    (lambda: P.GlobalAveragePooling2D(data_format="channels_first"), r"channels-last"),
])
def test_config_errors(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_wrong_rank_errors():
    with pytest.raises(ShapeError, match=r"MaxPooling2D: expected input of rank 4 \(batch, height, width, channels\); "
                                         r"received input of shape \(8, 8, 3\)\. Add a batch axis: x\[None\]"):
        P.MaxPooling2D().init(KEY, jnp.ones((8, 8, 3)))
    with pytest.raises(ShapeError, match=r"expected input of rank 3 \(batch, steps, channels\); received input "
                                         r"of shape \(2, 8, 8, 3\)\.$"):
        P.AveragePooling1D().apply({}, {}, jnp.ones((2, 8, 8, 3)))
    with pytest.raises(ShapeError, match=r"GlobalAveragePooling3D: expected input of rank 5 .*x\[None\]"):
        P.GlobalAveragePooling3D().apply({}, {}, jnp.ones((4, 4, 4, 3)))
    with pytest.raises(ShapeError, match=r"GlobalMaxPooling1D: expected input of rank 3"):
        P.GlobalMaxPooling1D().init(KEY, jnp.ones((2, 3)))


def test_pool_larger_than_input_errors():
    with pytest.raises(ShapeError, match=r"the pool window \(3, 3\) is larger than the input's spatial shape \(2, 5\) "
                                         r"with padding='valid' \(received input of shape \(1, 2, 5, 1\)\); use "
                                         r"padding='same', a larger input or a smaller pool_size"):
        P.MaxPooling2D(3).init(KEY, jnp.ones((1, 2, 5, 1)))
    with pytest.raises(ShapeError, match=r"the pool window \(4,\) is larger"):
        P.AveragePooling1D(4).apply({}, {}, jnp.ones((1, 3, 1)))
    assert _apply(P.AveragePooling1D(4, padding="same"), jnp.ones((1, 3, 1))).shape == (1, 1, 1)
