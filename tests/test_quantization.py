"""Post-training int8 quantization (``kx.quantize``, ``kerax.layers.quantized``), checked
against NumPy formulas: the per-channel scales and rounding, the quantized layers' outputs,
whole models (Sequential, functional, nested, shared), saving with an int8 dtype, and the
digits CNN's size and accuracy."""

from __future__ import annotations

import json
import os
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kerax as kx
from kerax.experiments import runner
from kerax import errors, layers
from kerax.core import config as cfg
from kerax.layers.quantized import (
    QuantizedConv,
    QuantizedDense,
    QuantizedEmbedding,
    dequantize,
    quantize_per_channel,
)
from kerax.models.quantize import quantization_report


def np_quantize(w, channel_axes):
    """Reference: Keras 3's abs_max_quantize, symmetric int8 with one scale
    127 / (max|w| + 1e-7) per channel (channel_axes kept); w ~= q / scale."""
    w = np.asarray(w, np.float64)
    keep = {a % w.ndim for a in channel_axes}
    reduce = tuple(a for a in range(w.ndim) if a not in keep)
    amax = np.abs(w).max(axis=reduce, keepdims=True)
    scale = 127.0 / (amax + 1e-7)
    q = np.clip(np.round(w * scale), -127, 127)
    return q.astype(np.int8), scale  # scale keeps dims, to broadcast against q


def _init(layer, x, seed=0):
    return layer.init(jax.random.key(seed), x)


# -- the quantizer -----------------------------------------------------------------------------


@pytest.mark.parametrize("shape,axes", [
    ((7, 5), (-1,)),            # Dense kernel (in, out)
    ((3, 3, 4, 6), (-1,)),      # Conv2D kernel
    ((3, 3, 6, 4), (-2,)),      # Conv2DTranspose kernel (*window, out, in)
    ((3, 3, 4, 2), (-2, -1)),   # DepthwiseConv2D kernel (*window, in, mult)
    ((11, 4), (0,)),            # Embedding table, one scale per row
])
def test_per_channel_scales_and_error_bound(shape, axes):
    rng = np.random.default_rng(0)
    w = rng.normal(size=shape).astype(np.float32) * rng.uniform(0.01, 3.0, size=shape[-1])
    w[..., 0] = 0.0 if axes == (-1,) else w[..., 0]  # an all-zero output channel
    q, scale = quantize_per_channel(w, axes)
    q, scale = np.asarray(q), np.asarray(scale)
    ref_q, ref_scale = np_quantize(w, axes)
    assert q.dtype == np.int8 and scale.dtype == np.float32
    assert scale.shape == tuple(shape[a] for a in sorted(a % len(shape) for a in axes))
    np.testing.assert_allclose(scale.reshape(-1), ref_scale.reshape(-1), rtol=1e-6)
    assert np.abs(q).max() <= 127
    # |w - dequant(q)| <= 0.5 / scale elementwise (float32 rounding: a hair of slack).
    deq = q.astype(np.float64) / ref_scale
    assert np.all(np.abs(w - deq) <= 0.5 / ref_scale * (1 + 1e-5) + 1e-12)
    # Rounding to nearest agrees with NumPy except at exact float32 ties.
    assert np.mean(q == ref_q) > 0.999
    # The largest value of each channel maps to +-127 (full int8 range used).
    keep = {a % len(shape) for a in axes}
    red = tuple(a for a in range(len(shape)) if a not in keep)
    top = np.abs(q).max(axis=red)
    assert np.all((top == 127) | (np.abs(w).max(axis=red) == 0))
    np.testing.assert_allclose(np.asarray(dequantize(jnp.asarray(q), jnp.asarray(scale), axes)),
                               q / ref_scale, rtol=1e-6)


def test_all_zero_channel_quantizes_to_exact_zeros():
    w = np.zeros((4, 3), np.float32)
    w[:, 1] = [0.5, -1.0, 0.25, 0.0]
    q, scale = quantize_per_channel(w, (-1,))
    # Keras's epsilon keeps an all-zero channel's scale finite (127 / 1e-7): no 0 / 0.
    assert np.asarray(scale).tolist() == [pytest.approx(1.27e9), pytest.approx(127.0), pytest.approx(1.27e9)]
    assert np.asarray(q)[:, 1].tolist() == [63, -127, 32, 0]  # 0.5 * 127 / (1 + 1e-7) < 63.5
    assert np.all(np.asarray(q)[:, [0, 2]] == 0)
    assert np.all(np.asarray(dequantize(q, scale, (-1,)))[:, [0, 2]] == 0)


# -- the quantized layers vs NumPy -------------------------------------------------------------


def test_quantized_dense_matches_numpy():
    dense = layers.Dense(5, activation="relu", bias_initializer="uniform")
    qd = QuantizedDense(layer=dense)
    x = np.random.default_rng(1).normal(size=(3, 7)).astype(np.float32)
    params, state = _init(qd, jnp.asarray(x))
    fparams, _ = _init(dense, jnp.asarray(x))  # same rng: the float weights qd quantized
    assert set(params) == {"bias"} and set(state) == {"kernel", "kernel_scale"}
    assert state["kernel"].dtype == jnp.int8 and state["kernel_scale"].shape == (5,)
    q, s = np_quantize(fparams["kernel"], (-1,))
    np.testing.assert_array_equal(np.asarray(state["kernel"]), q)
    with jax.numpy_dtype_promotion("strict"):
        y, new_state = jax.jit(qd.apply)(params, state, jnp.asarray(x))
    ref = np.maximum(x.astype(np.float64) @ (q / s) + np.asarray(params["bias"]), 0)
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-5, atol=1e-6)
    assert new_state["kernel"].dtype == jnp.int8  # the state passes through unchanged


def _np_conv2d_valid(x, k):
    windows = np.lib.stride_tricks.sliding_window_view(x, k.shape[:2], axis=(1, 2))
    return np.einsum("bijchw,hwco->bijo", windows, k)


def test_quantized_conv2d_matches_numpy():
    conv = layers.Conv2D(4, 3, activation="relu", bias_initializer="uniform")
    qc = QuantizedConv(layer=conv)
    x = np.random.default_rng(2).normal(size=(2, 6, 5, 3)).astype(np.float32)
    params, state = _init(qc, jnp.asarray(x))
    fparams, _ = _init(conv, jnp.asarray(x))
    q, s = np_quantize(fparams["kernel"], (-1,))
    np.testing.assert_array_equal(np.asarray(state["kernel"]), q)
    y, _ = qc.apply(params, state, jnp.asarray(x))
    ref = np.maximum(_np_conv2d_valid(x.astype(np.float64), q / s) + np.asarray(params["bias"]), 0)
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("make,weights", [
    (lambda: layers.Conv1D(4, 3, padding="causal"), {"kernel": (-1,)}),
    (lambda: layers.Conv2DTranspose(4, 3, strides=2), {"kernel": (-2,)}),
    (lambda: layers.DepthwiseConv2D(3, depth_multiplier=2), {"kernel": (-2, -1)}),
    (lambda: layers.SeparableConv2D(5, 3, depth_multiplier=2),
     {"depthwise_kernel": (-2, -1), "pointwise_kernel": (-1,)}),
    (lambda: layers.Conv3D(2, 2), {"kernel": (-1,)}),
])
def test_other_convolutions_equal_the_float_layer_on_numpy_dequantized_weights(make, weights):
    layer = make()
    shape = {1: (2, 7, 3), 2: (2, 6, 6, 3), 3: (1, 4, 4, 4, 2)}[layer.rank]
    x = jnp.asarray(np.random.default_rng(3).normal(size=shape).astype(np.float32))
    qc = QuantizedConv(layer=layer)
    params, state = _init(qc, x)
    fparams, _ = _init(layer, x)
    ref_params = dict(fparams)
    for name, axes in weights.items():
        q, s = np_quantize(fparams[name], axes)
        np.testing.assert_array_equal(np.asarray(state[name]), q)
        assert state[name + "_scale"].shape == tuple(np.squeeze(s).shape)
        ref_params[name] = jnp.asarray((q / s).astype(np.float32))
    y, _ = qc.apply(params, state, x)
    ref, _ = layer.apply(ref_params, {}, x)
    np.testing.assert_allclose(np.asarray(y), np.asarray(ref), rtol=1e-5, atol=1e-5)


def test_quantized_embedding_is_a_per_row_lookup():
    emb = layers.Embedding(9, 4, mask_zero=True)
    qe = QuantizedEmbedding(layer=emb)
    ids = jnp.asarray([[0, 3, 8], [5, 5, 1]], jnp.int32)
    params, state = _init(qe, ids)
    fparams, _ = _init(emb, ids)
    assert params == {} and state["embeddings_scale"].shape == (9,)
    q, s = np_quantize(fparams["embeddings"], (0,))
    y, _ = qe.apply(params, state, ids)
    np.testing.assert_allclose(np.asarray(y), (q / s)[np.asarray(ids)], rtol=1e-6)
    assert np.asarray(qe.compute_mask(ids, None)).tolist() == [[False, True, True], [True, True, True]]


def test_quantized_layer_config_round_trips_through_the_registry():
    qd = QuantizedDense(layer=layers.Dense(3, activation="tanh"), name="head")
    config = json.loads(json.dumps(qd.get_config()))  # JSON-able
    again = cfg.deserialize({"class_name": "QuantizedDense", "config": config})
    assert type(again) is QuantizedDense and again.name == "head"
    assert type(again.layer) is layers.Dense and again.layer.units == 3 and again.layer.activation == "tanh"


# -- whole models ------------------------------------------------------------------------------


def _digits_cnn() -> kx.Model:
    """The digits CNN, built from the shipped ``kerax/configs/digits_cnn.yaml``."""
    config = runner.read_config("digits_cnn")
    return runner.build_model(config["model"], {"num_classes": 10})


@pytest.fixture(scope="module")
def digits():
    (x_train, y_train), (x_test, y_test) = kx.datasets.load_digits()
    model = _digits_cnn()
    model.compile(optimizer=kx.optimizers.Adam(learning_rate=0.002),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=32, epochs=3, verbose=0, seed=0)
    before = jax.tree.map(np.array, (model.params, model.state))
    quantized = kx.quantize(model)
    return model, quantized, before, (x_test, y_test)


def test_digits_int8_is_3_5x_smaller_and_within_one_percent(digits, tmp_path):
    """Issue 9, point 5: file size ratio >= 3.5 and held-out accuracy within 1%."""
    model, quantized, _, (x_test, y_test) = digits
    sizes = {}
    for tag, m in (("float", model), ("int8", quantized)):
        m.save(tmp_path / f"{tag}.kerax", include_optimizer=False)
        sizes[tag] = os.path.getsize(tmp_path / f"{tag}.kerax")
    acc_float = np.mean(model.predict(x_test).argmax(-1) == y_test)
    acc_int8 = np.mean(quantized.predict(x_test).argmax(-1) == y_test)
    print(f"float32 {sizes['float']} B acc {acc_float:.4f}; int8 {sizes['int8']} B acc "
          f"{acc_int8:.4f}; ratio {sizes['float'] / sizes['int8']:.2f}")
    assert sizes["float"] / sizes["int8"] >= 3.5
    assert acc_float > 0.9  # trained: the comparison means something
    assert abs(acc_int8 - acc_float) <= 0.01
    # evaluate works as compiled (the quantized model inherits the compile settings).
    _, acc_eval = quantized.evaluate(x_test, y_test, verbose=0)
    assert acc_eval == pytest.approx(acc_int8, abs=1e-6)


def test_quantized_model_predicts_like_numpy_and_close_to_float(digits):
    model, quantized, _, (x_test, _) = digits
    x = x_test[:16]
    # NumPy forward pass of the digits CNN over the int8 weights times their scales.
    st, p = quantized.state, quantized.params

    def conv_same(h, name):
        k = np.asarray(st[name]["kernel"], np.float64) / np.asarray(st[name]["kernel_scale"])
        h = np.pad(h, ((0, 0), (1, 1), (1, 1), (0, 0)))
        return np.maximum(_np_conv2d_valid(h, k) + np.asarray(p[name]["bias"]), 0)

    def dense(h, name):
        k = np.asarray(st[name]["kernel"], np.float64) / np.asarray(st[name]["kernel_scale"])
        return h @ k + np.asarray(p[name]["bias"])

    h = conv_same(conv_same(x.astype(np.float64), "conv2d"), "conv2d_1")
    h = h.reshape(len(x), 4, 2, 4, 2, 64).max(axis=(2, 4)).reshape(len(x), -1)
    logits = dense(np.maximum(dense(h, "dense"), 0), "dense_1")
    ref = np.exp(logits - logits.max(-1, keepdims=True))
    ref /= ref.sum(-1, keepdims=True)
    got = quantized.predict(x)
    np.testing.assert_allclose(got, ref, atol=2e-5)
    assert np.abs(got - model.predict(x)).max() < 0.05


def test_the_float_model_is_left_unchanged(digits):
    model, quantized, before, _ = digits
    after = jax.tree.map(np.array, (model.params, model.state))
    assert jax.tree.structure(after) == jax.tree.structure(before)
    assert all(np.array_equal(a, b) and a.dtype == b.dtype
               for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(before)))
    assert type(model.layers[0]) is layers.Conv2D and type(quantized.layers[0]) is QuantizedConv
    assert model.layer_names() == quantized.layer_names()


def test_int8_survives_save_and_load(digits, tmp_path):
    _, quantized, _, (x_test, _) = digits
    path = tmp_path / "q.kerax"
    quantized.save(path, include_optimizer=False)
    with zipfile.ZipFile(path) as zf:
        blob = zf.read("model.weights.safetensors")
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    for name in ("conv2d", "conv2d_1", "dense", "dense_1"):
        assert header[f"{name}/kernel"]["dtype"] == "I8"
        assert header[f"{name}/kernel_scale"]["dtype"] == "F32"
        assert header[f"{name}/bias"]["dtype"] == "F32"
    loaded = kx.load_model(path)
    assert [type(l).__name__ for l in loaded.layers] == [type(l).__name__ for l in quantized.layers]
    assert loaded.state["dense"]["kernel"].dtype == jnp.int8
    np.testing.assert_array_equal(loaded.predict(x_test[:32]), quantized.predict(x_test[:32]))


def test_summary_shows_the_quantized_layers_and_their_bytes(digits):
    _, quantized, _, _ = digits
    lines = []
    quantized.summary(print_fn=lines.append)
    text = lines[0]
    assert "dense (QuantizedDense)" in text and "conv2d_1 (QuantizedConv)" in text
    # Trainable: the 234 float32 biases; non-trainable: int8 kernels + float32 scales.
    kernels = 3 * 3 * 32 + 3 * 3 * 32 * 64 + 1024 * 128 + 128 * 10
    assert "Trainable params: 234 (936.00 B)" in text
    nbytes = kernels + 4 * 234
    assert f"Non-trainable params: {kernels + 234:,} ({nbytes / 1024:.2f} KB)" in text


def test_training_updates_only_the_float_weights():
    """The int8 kernels live in state: fit trains the biases and leaves them bit for bit."""
    model = kx.Sequential([kx.Input(shape=(6, 2)), layers.Conv1D(3, 3, activation="relu"),
                           layers.Flatten(), layers.Dense(2)])
    model.build()
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(16, 6, 2)).astype(np.float32), rng.normal(size=(16, 2)).astype(np.float32)
    q = kx.quantize(model)
    again = kx.quantize(q)  # already quantized: nothing left to replace
    assert quantization_report(again) == quantization_report(q)
    q.compile(optimizer="sgd", loss="mse")
    kernels = jax.tree.map(np.array, q.state)
    bias = np.array(q.params["dense"]["bias"])
    q.fit(x, y, batch_size=8, epochs=1, verbose=0, seed=0)
    assert all(np.array_equal(a, np.asarray(b)) and b.dtype == a.dtype
               for a, b in zip(jax.tree.leaves(kernels), jax.tree.leaves(q.state)))
    assert not np.array_equal(bias, np.asarray(q.params["dense"]["bias"]))
    grads = jax.grad(lambda p: jnp.sum(q.apply(p, q.state, x[:2])[0]))(q.params)
    assert jax.tree.structure(grads) == jax.tree.structure({"conv1d": {"bias": 0}, "dense": {"bias": 0}})


def test_functional_nested_and_shared_layers(tmp_path):
    tokens = kx.Input(shape=(5,), dtype="int32", name="tokens")
    feats = kx.Input(shape=(6,), name="feats")
    shared = layers.Dense(6, activation="tanh", name="shared")
    inner = kx.Sequential([kx.Input(shape=(6,)), layers.Dense(4), layers.BatchNormalization()],
                          name="inner")
    e = layers.GlobalAveragePooling1D()(layers.Embedding(20, 6)(tokens))
    h = shared(shared(feats))  # one layer called twice: one set of weights
    out = layers.Dense(3)(layers.Concatenate()([inner(h), e]))
    model = kx.Model([tokens, feats], out)
    model.build()
    rng = np.random.default_rng(4)
    x = [rng.integers(0, 20, size=(8, 5)).astype(np.int32), rng.normal(size=(8, 6)).astype(np.float32)]
    lines = []
    q = kx.quantize(model, verbose=True, print_fn=lines.append)
    assert lines == [
        "quantize: int8 weights in 4 layers: shared (Dense), inner/dense (Dense), "
        "embedding (Embedding), dense (Dense)\n"
        "quantize: float32 weights kept in 1 layer: inner/batch_normalization (BatchNormalization)"
    ]
    assert q.state["shared"]["kernel"].dtype == jnp.int8
    assert q.state["inner"]["dense"]["kernel"].dtype == jnp.int8
    assert q.params["inner"]["batch_normalization"]["gamma"].dtype == jnp.float32
    assert "kernel" not in q.params["shared"]
    # NumPy reference of the whole graph over the dequantized weights.
    st, p = q.state, q.params
    deq = lambda s, name: np.asarray(s[name], np.float64) / np.asarray(s[name + "_scale"])
    hh = x[1].astype(np.float64)
    for _ in range(2):
        hh = np.tanh(hh @ deq(st["shared"], "kernel") + np.asarray(p["shared"]["bias"]))
    d = hh @ deq(st["inner"]["dense"], "kernel") + np.asarray(p["inner"]["dense"]["bias"])
    bn_p, bn_s = p["inner"]["batch_normalization"], st["inner"]["batch_normalization"]
    d = ((d - np.asarray(bn_s["moving_mean"])) / np.sqrt(np.asarray(bn_s["moving_variance"]) + 1e-3)
         * np.asarray(bn_p["gamma"]) + np.asarray(bn_p["beta"]))
    emb = st["embedding"]
    table = np.asarray(emb["embeddings"], np.float64) / np.asarray(emb["embeddings_scale"])[:, None]
    e_ref = table[x[0]].mean(axis=1)
    ref = np.concatenate([d, e_ref], -1) @ deq(st["dense"], "kernel") + np.asarray(p["dense"]["bias"])
    got = q.predict(x)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    assert np.abs(got - model.predict(x)).max() < 0.05
    q.save(tmp_path / "f.kerax")
    loaded = kx.load_model(tmp_path / "f.kerax")
    np.testing.assert_array_equal(loaded.predict(x), got)
    assert quantization_report(loaded) == quantization_report(q)


def test_layer_with_input_shape_keeps_declaring_it():
    model = kx.Sequential([layers.Dense(3, input_shape=(4,)), layers.Dense(2)])
    model.build()
    q = kx.quantize(model)
    assert q.core.declared_input_shape == (None, 4)
    x = np.ones((2, 4), np.float32)
    assert np.abs(q.predict(x) - model.predict(x)).max() < 0.05


# -- errors ------------------------------------------------------------------------------------


def test_unknown_mode_lists_the_valid_ones():
    model = kx.Sequential([kx.Input(shape=(3,)), layers.Dense(2)])
    model.build()
    with pytest.raises(errors.ConfigError, match=r"unknown mode 'int4'; valid modes: \['int8'\]"):
        kx.quantize(model, mode="int4")


def test_unbuilt_model_is_refused():
    model = kx.Sequential([kx.Input(shape=(3,)), layers.Dense(2)], name="fresh")
    with pytest.raises(errors.NotBuiltError, match=r"model 'fresh' has no weights yet; .*fit, build or load"):
        kx.quantize(model)
    assert not model.built  # quantize did not build it with random weights


def test_a_layer_is_not_a_model():
    with pytest.raises(TypeError, match="quantize expects a kx.Model or kx.Sequential; received Dense"):
        kx.quantize(layers.Dense(2))


def test_sequential_listing_a_layer_twice_is_refused():
    d = layers.Dense(3)
    model = kx.Sequential([kx.Input(shape=(3,)), d, d], name="twice")
    model.build()
    with pytest.raises(errors.ConfigError, match=r"Sequential 'twice' lists one layer object more than once"):
        kx.quantize(model)


def test_wrapping_an_unsupported_layer_is_refused():
    with pytest.raises(errors.ConfigError, match=r"layer= must be a float Dense layer to quantize; "
                                                 r"received Conv2D"):
        QuantizedDense(layer=layers.Conv2D(2, 3))
    with pytest.raises(errors.ConfigError, match=r"layer= must be a float Embedding layer to "
                                                 r"quantize; received None"):
        QuantizedEmbedding()


def test_quantize_weights_names_a_missing_weight():
    qd = QuantizedDense(layer=layers.Dense(2), name="q")
    with pytest.raises(errors.WeightsError, match=r"expected the float weight 'kernel' of Dense "
                                                  r"to quantize; received weights \['bias'\]"):
        qd.quantize_weights({"bias": jnp.zeros(2)}, {})


def test_bfloat16_layer_dequantizes_to_its_own_dtype():
    qd = QuantizedDense(layer=layers.Dense(3, dtype="bfloat16"))
    x = jnp.asarray(np.random.default_rng(6).normal(size=(2, 4)), jnp.bfloat16)
    params, state = _init(qd, x)
    assert state["kernel"].dtype == jnp.int8 and state["kernel_scale"].dtype == jnp.float32
    assert params["bias"].dtype == jnp.bfloat16
    y, _ = qd.apply(params, state, x)
    assert y.dtype == jnp.bfloat16
    k = np.asarray(state["kernel"], np.float64) / np.asarray(state["kernel_scale"])
    ref = np.asarray(x, np.float64) @ k
    np.testing.assert_allclose(np.asarray(y, np.float64), ref, rtol=0.05, atol=0.05)


def test_a_file_wrapping_the_wrong_layer_is_refused(tmp_path):
    model = kx.Sequential([kx.Input(shape=(3,)), layers.Dense(2)])
    model.build()
    kx.quantize(model).save(tmp_path / "q.kerax")
    with zipfile.ZipFile(tmp_path / "q.kerax") as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    config = json.loads(members["config.json"])
    entry = config["config"]["layers"][0]
    assert entry["class_name"] == "QuantizedDense"
    entry["config"]["layer"] = {"class_name": "Conv2D", "config": {"filters": 2, "kernel_size": 3}}
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(tmp_path / "bad.kerax", "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    with pytest.raises(errors.ConfigError, match=r"layer= must be a float Dense layer to quantize; "
                                                 r"received Conv2D"):
        kx.load_model(tmp_path / "bad.kerax")


def test_a_mixed_precision_model_quantizes_and_keeps_its_policy():
    model = kx.Sequential([kx.Input(shape=(6,)), layers.Dense(8, activation="relu"),
                           layers.Dense(3, activation="softmax")], dtype_policy="mixed_bfloat16")
    model.build()
    q = kx.quantize(model)
    assert q.params["dense"]["bias"].dtype == jnp.float32  # mixed: float32 variables
    x = np.random.default_rng(7).normal(size=(4, 6)).astype(np.float32)
    got = q.predict(x)
    assert got.dtype == np.float32
    # NumPy reference over the dequantized weights, in float64: bfloat16 compute is ~1e-2 off.
    st, p = q.state, q.params
    deq = lambda n: np.asarray(st[n]["kernel"], np.float64) / np.asarray(st[n]["kernel_scale"])
    h = np.maximum(x @ deq("dense") + np.asarray(p["dense"]["bias"]), 0)
    logits = h @ deq("dense_1") + np.asarray(p["dense_1"]["bias"])
    ref = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(got, ref / ref.sum(-1, keepdims=True), atol=2e-2)
