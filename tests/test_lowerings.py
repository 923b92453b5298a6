"""The CPU lowerings (padded and im2col convolution, reshape pooling) give the generic
lowerings' numbers, values and gradients, and the dispatch picks them only where they apply."""

from __future__ import annotations

import numpy as np
import pytest

import jax
import jax.numpy as jnp

import kerax as kx
from kerax import errors, layers
from kerax.layers import _lowering as lw


def _rand(seed, shape, integers=False):
    x = np.random.default_rng(seed).normal(size=shape)
    return np.round(2 * x) if integers else x.astype(np.float32)  # integers: ties in max pooling


def _close(a, b, rtol=1e-5):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * max(1.0, np.abs(b).max()))


def _value_and_vjp(f, *args):
    """``f(*args)`` and its gradients against a fixed random cotangent."""
    y, vjp = jax.vjp(f, *args)
    return y, vjp(jnp.asarray(np.random.default_rng(9).normal(size=y.shape), y.dtype))


def _init(layer, x):
    """Random params of ``layer``'s shapes (NumPy, so no initializer is compiled)."""
    params, state = jax.eval_shape(layer.init, jax.random.key(0), x)
    leaves, tree = jax.tree.flatten(params)
    return jax.tree.unflatten(tree, [_rand(i, a.shape) for i, a in enumerate(leaves)]), state


def _both(run, lowered, generic, *args):
    """``run(how, *args)`` for the two lowerings, compiled as one program (tests stay fast)."""
    return jax.jit(lambda *a: (run(lowered, *a), run(generic, *a)))(*args)


def _primitives(f, *args) -> set[str]:
    """Names of the primitives in ``f``'s jaxpr, nested jaxprs (jit, custom_jvp) included."""
    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            yield eqn.primitive.name
            for value in eqn.params.values():
                for sub in value if isinstance(value, (tuple, list)) else (value,):
                    sub = getattr(sub, "jaxpr", sub)
                    if hasattr(sub, "eqns"):
                        yield from walk(sub)
    return set(walk(jax.make_jaxpr(f)(*args).jaxpr))


def _numpy_conv(x, k, strides, pads, dilation):
    """Direct loop definition of channels-last cross-correlation (independent reference)."""
    x = np.pad(np.asarray(x, np.float64), [(0, 0), *pads, (0, 0)])
    k = np.asarray(k, np.float64)
    rank = k.ndim - 2
    window = [(n - 1) * d + 1 for n, d in zip(k.shape[:rank], dilation)]
    out = [(n - w) // s + 1 for n, w, s in zip(x.shape[1:-1], window, strides)]
    y = np.zeros((x.shape[0], *out, k.shape[-1]))
    for pos in np.ndindex(*out):
        for tap in np.ndindex(*k.shape[:rank]):
            idx = tuple(p * s + t * d for p, s, t, d in zip(pos, strides, tap, dilation))
            y[(slice(None), *pos)] += x[(slice(None), *idx)] @ k[tap]
    return y


# x shape, kernel shape, strides, padding, dilation
CONVS = [
    ((2, 9, 9, 3), (3, 3, 3, 4), (1, 1), "VALID", (1, 1)),
    ((2, 9, 8, 3), (3, 2, 3, 4), (2, 1), "SAME", (1, 1)),
    ((2, 10, 9, 2), (3, 3, 2, 3), (1, 2), "SAME", (2, 1)),
    ((2, 11, 10, 2), (2, 3, 2, 3), (3, 2), "VALID", (1, 2)),
    ((2, 10, 9, 2), (3, 2, 2, 3), (1, 1), "VALID", (2, 3)),
    ((3, 8, 8, 1), (3, 3, 1, 5), (1, 1), "VALID", (1, 1)),  # Cin = 1, the first layer
    ((2, 8, 7, 2), (3, 1, 2, 3), (1, 1), "VALID", (1, 1)),  # padded pads the height
    ((2, 7, 6, 3), (1, 1, 3, 4), (1, 1), "VALID", (1, 1)),  # 1x1: one matrix product
    ((2, 7, 6, 3), (1, 1, 3, 4), (2, 2), "SAME", (1, 1)),
    ((2, 7, 6, 3), (3, 3, 3, 2), (2, 2), [(1, 0), (2, 1)], (1, 1)),  # explicit pads
    ((2, 12, 3), (3, 3, 4), (1,), "VALID", (1,)),
    ((2, 12, 3), (4, 3, 4), (2,), "SAME", (1,)),
    ((2, 12, 1), (3, 1, 2), (1,), [(4, 0)], (2,)),  # causal: dilation * (k - 1) on the left
    ((1, 5, 5, 4, 2), (2, 2, 2, 2, 3), (1, 1, 1), "SAME", (1, 1, 1)),  # 3-D, forced only
]


@pytest.mark.parametrize("xs, ks, strides, padding, dilation", CONVS)
def test_cpu_convs_equal_generic_values_and_gradients(xs, ks, strides, padding, dilation):
    x, k = _rand(0, xs), _rand(1, ks)

    def run(how, x, k):
        return [_value_and_vjp(lambda x, k: lw.conv(x, k, strides, padding, dilation, lowering=h), x, k)
                for h in how]

    lowered, (generic,) = _both(run, ("im2col", "padded"), ("generic",), x, k)
    for y, (dx, dk) in lowered:
        _close(y, generic[0])
        _close(dx, generic[1][0])
        _close(dk, generic[1][1])
    pads = padding if not isinstance(padding, str) else [
        tuple(p) for p in jax.lax.padtype_to_pads(
            xs[1:-1], [(n - 1) * d + 1 for n, d in zip(ks[:-2], dilation)], strides, padding)]
    _close(generic[0], _numpy_conv(x, k, strides, pads, dilation))


def test_im2col_forward_mode_second_order_and_vmap():
    x, k, t = _rand(0, (2, 7, 7, 2)), _rand(1, (3, 3, 2, 3)), _rand(2, (3, 3, 2, 3))

    def loss(how):
        return lambda x, k: jnp.sum(jnp.tanh(lw.conv(x, k, (1, 1), "SAME", lowering=how)))

    # Hessian-vector product in the kernel: forward-over-reverse through the custom JVP.
    def run(how, x, k, t):
        hvp = jax.jvp(jax.grad(loss(how), 1), (x, k), (jnp.zeros_like(x), t))[1]
        batched = jax.vmap(lambda xi: lw.conv(xi, k, (1, 1), "VALID", lowering=how))(x[:, None])
        return hvp, batched

    (hvp, batched), (hvp0, batched0) = _both(run, "im2col", "generic", x, k, t)
    _close(hvp, hvp0, rtol=1e-4)
    _close(batched, batched0)


# x shape, window, strides, padding
POOLS = [
    ((2, 8, 8, 3), (2, 2), (2, 2), "VALID"),
    ((2, 9, 7, 3), (2, 2), (2, 2), "VALID"),  # the tail is cropped
    ((2, 9, 7, 3), (2, 2), (2, 2), "SAME"),  # padded at the end
    ((2, 7, 8, 2), (3, 2), (3, 2), "SAME"),  # 7 -> 9 pads one position on each side
    ((2, 9, 3), (3,), (3,), "SAME"),
    ((1, 4, 6, 4, 2), (2, 3, 2), (2, 3, 2), "VALID"),
]


@pytest.mark.parametrize("xs, window, strides, padding", POOLS)
def test_reshape_pool_equals_generic_with_ties(xs, window, strides, padding):
    x = _rand(0, xs, integers=True).astype(np.float32)

    def run(how, x):
        return [_value_and_vjp(lambda x: pool(x, window, strides, padding, lowering=how), x)
                for pool in (lw.max_pool, lw.avg_pool)]

    reshaped, generic = _both(run, "reshape", "generic", x)
    for (y, (dx,)), (y0, (dx0,)) in zip(reshaped, generic):
        _close(y, y0, rtol=1e-6)
        # select-and-scatter gives a tied window's gradient to its first maximum; so do we
        _close(dx, dx0, rtol=1e-6)
    np.testing.assert_array_equal(reshaped[0][0], generic[0][0])


def test_avg_pool_same_divides_by_real_inputs():
    x = np.arange(5.0).reshape(1, 5, 1)
    for how in ("reshape", "generic"):
        y = lw.avg_pool(jnp.asarray(x), (2,), (2,), "SAME", lowering=how)
        np.testing.assert_allclose(np.asarray(y).ravel(), [0.5, 2.5, 4.0])


@pytest.mark.parametrize("xs, ks, strides, padding, groups, expected", [
    ((2, 8, 8, 4), (3, 3, 4, 6), (1, 1), "VALID", 1, "padded"),
    ((2, 8, 8, 4), (3, 3, 4, 6), (1, 1), [(0, 0), (0, 0)], 1, "padded"),
    ((2, 8, 8, 4), (3, 3, 4, 6), (1, 1), "SAME", 1, "generic"),  # padded already: fast
    ((2, 8, 8, 1), (3, 3, 1, 6), (1, 1), "VALID", 1, "im2col"),  # shallow patches: 9 values
    ((2, 8, 8, 3), (3, 3, 3, 6), (1, 1), "VALID", 1, "im2col"),  # 27 values
    ((2, 8, 8, 1), (3, 3, 1, 6), (1, 1), "SAME", 1, "generic"),
    ((2, 8, 8, 4), (3, 3, 4, 6), (2, 2), "VALID", 1, "generic"),
    ((2, 8, 8, 4), (3, 3, 2, 6), (1, 1), "VALID", 2, "generic"),
    ((2, 8, 8, 4), (1, 1, 4, 6), (1, 1), "SAME", 1, "im2col"),
    ((2, 8, 4), (1, 4, 6), (1,), "VALID", 1, "im2col"),
    ((2, 8, 4), (3, 4, 6), (1,), "VALID", 1, "generic"),
    ((2, 8, 8, 8, 4), (3, 3, 3, 4, 6), (1, 1, 1), "VALID", 1, "generic"),
])
def test_auto_conv_lowering_on_cpu(monkeypatch, xs, ks, strides, padding, groups, expected):
    monkeypatch.delenv(lw.CONV_ENV, raising=False)
    assert jax.default_backend() == "cpu"
    assert lw.conv_lowering(xs, ks, strides, padding, None, groups) == expected


def test_dispatch_shows_in_the_jaxpr(monkeypatch):
    monkeypatch.delenv(lw.CONV_ENV, raising=False)
    monkeypatch.delenv(lw.POOL_ENV, raising=False)
    x, k, k1 = _rand(0, (2, 8, 8, 4)), _rand(1, (3, 3, 4, 6)), _rand(1, (1, 1, 4, 6))
    conv = lambda how, kk=k, groups=1: (lambda x: lw.conv(x, kk, (1, 1), "VALID", groups=groups, lowering=how))
    assert "conv_general_dilated" not in _primitives(conv(None, k1), x)  # auto, 1x1: a dot
    assert "conv_general_dilated" not in _primitives(conv("im2col"), x)
    assert "conv_general_dilated" in _primitives(conv("generic"), x)
    padded = jax.make_jaxpr(conv(None))(x).jaxpr.eqns
    assert [e.params["padding"] for e in padded if e.primitive.name == "conv_general_dilated"] == [
        ((0, 0), (0, 1))]
    assert lw.conv_lowering(x.shape, (3, 3, 2, 6), (1, 1), "VALID", None, 2, "im2col") == "generic"
    assert lw.conv_lowering(x.shape, (3, 3, 2, 6), (1, 1), "VALID", None, 2, "padded") == "padded"
    # padded only adds padding to an unpadded convolution with a window > 1
    assert lw.conv_lowering(x.shape, k.shape, (1, 1), "SAME", lowering="padded") == "generic"
    assert lw.conv_lowering(x.shape, k1.shape, (1, 1), "VALID", lowering="padded") == "generic"
    tall = jax.make_jaxpr(conv("padded", _rand(1, (3, 1, 4, 6))))(x).jaxpr.eqns
    assert [e.params["padding"] for e in tall if e.primitive.name == "conv_general_dilated"] == [
        ((0, 1), (0, 0))]
    # im2col's gradient in the input is the generic transposed convolution
    assert "conv_general_dilated" in _primitives(jax.grad(lambda x: conv("im2col")(x).sum()), x)

    pool = lambda how, w=(2, 2), s=(2, 2), f=lw.max_pool: (lambda x: f(x, w, s, "VALID", lowering=how))
    assert "reduce_window_max" not in _primitives(pool(None), x)
    assert "reduce_window_max" in _primitives(pool("generic"), x)
    assert "reduce_window_max" in _primitives(pool("reshape", (3, 3), (2, 2)), x)  # overlaps
    assert "reduce_window_sum" in _primitives(pool(None, f=lw.avg_pool), x)  # fast already
    assert "reduce_window_sum" not in _primitives(pool("reshape", f=lw.avg_pool), x)

    monkeypatch.setenv(lw.CONV_ENV, "generic")
    monkeypatch.setenv(lw.POOL_ENV, "GENERIC")
    assert "conv_general_dilated" in _primitives(conv(None, k1), x)
    assert "reduce_window_max" in _primitives(pool(None), x)
    assert "conv_general_dilated" not in _primitives(conv("im2col"), x)  # the argument wins


def test_unknown_lowering_names_are_config_errors(monkeypatch):
    x, k = jnp.zeros((1, 4, 4, 1)), jnp.zeros((2, 2, 1, 1))
    conv_names = r"'auto', 'generic', 'padded', 'im2col'"
    with pytest.raises(errors.ConfigError,
                       match=rf"lowering must be one of {conv_names}; received lowering='fast'"):
        lw.conv(x, k, (1, 1), "VALID", lowering="fast")
    with pytest.raises(errors.ConfigError, match=r"lowering must be one of 'auto', 'generic', "
                                                 r"'reshape'; received lowering='im2col'"):
        lw.max_pool(x, (2, 2), (2, 2), "VALID", lowering="im2col")
    monkeypatch.setenv(lw.CONV_ENV, "gpu")
    with pytest.raises(errors.ConfigError, match=rf"KERAX_CONV_LOWERING must be one of {conv_names}; "
                                                 r"received KERAX_CONV_LOWERING='gpu'"):
        lw.conv(x, k, (1, 1), "VALID")
    monkeypatch.setenv(lw.POOL_ENV, "fast")
    with pytest.raises(errors.ConfigError, match=r"KERAX_POOL_LOWERING must be one of .*; "
                                                 r"received KERAX_POOL_LOWERING='fast'"):
        layers.MaxPooling2D(2).apply({}, {}, x)


# the layer, its input shape, the conv lowering compared with the generic one
LAYERS = [
    (lambda: layers.Conv2D(4, 3, activation="relu"), (2, 9, 9, 4), "auto"),  # padded
    (lambda: layers.Conv2D(4, 3, activation="relu"), (2, 9, 9, 1), "auto"),  # im2col
    (lambda: layers.Conv2D(4, 3, activation="relu"), (2, 9, 9, 4), "im2col"),
    (lambda: layers.Conv2D(4, (3, 2), strides=2, padding="same", use_bias=False), (2, 9, 8, 1), "im2col"),
    (lambda: layers.Conv2D(3, 3, dilation_rate=2, padding="valid"), (2, 9, 9, 2), "auto"),
    (lambda: layers.Conv2D(5, 1), (2, 6, 5, 3), "auto"),
    (lambda: layers.Conv1D(4, 3, padding="causal", dilation_rate=2), (2, 10, 3), "im2col"),
    (lambda: layers.Conv1D(4, 4, strides=2, padding="same"), (2, 11, 3), "im2col"),
    (lambda: layers.MaxPooling2D(2), (2, 9, 8, 3), "auto"),
    (lambda: layers.MaxPooling2D(3, padding="same"), (2, 7, 8, 3), "auto"),
    (lambda: layers.AveragePooling2D(2, padding="same"), (2, 7, 8, 3), "auto"),
    (lambda: layers.MaxPooling1D(2), (2, 9, 3), "auto"),
]


@pytest.mark.parametrize("make, shape, conv", LAYERS)
def test_layers_identical_under_both_lowerings(monkeypatch, make, shape, conv):
    layer = make()
    x = _rand(0, shape, integers=True).astype(np.float32)
    params, state = _init(layer, x)

    def run(how, params, x):  # the variables are read while tracing
        monkeypatch.setenv(lw.CONV_ENV, how[0])
        monkeypatch.setenv(lw.POOL_ENV, how[1])
        return _value_and_vjp(lambda p, x: layer.apply(p, state, x)[0], params, x)

    (y, grads), (y0, grads0) = _both(run, (conv, "reshape"), ("generic", "generic"), params, x)
    _close(y, y0)
    for g, g0 in zip(jax.tree.leaves(grads), jax.tree.leaves(grads0)):
        _close(g, g0)


def test_small_cnn_trains_identically_under_both_lowerings(monkeypatch):
    model = kx.Sequential([layers.Conv2D(4, 3, activation="relu"), layers.MaxPooling2D(2),
                           layers.Flatten(), layers.Dense(3)])
    x, y = _rand(0, (8, 8, 8, 1)), np.arange(8) % 3
    params, state = _init(model, x)

    def grads(how, params):
        monkeypatch.setenv(lw.CONV_ENV, how[0])
        monkeypatch.setenv(lw.POOL_ENV, how[1])
        loss = lambda p: kx.losses.sparse_categorical_crossentropy(
            y, model.apply(p, state, x)[0], from_logits=True).mean()
        return jax.value_and_grad(loss)(params)

    (l1, g1), (l0, g0) = _both(grads, ("auto", "auto"), ("generic", "generic"), params)
    _close(l1, l0)
    jax.tree.map(_close, g1, g0)
