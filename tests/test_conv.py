"""Convolution layers against NumPy references (loops and einsum, no kerax code), plus
gradients, dtypes, weight layouts and every error message."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from kerax.errors import ConfigError, ShapeError
from kerax import layers as conv

KEY = jax.random.key(0)


# -- independent references -----------------------------------------------------------------


def _tf_same(n, k_eff, s):
    """TensorFlow's "same" padding: output ceil(n / s), the odd pixel padded at the end."""
    total = max((-(-n // s) - 1) * s + k_eff - n, 0)
    return total // 2, total - total // 2


def _windows(x, ks, strides, padding, dilation):
    """Yields (kernel offset j, input values under tap j for every output position)."""
    rank = x.ndim - 2
    k_eff = [(k - 1) * d + 1 for k, d in zip(ks, dilation)]
    if padding == "valid":
        pads = [(0, 0)] * rank
    elif padding == "causal":
        pads = [(k_eff[0] - 1, 0)]
    else:
        pads = [_tf_same(x.shape[1 + i], k_eff[i], strides[i]) for i in range(rank)]
    xp = np.pad(x, [(0, 0), *pads, (0, 0)])
    out = [(xp.shape[1 + i] - k_eff[i]) // strides[i] + 1 for i in range(rank)]
    for j in np.ndindex(*ks):
        sl = tuple(slice(j[i] * dilation[i], j[i] * dilation[i] + (out[i] - 1) * strides[i] + 1, strides[i])
                   for i in range(rank))
        yield j, xp[(slice(None), *sl)]


def ref_conv(x, kernel, strides, padding, dilation, groups=1):
    """kernel (*window, in // groups, filters); groups split channels into consecutive blocks."""
    rank = x.ndim - 2
    c, f = x.shape[-1], kernel.shape[-1]
    out = 0.0
    for j, patch in _windows(x, kernel.shape[:rank], strides, padding, dilation):
        p = patch.reshape(*patch.shape[:-1], groups, c // groups)
        w = kernel[j].reshape(c // groups, groups, f // groups)
        out = out + np.einsum("...gc,cgf->...gf", p, w).reshape(*patch.shape[:-1], f)
    return out


def ref_depthwise(x, kernel, strides, padding, dilation):
    """kernel (*window, in, m); output channel c * m + q."""
    rank = x.ndim - 2
    out = 0.0
    for j, patch in _windows(x, kernel.shape[:rank], strides, padding, dilation):
        out = out + patch[..., :, None] * kernel[j]
    return out.reshape(*out.shape[:-2], -1)


def keras_deconv_length(n, k, s, padding, output_padding, d):
    """keras.src.utils.conv_utils.deconv_output_length, transcribed."""
    k = k + (k - 1) * (d - 1)
    if output_padding is None:
        return n * s + max(k - s, 0) if padding == "valid" else n * s
    pad = k // 2 if padding == "same" else 0
    return (n - 1) * s + k - 2 * pad + output_padding


def ref_conv_transpose(x, kernel, strides, padding, dilation, output_padding=None):
    """Scatter-add of kernel * input, then TensorFlow's crop (the gradient of a convolution
    whose input has Keras's output length). kernel (*window, filters, in)."""
    rank = x.ndim - 2
    ks, n = kernel.shape[:rank], x.shape[1:-1]
    k_eff = [(k - 1) * d + 1 for k, d in zip(ks, dilation)]
    full = np.zeros((x.shape[0], *[(n[i] - 1) * strides[i] + k_eff[i] for i in range(rank)], kernel.shape[-2]))
    for i in np.ndindex(*n):
        for j in np.ndindex(*ks):
            o = tuple(i[a] * strides[a] + j[a] * dilation[a] for a in range(rank))
            full[(slice(None), *o)] += x[(slice(None), *i)] @ kernel[j].T
    crops = []
    for a in range(rank):
        op = None if output_padding is None else output_padding[a]
        length = keras_deconv_length(n[a], ks[a], strides[a], padding, op, dilation[a])
        start = 0 if padding == "valid" else max((n[a] - 1) * strides[a] + k_eff[a] - length, 0) // 2
        crops.append((start, length))
    need = [max(0, s + l - full.shape[1 + a]) for a, (s, l) in enumerate(crops)]
    full = np.pad(full, [(0, 0), *[(0, m) for m in need], (0, 0)])
    return full[(slice(None), *[slice(s, s + l) for s, l in crops])]


# -- helpers ----------------------------------------------------------------------------------


def _params(layer, shape, fill=None):
    """Params of the right shapes (from an abstract init, which is fast): normal or zeros."""
    params, _ = jax.eval_shape(layer.init, KEY, jax.ShapeDtypeStruct(shape, jnp.float32))
    rng = np.random.default_rng(0)
    return {k: (rng.normal(size=v.shape) if fill is None else np.full(v.shape, fill)).astype(v.dtype)
            for k, v in params.items()}


def _run(layer, shape, seed=0):
    x = np.random.default_rng(seed + 1).normal(size=shape).astype(np.float32)
    params = _params(layer, shape)
    y, state = layer.apply(params, {}, x)
    assert state == {}
    return np.asarray(y), params, x.astype(np.float64)


def _tuple(v, rank):
    return (v,) * rank if isinstance(v, int) else tuple(v)


# -- values -----------------------------------------------------------------------------------

CONV = [
    (conv.Conv1D, dict(filters=3, kernel_size=3), (2, 9, 2)),
    (conv.Conv1D, dict(filters=3, kernel_size=3, padding="same", strides=2), (2, 9, 2)),
    (conv.Conv1D, dict(filters=2, kernel_size=3, padding="causal", dilation_rate=2), (2, 9, 3)),
    (conv.Conv1D, dict(filters=2, kernel_size=4, padding="causal", strides=3), (2, 10, 3)),
    (conv.Conv1D, dict(filters=4, kernel_size=2, groups=2, padding="same"), (1, 6, 6)),
    (conv.Conv2D, dict(filters=4, kernel_size=3), (2, 7, 6, 3)),
    (conv.Conv2D, dict(filters=4, kernel_size=(3, 2), strides=(2, 3), padding="same"), (2, 7, 8, 3)),
    (conv.Conv2D, dict(filters=2, kernel_size=4, strides=2, padding="same"), (1, 8, 7, 2)),
    (conv.Conv2D, dict(filters=3, kernel_size=3, dilation_rate=(2, 1), padding="same"), (2, 7, 6, 2)),
    (conv.Conv2D, dict(filters=6, kernel_size=3, groups=3, strides=2, dilation_rate=2), (2, 9, 9, 6)),
    (conv.Conv3D, dict(filters=2, kernel_size=(2, 3, 1), strides=(1, 2, 1), padding="same"), (1, 4, 5, 3, 2)),
    (conv.Conv3D, dict(filters=2, kernel_size=2, dilation_rate=2, groups=2), (1, 5, 4, 4, 4)),
]


@pytest.mark.parametrize("cls,kw,shape", CONV)
def test_conv_matches_reference(cls, kw, shape):
    layer = cls(**kw)
    y, p, x = _run(layer, shape)
    r = cls.rank
    expected = ref_conv(x, p["kernel"].astype(np.float64), _tuple(kw.get("strides", 1), r),
                        kw.get("padding", "valid"), _tuple(kw.get("dilation_rate", 1), r),
                        kw.get("groups", 1)) + p["bias"]
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_conv_output_shapes_and_activation():
    x = jnp.ones((2, 10, 3))
    for padding, steps in [("valid", 4), ("same", 5), ("causal", 5)]:
        layer = conv.Conv1D(2, 3, strides=2, padding=padding)
        y = jax.eval_shape(lambda x: layer.apply(*layer.init(KEY, x), x)[0], x)
        assert y.shape == (2, steps, 2)
    layer = conv.Conv2D(3, 3, activation="relu", bias_initializer="ones")
    y, _ = layer.apply(*layer.init(KEY, jnp.ones((1, 5, 5, 2))), -jnp.ones((1, 5, 5, 2)) * 10)
    assert y.shape == (1, 3, 3, 3) and float(y.min()) >= 0


def test_causal_output_ignores_the_future():
    layer = conv.Conv1D(2, 3, padding="causal", dilation_rate=2)
    x = np.random.default_rng(0).normal(size=(1, 12, 2)).astype(np.float32)
    params, _ = layer.init(KEY, x)
    x2 = x.copy()
    x2[:, 7:] = 100.0
    a, _ = layer.apply(params, {}, x)
    b, _ = layer.apply(params, {}, x2)
    np.testing.assert_array_equal(a[:, :7], b[:, :7])
    assert not np.allclose(a[:, 7:], b[:, 7:])


TRANSPOSE = [
    (conv.Conv1DTranspose, dict(kernel_size=3, strides=1, padding="valid")),
    (conv.Conv1DTranspose, dict(kernel_size=3, strides=2, padding="valid")),
    (conv.Conv1DTranspose, dict(kernel_size=2, strides=3, padding="valid")),
    (conv.Conv1DTranspose, dict(kernel_size=3, strides=2, padding="same")),
    (conv.Conv1DTranspose, dict(kernel_size=4, strides=2, padding="same")),
    (conv.Conv1DTranspose, dict(kernel_size=5, strides=3, padding="same")),
    (conv.Conv1DTranspose, dict(kernel_size=1, strides=2, padding="same")),
    (conv.Conv1DTranspose, dict(kernel_size=3, strides=1, padding="same", dilation_rate=2)),
    (conv.Conv1DTranspose, dict(kernel_size=2, strides=2, padding="valid", dilation_rate=3)),
    (conv.Conv1DTranspose, dict(kernel_size=3, strides=2, padding="valid", output_padding=1)),
    (conv.Conv1DTranspose, dict(kernel_size=3, strides=2, padding="same", output_padding=1)),
    (conv.Conv1DTranspose, dict(kernel_size=4, strides=3, padding="same", output_padding=2)),
    (conv.Conv1DTranspose, dict(kernel_size=6, strides=2, padding="same", output_padding=0)),
    (conv.Conv2DTranspose, dict(kernel_size=3, strides=2, padding="same")),
    (conv.Conv2DTranspose, dict(kernel_size=(2, 3), strides=(2, 1), padding="valid")),
    (conv.Conv2DTranspose, dict(kernel_size=3, strides=(3, 2), padding="same", output_padding=(2, 0))),
    (conv.Conv3DTranspose, dict(kernel_size=2, strides=2, padding="same")),
]


@pytest.mark.parametrize("cls,kw", TRANSPOSE)
def test_conv_transpose_matches_scatter_reference(cls, kw):
    r = cls.rank
    layer = cls(filters=3, **kw)
    y, p, x = _run(layer, (2, *(4, 3, 2)[:r], 2))
    op = kw.get("output_padding")
    expected = ref_conv_transpose(
        x, p["kernel"].astype(np.float64), _tuple(kw["strides"], r), kw["padding"],
        _tuple(kw.get("dilation_rate", 1), r), None if op is None else _tuple(op, r),
    ) + p["bias"]
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_conv_transpose_keras_output_sizes():
    cases = [((3, 2, "same", None), 8), ((3, 2, "valid", None), 9), ((2, 3, "valid", None), 12),
             ((3, 2, "valid", 1), 10), ((4, 2, "same", 1), 7), ((3, 1, "same", None), 4)]
    for (k, s, padding, op), length in cases:
        layer = conv.Conv1DTranspose(1, k, strides=s, padding=padding, output_padding=op)
        y = jax.eval_shape(lambda x: layer.apply(*layer.init(KEY, x), x)[0], jnp.ones((1, 4, 1)))
        assert y.shape == (1, length, 1), (k, s, padding, op)


DEPTHWISE = [
    (conv.DepthwiseConv1D, dict(kernel_size=3), (2, 7, 3)),
    (conv.DepthwiseConv1D, dict(kernel_size=3, padding="causal", depth_multiplier=2, dilation_rate=2), (2, 7, 2)),
    (conv.DepthwiseConv2D, dict(kernel_size=3, depth_multiplier=2), (2, 6, 5, 3)),
    (conv.DepthwiseConv2D, dict(kernel_size=(2, 3), strides=2, padding="same"), (2, 7, 6, 2)),
]


@pytest.mark.parametrize("cls,kw,shape", DEPTHWISE)
def test_depthwise_matches_reference(cls, kw, shape):
    layer = cls(**kw)
    y, p, x = _run(layer, shape)
    r = cls.rank
    expected = ref_depthwise(x, p["kernel"].astype(np.float64), _tuple(kw.get("strides", 1), r),
                             kw.get("padding", "valid"), _tuple(kw.get("dilation_rate", 1), r)) + p["bias"]
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


SEPARABLE = [
    (conv.SeparableConv1D, dict(filters=4, kernel_size=3, padding="same", depth_multiplier=2), (2, 7, 3)),
    (conv.SeparableConv1D, dict(filters=2, kernel_size=2, padding="causal", strides=2), (2, 7, 3)),
    (conv.SeparableConv2D, dict(filters=3, kernel_size=3), (2, 6, 5, 2)),
    (conv.SeparableConv2D, dict(filters=3, kernel_size=2, strides=2, padding="same", dilation_rate=1,
                                depth_multiplier=3), (1, 5, 5, 2)),
    (conv.SeparableConv2D, dict(filters=2, kernel_size=2, dilation_rate=2, padding="same"), (1, 5, 5, 2)),
]


@pytest.mark.parametrize("cls,kw,shape", SEPARABLE)
def test_separable_matches_reference(cls, kw, shape):
    layer = cls(**kw)
    y, p, x = _run(layer, shape)
    r = cls.rank
    mid = ref_depthwise(x, p["depthwise_kernel"].astype(np.float64), _tuple(kw.get("strides", 1), r),
                        kw.get("padding", "valid"), _tuple(kw.get("dilation_rate", 1), r))
    expected = np.einsum("...c,cf->...f", mid, p["pointwise_kernel"].reshape(mid.shape[-1], -1)) + p["bias"]
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


# -- weights, dtypes, configs -------------------------------------------------------------------


def _shapes(layer, shape):
    params, state = jax.eval_shape(layer.init, KEY, jax.ShapeDtypeStruct(shape, jnp.float32))
    assert state == {}
    return {k: tuple(v.shape) for k, v in params.items()}


def test_keras_weight_layouts():
    assert _shapes(conv.Conv2D(8, 3, groups=2), (1, 5, 5, 4)) == {"kernel": (3, 3, 2, 8), "bias": (8,)}
    assert _shapes(conv.Conv1D(8, 5, use_bias=False), (1, 9, 3)) == {"kernel": (5, 3, 8)}
    assert _shapes(conv.Conv3D(2, (1, 2, 3)), (1, 4, 4, 4, 3)) == {"kernel": (1, 2, 3, 3, 2), "bias": (2,)}
    assert _shapes(conv.Conv2DTranspose(8, 3), (1, 5, 5, 4)) == {"kernel": (3, 3, 8, 4), "bias": (8,)}
    assert _shapes(conv.Conv1DTranspose(8, 3), (1, 5, 4)) == {"kernel": (3, 8, 4), "bias": (8,)}
    assert _shapes(conv.DepthwiseConv2D(3, depth_multiplier=2), (1, 5, 5, 4)) == {"kernel": (3, 3, 4, 2), "bias": (8,)}
    assert _shapes(conv.SeparableConv2D(6, 3, depth_multiplier=2), (1, 5, 5, 4)) == {
        "depthwise_kernel": (3, 3, 4, 2), "pointwise_kernel": (1, 1, 8, 6), "bias": (6,)}
    assert _shapes(conv.SeparableConv1D(6, 3), (1, 5, 4)) == {
        "depthwise_kernel": (3, 4, 1), "pointwise_kernel": (1, 4, 6), "bias": (6,)}


def test_param_dtype_is_honoured_and_inputs_cast():
    layer = conv.Conv2D(2, 3, dtype="bfloat16")
    params, _ = layer.init(KEY, jnp.ones((1, 5, 5, 2)))
    assert all(v.dtype == jnp.bfloat16 for v in params.values())
    y, _ = layer.apply(params, {}, np.ones((1, 5, 5, 2), np.float32))
    assert y.dtype == jnp.bfloat16
    layer = conv.SeparableConv1D(2, 3)
    y, _ = layer.apply(*layer.init(KEY, jnp.ones((1, 5, 2))), np.ones((1, 5, 2), np.int32))
    assert y.dtype == jnp.float32


def test_kernel_size_normalised_and_config_round_trips():
    layer = conv.Conv2D(4, [3, 2], strides=np.int64(2), padding="SAME")
    assert layer.kernel_size == (3, 2) and layer.strides == (2, 2) and layer.padding == "same"
    for layer in [layer, conv.Conv1DTranspose(2, 3, strides=2, output_padding=1),
                  conv.DepthwiseConv1D(3, depth_multiplier=2), conv.SeparableConv2D(3, 2)]:
        assert type(layer).from_config(layer.get_config()).get_config() == layer.get_config()


def test_default_names_and_aliases():
    assert conv.Conv2D.default_name() == "conv2d"
    assert conv.Conv2DTranspose.default_name() == "conv2d_transpose"
    assert conv.DepthwiseConv2D.default_name() == "depthwise_conv2d"
    assert conv.SeparableConv1D.default_name() == "separable_conv1d"
    assert conv.Convolution2D is conv.Conv2D and conv.Convolution3DTranspose is conv.Conv3DTranspose


# -- gradients ----------------------------------------------------------------------------------


@pytest.fixture
def x64():
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


GRAD = [
    (conv.Conv1D(2, 3, padding="causal", dilation_rate=2, dtype="float64"), (1, 6, 2)),
    (conv.Conv2D(4, 3, strides=2, padding="same", groups=2, activation="tanh", dtype="float64"), (1, 5, 5, 2)),
    (conv.Conv2DTranspose(2, 3, strides=2, padding="same", dtype="float64"), (1, 3, 3, 2)),
    (conv.Conv3D(1, 2, dtype="float64"), (1, 3, 3, 3, 1)),
    (conv.DepthwiseConv2D(2, depth_multiplier=2, dtype="float64"), (1, 4, 4, 2)),
    (conv.SeparableConv1D(2, 3, strides=2, padding="same", dtype="float64"), (1, 7, 2)),
]


@pytest.mark.parametrize("layer,shape", GRAD, ids=lambda v: type(v).__name__ if not isinstance(v, tuple) else None)
def test_gradients_match_finite_differences(x64, layer, shape):
    x = jnp.asarray(np.random.default_rng(0).normal(size=shape))
    params, _ = layer.init(KEY, x)
    assert all(v.dtype == jnp.float64 for v in params.values())
    check_grads(lambda p, x: layer.apply(p, {}, x)[0], (params, x), order=1, modes=("rev",),
                atol=1e-6, rtol=1e-6)


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("make,match", [
    (lambda: conv.Conv2D(0, 3), r"filters must be a positive integer; received filters=0"),
    (lambda: conv.Conv2D(4, (3, 3, 3)), r"kernel_size must be a positive integer or a tuple of 2 positive integers; received kernel_size=\(3, 3, 3\)"),
    (lambda: conv.Conv1D(4, 0), r"kernel_size must be .*received kernel_size=0"),
    (lambda: conv.Conv2D(4, 3, strides=(1, -1)), r"strides must be .*received strides=\(1, -1\)"),
    (lambda: conv.Conv3D(4, 3, dilation_rate=1.5), r"dilation_rate must be .*received dilation_rate=1.5"),
    (lambda: conv.Conv2D(4, 3, padding="full"), r"padding must be one of 'valid', 'same'; received padding='full'"),
    (lambda: conv.Conv2D(4, 3, padding="causal"), r"padding must be one of 'valid', 'same'; received padding='causal'"),
    (lambda: conv.Conv1DTranspose(4, 3, padding="causal"), r"padding must be one of 'valid', 'same'; received"),
    (lambda: conv.Conv2D(6, 3, groups=4), r"groups must divide filters; received groups=4, filters=6"),
    (lambda: conv.Conv2D(6, 3, groups=0), r"groups must be a positive integer; received groups=0"),
    (lambda: conv.Conv2D(6, 3, data_format="channels_first"), r"channels-last.*received data_format='channels_first'.*moveaxis"),
    (lambda: conv.DepthwiseConv2D(3, depth_multiplier=0), r"depth_multiplier must be a positive integer"),
    (lambda: conv.Conv2DTranspose(2, 3, strides=2, output_padding=2), r"output_padding must be smaller than strides on every axis; received output_padding=\(2, 2\), strides=\(2, 2\)"),
    (lambda: conv.Conv2DTranspose(2, 3, output_padding=-1), r"output_padding must be a non-negative integer or a tuple of 2 non-negative integers; received output_padding=-1"),
])
def test_config_errors(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_wrong_rank_errors():
    with pytest.raises(ShapeError, match=r"Conv2D: expected input of rank 4 \(batch, height, width, channels\); "
                                         r"received input of shape \(8, 8, 3\)\. Add a batch axis: x\[None\]"):
        conv.Conv2D(2, 3).init(KEY, jnp.ones((8, 8, 3)))
    with pytest.raises(ShapeError, match=r"expected input of rank 3 \(batch, steps, channels\); "
                                         r"received input of shape \(2, 8, 8, 3\)\.$"):
        conv.SeparableConv1D(2, 3).init(KEY, jnp.ones((2, 8, 8, 3)))
    layer = conv.Conv3DTranspose(2, 2)
    params = _params(layer, (1, 3, 3, 3, 1), 0)
    with pytest.raises(ShapeError, match=r"expected input of rank 5 \(batch, depth, height, width, channels\).*x\[None\]"):
        layer.apply(params, {}, jnp.ones((3, 3, 3, 1)))


def test_channel_mismatch_errors():
    layer = conv.Conv2D(8, 3, name="c")
    params = _params(layer, (2, 8, 8, 3), 0)
    with pytest.raises(ShapeError, match=r"Layer 'c' \(Conv2D\): expected 3 input channels \(kernel shape "
                                         r"\(3, 3, 3, 8\)\); received input of shape \(2, 8, 8, 1\)"):
        layer.apply(params, {}, jnp.ones((2, 8, 8, 1)))
    layer = conv.Conv1D(4, 3, groups=2)
    params = _params(layer, (2, 8, 4), 0)
    with pytest.raises(ShapeError, match=r"expected 4 input channels \(kernel shape \(3, 2, 4\), groups=2\); "
                                         r"received input of shape \(2, 8, 6\)"):
        layer.apply(params, {}, jnp.ones((2, 8, 6)))
    for layer, good, bad, kernel in [
        (conv.Conv2DTranspose(5, 3), (1, 4, 4, 2), (1, 4, 4, 3), r"\(3, 3, 5, 2\)"),
        (conv.DepthwiseConv1D(3, depth_multiplier=2), (1, 6, 2), (1, 6, 3), r"\(3, 2, 2\)"),
        (conv.SeparableConv2D(4, 3), (1, 6, 6, 2), (1, 6, 6, 1), r"\(3, 3, 2, 1\)"),
    ]:
        params = _params(layer, good, 0)
        with pytest.raises(ShapeError, match=rf"expected {good[-1]} input channels \(kernel shape {kernel}\); received"):
            layer.apply(params, {}, jnp.ones(bad))


def test_groups_must_divide_input_channels():
    with pytest.raises(ShapeError, match=r"groups=2 must divide the number of input channels; received "
                                         r"input of shape \(1, 8, 8, 3\) \(3 channels\)"):
        conv.Conv2D(4, 3, groups=2).init(KEY, jnp.ones((1, 8, 8, 3)))


def test_input_smaller_than_kernel_errors():
    with pytest.raises(ShapeError, match=r"the dilated kernel \(5, 5\) is larger than the input's spatial shape "
                                         r"\(4, 8\) with padding='valid' \(received input of shape \(1, 4, 8, 2\)\); "
                                         r"use padding='same'"):
        conv.Conv2D(2, 3, dilation_rate=2).init(KEY, jnp.ones((1, 4, 8, 2)))
    layer = conv.DepthwiseConv1D(3)
    params = _params(layer, (1, 5, 2), 0)
    with pytest.raises(ShapeError, match=r"the dilated kernel \(3,\) is larger than the input's spatial shape \(2,\)"):
        layer.apply(params, {}, jnp.ones((1, 2, 2)))
    # "same" and "causal" pad, and transposed convolutions grow: no error.
    for layer, shape in [(conv.Conv2D(2, 5, padding="same"), (1, 2, 2, 1)),
                         (conv.Conv1D(2, 5, padding="causal"), (1, 2, 1)),
                         (conv.Conv1DTranspose(2, 5), (1, 2, 1))]:
        layer.apply(_params(layer, shape, 0), {}, jnp.ones(shape))


def test_transpose_empty_output_error():
    layer = conv.Conv1DTranspose(2, 2, padding="same", output_padding=0)
    with pytest.raises(ShapeError, match=r"the output would be empty: spatial shape \(0,\) for input of shape "
                                         r"\(1, 1, 3\) with padding='same', output_padding=\(0,\)"):
        layer.init(KEY, jnp.ones((1, 1, 3)))
