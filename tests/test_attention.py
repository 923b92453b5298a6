"""Attention layers against Keras 3 (weights copied by name), the fused path against the
explicit one, gradients against finite differences, dropout, and every error message."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import kerax as kx
from kerax import errors
from kerax.layers.attention import (
    AdditiveAttention,
    Attention,
    MultiHeadAttention,
    einsum_attention,
    expand_mask,
)
from kerax.layers.core import Embedding
from keras_oracle import keras, keras_weights, to_kerax

KEY = jax.random.key(0)


def _randomize(layer, seed=0):
    """Non-trivial Keras weights (biases and scales too), so that every layout is exercised."""
    rng = np.random.default_rng(seed)
    for w in layer.weights:
        w.assign((0.5 * rng.normal(size=w.shape)).astype("float32"))


def _close(a, b, tol=1e-5):
    jax.tree.map(lambda u, v: np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=tol, atol=tol),
                 a, b)


def _mask(rng, shape, full_rows=False):
    """Random boolean mask; every row keeps a key unless ``full_rows`` (then row 0 is all False)."""
    m = rng.random(shape) < 0.6
    m[..., 0] = True
    if full_rows:
        m[..., 0, :] = False
    return m


# -- MultiHeadAttention vs Keras --------------------------------------------------------

MHA_GRID = [
    # id, constructor arguments (kerax fields), input shapes (query, value, key), mask shape
    ("self", dict(num_heads=2, key_dim=3), [(2, 4, 5)], None),
    ("cross_key", dict(num_heads=2, key_dim=3), [(2, 4, 5), (2, 6, 7), (2, 6, 3)], None),
    ("output_shape", dict(num_heads=3, key_dim=2, output_shape=(2, 3)), [(2, 4, 5), (2, 3, 5)], None),
    ("no_bias", dict(num_heads=2, key_dim=3, use_bias=False), [(2, 4, 5), (2, 6, 5)], None),
    ("causal_self", dict(num_heads=2, key_dim=3, use_causal_mask=True), [(2, 4, 5)], None),
    ("causal_cross", dict(num_heads=2, key_dim=3, use_causal_mask=True), [(2, 4, 5), (2, 6, 5)], None),
    ("attention_mask", dict(num_heads=2, key_dim=3), [(2, 4, 5), (2, 6, 5)], (2, 4, 6)),
    ("attention_mask_full_rows", dict(num_heads=2, key_dim=3), [(2, 4, 5), (2, 6, 5)], "full"),
    ("attention_mask_broadcast_causal", dict(num_heads=2, key_dim=3, use_causal_mask=True),
     [(2, 4, 5), (2, 6, 5)], (4, 6)),
    ("scores_masked", dict(num_heads=2, key_dim=3, return_attention_scores=True),
     [(2, 4, 5), (2, 6, 5)], "full"),
    ("scores_causal", dict(num_heads=2, key_dim=3, return_attention_scores=True, use_causal_mask=True),
     [(2, 4, 5)], None),
    ("value_dim_dropout_inference", dict(num_heads=2, key_dim=3, value_dim=4, output_shape=6, dropout=0.3),
     [(2, 4, 5), (2, 6, 7)], (2, 4, 6)),
    ("axes_4d_default", dict(num_heads=2, key_dim=3), [(2, 3, 4, 5)], None),
    ("axes_4d_last_scores", dict(num_heads=2, key_dim=3, attention_axes=(2,), return_attention_scores=True),
     [(2, 3, 4, 5), (2, 3, 2, 5)], None),
    ("axes_4d_negative_masked", dict(num_heads=2, key_dim=3, attention_axes=-2), [(2, 3, 4, 5)], (2, 3, 4, 4)),
]
CALL_ARGS = ("use_causal_mask", "return_attention_scores")


def _mha_pair(kwargs, shapes, mask_shape, seed=0):
    rng = np.random.default_rng(seed)
    xs = [rng.normal(size=s).astype("float32") for s in shapes]
    m = None
    if mask_shape == "full":
        m = _mask(rng, (shapes[0][0], shapes[0][1], shapes[-1][1]), full_rows=True)
    elif mask_shape is not None:
        m = _mask(rng, mask_shape)
    call = {k: kwargs[k] for k in CALL_ARGS if k in kwargs}
    k_layer = keras.layers.MultiHeadAttention(**{k: v for k, v in kwargs.items() if k not in CALL_ARGS})
    q, v = xs[0], xs[1] if len(xs) > 1 else xs[0]
    key = xs[2] if len(xs) > 2 else None
    k_layer(q, v, key=key, **call)
    _randomize(k_layer, seed)
    k_out = k_layer(q, v, key=key, attention_mask=m, **call)
    layer = MultiHeadAttention(**kwargs)
    if m is not None:
        x = {"query": q, "value": v, "attention_mask": m, **({"key": key} if key is not None else {})}
    else:
        x = xs if len(xs) > 1 else xs[0]
    params, state = layer.init(KEY, x)
    params, state = to_kerax(params, state, keras_weights(k_layer))
    return layer, params, state, x, k_out


@pytest.mark.parametrize("kwargs,shapes,mask_shape", [g[1:] for g in MHA_GRID], ids=[g[0] for g in MHA_GRID])
def test_multi_head_attention_matches_keras(kwargs, shapes, mask_shape):
    layer, params, state, x, k_out = _mha_pair(dict(kwargs), shapes, mask_shape)
    y, _ = layer.apply(params, state, x)
    _close(y, list(k_out) if isinstance(k_out, tuple) else k_out)
    if layer.return_attention_scores:
        assert y[1].shape[-3] == layer.num_heads


def test_value_dim_fused_fallback_matches_keras_explicit_path():
    # Keras 3.15 crashes on its fused path when value_dim != key_dim (JAX backend); its
    # explicit path (return_attention_scores=True) gives the reference.
    kwargs = dict(num_heads=2, key_dim=3, value_dim=4, use_causal_mask=True)
    layer, params, state, x, k_out = _mha_pair({**kwargs, "return_attention_scores": True},
                                               [(2, 4, 5), (2, 6, 5)], (2, 4, 6))
    y, _ = MultiHeadAttention(**kwargs).apply(params, state, x)
    _close(y, k_out[0])


def _functional_pair(kind):
    """Keras and kerax models: two id inputs -> Embedding(mask_zero=True) each -> attention."""
    q_ids = np.array([[3, 1, 4, 0, 0], [2, 7, 1, 8, 2]], "int32")
    v_ids = np.array([[5, 9, 2, 6, 0, 0], [1, 3, 0, 0, 0, 0]], "int32")
    make = {
        "mha": (lambda m: m.MultiHeadAttention(2, 3, name="att"), {}),
        "mha_causal_scores": (lambda m: m.MultiHeadAttention(2, 3, name="att"),
                              dict(use_causal_mask=True, return_attention_scores=True)),
        "attention": (lambda m: m.Attention(use_scale=True, score_mode="concat", name="att"), {}),
        "additive": (lambda m: m.AdditiveAttention(name="att"), dict(use_causal_mask=True)),
    }[kind]
    kq, kv = keras.Input((5,), dtype="int32"), keras.Input((6,), dtype="int32")
    eq = keras.layers.Embedding(10, 6, mask_zero=True, name="emb_q")(kq)
    ev = keras.layers.Embedding(10, 6, mask_zero=True, name="emb_v")(kv)
    k_att = make[0](keras.layers)
    k_out = k_att(eq, ev, **make[1]) if kind.startswith("mha") else k_att([eq, ev], **make[1])
    k_model = keras.Model([kq, kv], k_out)
    for i, layer in enumerate(k_model.layers):
        _randomize(layer, i)
    expected = k_model([q_ids, v_ids])

    import kerax.layers.attention as ka  # (not exported from kerax.layers yet)
    qi, vi = kx.Input((5,), dtype="int32", name="q"), kx.Input((6,), dtype="int32", name="v")
    eq = Embedding(10, 6, mask_zero=True, name="emb_q")(qi)
    ev = Embedding(10, 6, mask_zero=True, name="emb_v")(vi)
    att = make[0](ka)
    att = type(att)(**{**att.get_config(), **make[1]})
    model = kx.Model([qi, vi], att([eq, ev]))
    params, state = model.init(KEY, [q_ids, v_ids])
    weights = {f"{l.name}/{p}": w for l in k_model.layers for p, w in keras_weights(l).items()}
    params, state = to_kerax(params, state, weights)
    return model, params, state, [q_ids, v_ids], expected


@pytest.mark.parametrize("kind", ["mha", "mha_causal_scores", "attention", "additive"])
def test_embedding_masks_in_functional_model_match_keras(kind):
    model, params, state, x, expected = _functional_pair(kind)
    y, _ = model.apply(params, state, x)
    _close(y, list(expected) if isinstance(expected, tuple) else expected)
    _, _, out_mask = model.apply_masked(params, state, x, None)
    first = out_mask[0] if isinstance(out_mask, list) else out_mask
    np.testing.assert_array_equal(first, x[0] != 0)  # the query's mask goes on


# -- Attention and AdditiveAttention vs Keras -------------------------------------------

SIMPLE_GRID = [
    ("dot", Attention, {}, 2, {}),
    ("dot_scale_key", Attention, dict(use_scale=True), 3, {}),
    ("concat", Attention, dict(score_mode="concat"), 2, {}),
    ("concat_scale_causal_scores", Attention, dict(score_mode="concat", use_scale=True), 2,
     dict(use_causal_mask=True, return_attention_scores=True)),
    ("dot_masks_scores", Attention, dict(use_scale=True), 2, dict(masks=True, return_attention_scores=True)),
    ("additive", AdditiveAttention, {}, 2, {}),
    ("additive_noscale_key_causal", AdditiveAttention, dict(use_scale=False), 3, dict(use_causal_mask=True)),
    ("additive_masks_scores", AdditiveAttention, {}, 3, dict(masks=True, return_attention_scores=True)),
]


@pytest.mark.parametrize("cls,kwargs,n,call", [g[1:] for g in SIMPLE_GRID], ids=[g[0] for g in SIMPLE_GRID])
def test_simple_attention_matches_keras(cls, kwargs, n, call):
    rng = np.random.default_rng(1)
    shapes = [(2, 4, 3), (2, 5, 4), (2, 5, 3)] if n == 3 else [(2, 4, 3), (2, 5, 3)]
    xs = [rng.normal(size=s).astype("float32") for s in shapes]
    call = dict(call)
    masks = None
    if call.pop("masks", False):
        masks = [rng.random((2, 4)) < 0.6, _mask(rng, (2, 5))]
    k_layer = getattr(keras.layers, cls.__name__)(**kwargs)
    k_layer(xs)
    _randomize(k_layer)
    k_out = k_layer(xs, mask=masks, **call)
    layer = cls(**kwargs, **call)
    params, state = to_kerax(*layer.init(KEY, xs), keras_weights(k_layer))
    y, _ = layer.apply(params, state, xs, mask=masks)
    _close(y, list(k_out) if isinstance(k_out, tuple) else k_out)


def test_keras_weight_names():
    x = [jnp.zeros((2, 4, 3)), jnp.zeros((2, 5, 3))]
    shapes = lambda layer: jax.tree.map(jnp.shape, jax.eval_shape(layer.init, KEY, x)[0])
    assert shapes(Attention(use_scale=True, score_mode="concat")) == {"scale": (), "concat_score_weight": ()}
    assert shapes(AdditiveAttention()) == {"scale": (3,)}
    assert shapes(AdditiveAttention(use_scale=False)) == {}
    mha = shapes(MultiHeadAttention(2, 4, value_dim=5, output_shape=7))
    assert mha == {"query": {"kernel": (3, 2, 4), "bias": (2, 4)}, "key": {"kernel": (3, 2, 4), "bias": (2, 4)},
                   "value": {"kernel": (3, 2, 5), "bias": (2, 5)},
                   "attention_output": {"kernel": (2, 5, 7), "bias": (7,)}}


# -- the fused path equals the explicit one ---------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
def test_dot_product_attention_equals_einsum_path(causal):
    rng = np.random.default_rng(2)
    q, k, v = (jnp.asarray(rng.normal(size=(2, n, 3, 4)), jnp.float32) for n in (5, 6, 6))
    for full_rows in (False, True):
        m = jnp.asarray(_mask(rng, (2, 5, 6), full_rows))
        if causal:
            m = m & jnp.tril(jnp.ones((5, 6), bool))
        m4 = expand_mask(m, 4, 1)
        fused = jax.nn.dot_product_attention(q, k, v, mask=m4, scale=0.5)
        explicit, probs = einsum_attention(q, k, v, m4, (1,), 0.5, zero_masked=False)
        _close(fused, explicit)
        zeroed, _ = einsum_attention(q, k, v, m4, (1,), 0.5)
        if not full_rows:  # Keras's explicit path differs only on rows with no visible key
            _close(fused, zeroed)
        np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)


def test_layer_paths_agree():
    rng = np.random.default_rng(3)
    x = {"query": rng.normal(size=(2, 4, 5)).astype("float32"), "value": rng.normal(size=(2, 6, 5)).astype("float32"),
         "attention_mask": _mask(rng, (2, 4, 6))}
    fused = MultiHeadAttention(2, 3, use_causal_mask=True)
    params, state = fused.init(KEY, x)
    y, _ = fused.apply(params, state, x)
    for other in (MultiHeadAttention(2, 3, use_causal_mask=True, return_attention_scores=True),
                  MultiHeadAttention(2, 3, use_causal_mask=True, dropout=0.4)):
        z, _ = other.apply(params, state, x)
        _close(y, z[0] if isinstance(z, list) else z)


# -- gradients, dropout, masks, regularizers --------------------------------------------


@pytest.fixture
def x64():
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", old)


@pytest.mark.parametrize("layer,shapes", [
    (MultiHeadAttention(2, 3, use_causal_mask=True, dtype="float64"), [(2, 4, 5)]),
    (MultiHeadAttention(2, 3, value_dim=2, return_attention_scores=True, dtype="float64"), [(2, 4, 5), (2, 3, 4)]),
    (Attention(use_scale=True, score_mode="concat", dtype="float64"), [(2, 4, 3), (2, 5, 3)]),
    (AdditiveAttention(use_causal_mask=True, dtype="float64"), [(2, 4, 3), (2, 5, 2), (2, 5, 3)]),
], ids=["mha_fused", "mha_explicit", "attention", "additive"])
def test_gradients_match_finite_differences(x64, layer, shapes):
    rng = np.random.default_rng(4)
    xs = [jnp.asarray(rng.normal(size=s)) for s in shapes]
    x = xs[0] if len(xs) == 1 else xs
    params, state = layer.init(KEY, x)
    if isinstance(layer, Attention):
        params = {k: v + 0.3 for k, v in params.items()}

    @jax.jit
    def f(p, x):
        y, _ = layer.apply(p, state, x)
        return jax.tree.leaves(y)[0]

    check_grads(f, (params, x), order=1, modes=["rev"], eps=1e-5, atol=1e-5, rtol=1e-5)


def test_dropout_in_training():
    x = np.random.default_rng(5).normal(size=(2, 4, 5)).astype("float32")
    for layer in (MultiHeadAttention(2, 3, dropout=0.5, return_attention_scores=True),
                  Attention(dropout=0.5, return_attention_scores=True)):
        xs = x if isinstance(layer, MultiHeadAttention) else [x, x]
        params, state = layer.init(KEY, xs)
        train = jax.jit(lambda p, x, rng: layer.apply(p, state, x, training=True, rng=rng)[0])
        a, sa = train(params, xs, jax.random.key(1))
        b, _ = train(params, xs, jax.random.key(1))
        (c, sc), _ = jax.jit(layer.apply)(params, state, xs)
        np.testing.assert_array_equal(a, b)
        assert not np.allclose(a, c)
        if isinstance(layer, MultiHeadAttention):  # Keras returns the scores before dropout
            _close(sa, sc)
        else:  # Attention returns the weights after dropout, as Keras: zeros or 2x
            assert np.any(sa == 0) and np.allclose(sa[sa != 0], 2 * sc[sa != 0], rtol=1e-5)
        with pytest.raises(errors.MissingRNGError, match="needs a random key when training"):
            layer.apply(params, state, xs, training=True)


def test_dict_inputs_in_a_functional_model():
    q, v = kx.Input((4, 5)), kx.Input((6, 5))
    m = kx.Input((4, 6), dtype="bool")
    scores = MultiHeadAttention(2, 3, return_attention_scores=True)({"query": q, "value": v, "attention_mask": m})
    assert scores[0].shape == (None, 4, 5) and scores[1].shape == (None, 2, 4, 6)
    model = kx.Model([q, v, m], scores)
    rng = np.random.default_rng(6)
    x = [rng.normal(size=(2, 4, 5)).astype("float32"), rng.normal(size=(2, 6, 5)).astype("float32"),
         _mask(rng, (2, 4, 6))]
    params, state = model.init(KEY, x)
    (_, probs), _ = model.apply(params, state, x)
    np.testing.assert_array_equal(np.asarray(probs) > 0, np.broadcast_to(x[2][:, None], probs.shape))


def test_penalty_covers_every_projection():
    layer = MultiHeadAttention(2, 3, kernel_regularizer="l2", bias_regularizer="l1", bias_initializer="ones")
    params, _ = layer.init(KEY, jnp.zeros((1, 4, 5)))
    kernels = sum(0.01 * jnp.sum(p["kernel"] ** 2) for p in params.values())
    biases = sum(0.01 * jnp.sum(jnp.abs(p["bias"])) for p in params.values())
    np.testing.assert_allclose(layer.penalty(params), kernels + biases, rtol=1e-6)


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_heads=2), r"key_dim is required.*key_dim=None"),
    (dict(), r"num_heads is required"),
    (dict(num_heads=2, key_dim=0), r"key_dim must be a positive integer; received key_dim=0"),
    (dict(num_heads=2, key_dim=-3), r"key_dim must be a positive integer"),
    (dict(num_heads=2, key_dim=3, value_dim=0), r"value_dim must be a positive integer"),
    (dict(num_heads=2, key_dim=3, dropout=1.0), r"dropout must be a number in \[0, 1\)"),
    (dict(num_heads=2, key_dim=3, output_shape=(4, "a")), r"output_shape must be None"),
    (dict(num_heads=2, key_dim=3, attention_axes=0), r"attention_axes must be None.*attention_axes=0"),
    (dict(num_heads=2, key_dim=3, attention_axes=(1, 1)), r"distinct ints"),
    (dict(num_heads=2, key_dim=3, attention_axes=-1), r"between the batch axis"),
])
def test_multi_head_attention_config_errors(kwargs, match):
    with pytest.raises(errors.ConfigError, match=match):
        MultiHeadAttention(**kwargs)


def test_simple_attention_config_errors():
    with pytest.raises(errors.ConfigError, match=r"score_mode must be 'dot' or 'concat'; received score_mode='add'"):
        Attention(score_mode="add")
    with pytest.raises(errors.ConfigError, match=r"dropout must be a number in \[0, 1\); received dropout=2"):
        AdditiveAttention(dropout=2)


def test_multi_head_attention_input_errors():
    layer = MultiHeadAttention(2, 3)
    a, b = jnp.zeros((2, 4, 5)), jnp.zeros((2, 6, 5))
    params, state = layer.init(KEY, [a, b])
    cases = [
        ([jnp.zeros((2, 4, 7)), b], errors.ShapeError, r"expected query with last axis 5 .*received query of shape \(2, 4, 7\)"),
        ([a, b, jnp.zeros((2, 5, 5))], errors.ShapeError, r"value and key must agree on every axis but the last"),
        ([a, jnp.zeros((3, 6, 5))], errors.ShapeError, r"query and value must agree on the batch axis"),
        ([jnp.zeros((2, 5)), jnp.zeros((2, 5))], errors.ShapeError, r"same rank >= 3"),
        ({"query": a, "value": b, "attention_mask": jnp.ones((2, 6, 4), bool)}, errors.ShapeError,
         r"attention_mask must broadcast to \(2, 4, 6\).*received attention_mask of shape \(2, 6, 4\)"),
        ({"query": a, "value": b, "attention_mask": jnp.ones((6,), bool)}, errors.ShapeError,
         r"attention_mask must broadcast to"),
        ({"query": a, "values": b}, errors.InputStructureError, r"needs keys 'query' and 'value'.*\['query', 'values'\]"),
        ([a, b, b, b], errors.InputStructureError, r"\[query, value\] or \[query, value, key\]; received a list of 4"),
    ]
    for x, cls, match in cases:
        with pytest.raises(cls, match=match):
            layer.apply(params, state, x)
    with pytest.raises(errors.ShapeError, match=r"attention_mask must broadcast to \(2, 4, 6\)"):
        layer.init(KEY, {"query": a, "value": b, "attention_mask": jnp.ones((2, 4, 5), bool)})
    with pytest.raises(errors.ShapeError, match=r"the value mask must have shape \(2, 6\).*received mask of shape \(2, 4\)"):
        layer.apply(params, state, [a, b], mask=[jnp.ones((2, 4), bool), jnp.ones((2, 4), bool)])
    with pytest.raises(errors.InputStructureError, match=r"mask must have the structure of the inputs"):
        layer.apply(params, state, [a, b], mask=jnp.ones((2, 4), bool))
    x4 = jnp.zeros((2, 3, 4, 5))
    with pytest.raises(errors.ShapeError, match=r"use_causal_mask needs 3-D inputs.*query \(2, 3, 4, 5\)"):
        MultiHeadAttention(2, 3, use_causal_mask=True).init(KEY, x4)
    p4, _ = layer.init(KEY, x4)
    with pytest.raises(errors.ShapeError, match=r"padding masks .* need 3-D inputs.*\(2, 3, 4, 5\)"):
        layer.apply(p4, {}, x4, mask=jnp.ones((2, 3, 4), bool))
    with pytest.raises(errors.ShapeError, match=r"attention_axes=\(3,\) must name axes between the batch and the feature"):
        MultiHeadAttention(2, 3, attention_axes=3).init(KEY, x4)


def test_simple_attention_input_errors():
    layer = Attention()
    q, v = jnp.zeros((2, 4, 3)), jnp.zeros((2, 5, 3))
    with pytest.raises(errors.InputStructureError, match=r"expects a list \[query, value\] or \[query, value, key\]; received"):
        layer.init(KEY, q)
    with pytest.raises(errors.ShapeError, match=r"share their feature size.*query \(2, 4, 3\), value \(2, 5, 3\), key \(2, 5, 2\)"):
        layer.apply({}, {}, [q, v, jnp.zeros((2, 5, 2))])
    with pytest.raises(errors.ShapeError, match=r"the query mask must have shape \(2, 4\)"):
        layer.apply({}, {}, [q, v], mask=[jnp.ones((2, 5), bool), None])
    with pytest.raises(errors.InputStructureError, match=r"mask must be a list \[query_mask, value_mask\]"):
        layer.apply({}, {}, [q, v], mask=jnp.ones((2, 5), bool))
