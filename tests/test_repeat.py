"""layers.Repeat (n blocks by one lax.scan, stacked weights, per-block names) and
compile(scan_layers=True). References: plain NumPy / JAX loops over the per-block weights."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

import kerax as kx
from kerax import errors, layers
from kerax.core.config import deserialize
from kerax.core.layer import aux_losses
from kerax.core.rng import derive
from kerax.core.scan import restack, scan_layers, unstack

W, N = 8, 4
KEY = jax.random.key(0)
X = np.random.default_rng(0).normal(size=(5, W)).astype(np.float32)


def residual(name=None, width=W):
    inp = kx.Input((width,))
    return kx.Model(inp, layers.Add()([inp, layers.Dense(width, activation="relu")(inp)]), name=name)


def _close(a, b, rtol=1e-5, atol=1e-6):
    jax.tree.map(lambda u, v: np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=rtol, atol=atol), a, b)


def _np_resnet(ps, x):
    """x + relu(x W + b), block after block, in NumPy."""
    for p in ps:
        x = x + np.maximum(x @ np.asarray(p["kernel"]) + np.asarray(p["bias"]), 0.0)
    return x


def _jax_resnet(ps, x):
    for p in ps:
        x = x + jax.nn.relu(x @ p["kernel"] + p["bias"])
    return x


@pytest.fixture(scope="module")
def res():
    rep = layers.Repeat(residual(), N)
    params, state = rep.init(KEY, X)
    blocks = [jax.tree.map(lambda a: a[i], params["block_*"]["dense"]) for i in range(N)]
    return rep, params, state, blocks


# -- the pure layer ------------------------------------------------------------------------------


def test_params_are_stacked_and_init_equals_separate_inits(res):
    rep, params, state, _ = res
    assert state == {}
    assert jax.tree.map(jnp.shape, params) == {"block_*": {"dense": {"kernel": (N, W, W), "bias": (N, W)}}}
    for i in range(N):  # block i is what a child named block_i of a container would get
        alone, _ = rep.block.init(derive(KEY, f"block_{i}"), X)
        jax.tree.map(lambda a, b: np.testing.assert_array_equal(a[i], b), params["block_*"], alone)
    assert not np.array_equal(params["block_*"]["dense"]["kernel"][0], params["block_*"]["dense"]["kernel"][1])


@pytest.mark.parametrize("remat", [False, True])
def test_outputs_and_grads_equal_the_unrolled_blocks(res, remat):
    rep, params, state, blocks = res
    rep = layers.Repeat(rep.block, N, remat=remat)
    y, new_state = jax.jit(lambda p, x: rep.apply(p, state, x))(params, X)
    _close(y, _np_resnet(blocks, X))
    assert new_state == {}

    def loss_rep(p):
        return jnp.sum(rep.apply(p, state, X)[0] ** 2)

    def loss_ref(ps):
        return jnp.sum(_jax_resnet(ps, X) ** 2)

    g = jax.jit(jax.grad(loss_rep))(params)
    g_ref = jax.grad(loss_ref)(blocks)
    for i in range(N):
        _close(jax.tree.map(lambda a: a[i], g["block_*"]["dense"]), g_ref[i])


def test_remat_puts_a_checkpoint_in_the_program(res):
    rep, params, state, _ = res
    program = lambda r: str(jax.make_jaxpr(jax.grad(lambda p: jnp.sum(r.apply(p, state, X)[0])))(params))
    assert "remat" in program(layers.Repeat(rep.block, N, remat=True)) or "checkpoint" in program(
        layers.Repeat(rep.block, N, remat=True))
    assert "remat" not in program(rep) and "checkpoint" not in program(rep)


def test_vmap_over_examples_and_one_scan_in_the_program(res):
    rep, params, state, blocks = res
    ys = jax.vmap(lambda x: rep.apply(params, state, x[None])[0][0])(X)
    _close(ys, _np_resnet(blocks, X))
    jaxpr = str(jax.make_jaxpr(lambda p, x: rep.apply(p, state, x)[0])(params, X))
    assert jaxpr.count("scan[") == 1 and jaxpr.count("dot_general") == 1  # one block body, not N


def test_block_with_state_batchnorm_matches_unrolled_in_training():
    block = kx.Sequential([layers.Dense(W), layers.BatchNormalization()])
    rep = layers.Repeat(block, 3)
    params, state = rep.init(KEY, X)
    assert jax.tree.map(jnp.shape, state)["block_*"]["batch_normalization"]["moving_mean"] == (3, W)
    y, new_state = rep.apply(params, state, X, training=True)

    def unrolled(p_all):
        h, states = jnp.asarray(X), []
        for i in range(3):
            p = jax.tree.map(lambda a: a[i], p_all)
            s = jax.tree.map(lambda a: a[i], state["block_*"])
            d = p["dense"]
            h = h @ d["kernel"] + d["bias"]
            mean, var = h.mean(0), h.var(0)
            bn, st = p["batch_normalization"], s["batch_normalization"]
            h = (h - mean) / jnp.sqrt(var + 1e-3) * bn["gamma"] + bn["beta"]
            states.append({"moving_mean": st["moving_mean"] * 0.99 + mean * 0.01,
                           "moving_variance": st["moving_variance"] * 0.99 + var * 0.01})
        return h, states

    y_ref, states_ref = unrolled(params["block_*"])
    _close(y, y_ref, rtol=1e-4, atol=1e-5)
    for i in range(3):
        _close(jax.tree.map(lambda a: a[i], new_state["block_*"]["batch_normalization"]), states_ref[i],
               rtol=1e-4, atol=1e-5)
    assert not np.allclose(new_state["block_*"]["batch_normalization"]["moving_mean"],
                           state["block_*"]["batch_normalization"]["moving_mean"])
    g = jax.grad(lambda p: jnp.sum(rep.apply(p, state, X, training=True)[0] ** 3))(params)
    g_ref = jax.grad(lambda p: jnp.sum(unrolled(p)[0] ** 3))(params["block_*"])
    _close(g["block_*"], g_ref, rtol=1e-4, atol=1e-4)


def test_dropout_gets_a_distinct_key_per_block():
    rep = layers.Repeat(layers.Dropout(0.5), 2)
    ones = jnp.ones((4, 64))
    k = jax.random.key(7)
    y, _ = rep.apply({}, {}, ones, rng=k, training=True)
    d = layers.Dropout(0.5)
    m0 = d.apply({}, {}, ones, rng=derive(k, "block_0"), training=True)[0]
    m1 = d.apply({}, {}, ones, rng=derive(k, "block_1"), training=True)[0]
    assert not np.array_equal(m0, m1)
    np.testing.assert_allclose(y, m0 * m1, rtol=1e-6)
    with pytest.raises(errors.MissingRNGError):
        rep.apply({}, {}, ones, training=True)


def test_aux_losses_of_the_blocks_are_summed():
    rep = layers.Repeat(layers.ActivityRegularization(l1=0.1), 3)
    params, state = rep.init(KEY, X)
    _, new_state = rep.apply(params, state, X, training=True)
    assert set(new_state) == set(state) == {"aux_loss"}
    one = layers.ActivityRegularization(l1=0.1).apply({}, {}, X, training=True)[1]["aux_loss"]
    np.testing.assert_allclose(aux_losses(new_state), 3 * one, rtol=1e-5)  # x passes through unchanged


def test_penalty_sums_the_blocks():
    inp = kx.Input((W,))
    block = kx.Model(inp, layers.Dense(W, kernel_regularizer=kx.regularizers.L2(0.5))(inp))
    rep = layers.Repeat(block, 3)
    params, _ = rep.init(KEY, X)
    np.testing.assert_allclose(rep.penalty(params), 0.5 * np.sum(np.asarray(params["block_*"]["dense"]["kernel"]) ** 2),
                               rtol=1e-5)


def test_config_round_trip(res):
    rep = layers.Repeat(residual(), 3, remat=True, name="stack")
    config = json.loads(json.dumps(rep.get_config()))
    assert config["block"]["class_name"] == "Model" and config["n"] == 3 and config["remat"] is True
    clone = layers.Repeat.from_config(config)
    assert clone.get_config() == rep.get_config()
    p, s = rep.init(KEY, X)
    _close(clone.apply(p, s, X)[0], rep.apply(p, s, X)[0])
    nested = deserialize({"class_name": "Repeat", "config": config})
    assert isinstance(nested, layers.Repeat) and isinstance(nested.block, kx.Model)


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, -2, 2.0, True, "3"])
def test_bad_n(n):
    with pytest.raises(errors.ConfigError, match=r"n must be an int >= 1 .*received n="):
        layers.Repeat(layers.Dense(W), n)


def test_block_must_be_a_layer():
    with pytest.raises(errors.ConfigError, match="block must be a kerax layer or model.*received function"):
        layers.Repeat(lambda x: x, 2)


def test_bad_remat():
    with pytest.raises(errors.ConfigError, match="remat must be True or False; received remat='yes'"):
        layers.Repeat(layers.Dense(W), 2, remat="yes")


def test_block_that_changes_the_shape():
    rep = layers.Repeat(layers.Dense(3, name="proj"), 2, name="rep")
    with pytest.raises(errors.ShapeError, match=r"block 'proj' \(Dense\) must map its input.*expected output "
                                                r"shape \(5, 8\).*received \(5, 3\)"):
        rep.init(KEY, X)
    model = kx.Sequential([kx.Input((W,)), rep])
    with pytest.raises(errors.ShapeError, match=r"Layer 'rep' \(Repeat\).*expected output shape"):
        model.build()


def test_params_with_the_wrong_stack_size(res):
    rep, params, state, _ = res
    short = jax.tree.map(lambda a: a[:2], params)
    with pytest.raises(errors.ShapeError, match=rf"params must be stacked on a leading axis of size n={N}"):
        rep.apply(short, state, X)


# -- the held weights: names, files, flat lists ---------------------------------------------------


def _model(name="repeat"):
    return kx.Sequential([kx.Input((W,)), layers.Repeat(residual(), 3, name=name), layers.Dense(2)])


def test_unstack_restack_round_trip_and_nesting():
    tree = {"a": {"b_*": {"k": jnp.arange(12.0).reshape(3, 2, 2)}}, "c": jnp.ones(2)}
    view = unstack(tree)
    assert list(view["a"]) == ["b_0", "b_1", "b_2"]
    np.testing.assert_array_equal(view["a"]["b_2"]["k"], [[8, 9], [10, 11]])
    _close(restack(view, tree), tree)
    nested = {"o_*": {"i_*": {"k": jnp.arange(6.0).reshape(2, 3)}}}
    assert unstack(nested)["o_1"]["i_2"]["k"] == 5.0


def test_get_set_weights_are_per_block_in_keras_order():
    m = _model()
    m.build(seed=0)
    ws = m.get_weights()
    assert [w.shape for w in ws] == [(W, W), (W,)] * 3 + [(W, 2), (2,)]
    stacked = m.params["repeat"]["block_*"]["dense"]
    for i in range(3):
        np.testing.assert_array_equal(ws[2 * i], stacked["kernel"][i])
    new = [np.full(w.shape, i, np.float32) for i, w in enumerate(ws)]
    m.set_weights(new)
    np.testing.assert_array_equal(m.params["repeat"]["block_*"]["dense"]["kernel"][1], new[2])
    np.testing.assert_array_equal(m.params["repeat"]["block_*"]["dense"]["bias"][2], new[5])
    assert m.params["repeat"]["block_*"]["dense"]["kernel"].shape == (3, W, W)
    with pytest.raises(errors.WeightsError, match=r"weight 'repeat/block_0/dense/kernel' expected shape \(8, 8\)"):
        m.set_weights([np.zeros((3, W, W))] + new[1:])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("repeat")
    m = _model()
    m.build(seed=1)
    m.save_weights(d / "w.safetensors")
    m.save(d / "m.kerax")
    return m, d


def test_weights_file_has_per_block_names(saved):
    m, d = saved
    tensors = load_file(str(d / "w.safetensors"))
    assert sorted(tensors) == sorted(
        [f"repeat/block_{i}/dense/{w}" for i in range(3) for w in ("kernel", "bias")] + ["dense/kernel", "dense/bias"])
    np.testing.assert_array_equal(tensors["repeat/block_2/dense/kernel"],
                                  m.params["repeat"]["block_*"]["dense"]["kernel"][2])
    other = _model()
    other.build(seed=5)
    other.load_weights(d / "w.safetensors")
    _close(other.params, m.params, rtol=0, atol=0)


def test_model_file_round_trip(saved):
    m, d = saved
    loaded = kx.load_model(d / "m.kerax")
    assert isinstance(loaded.layers[0], layers.Repeat) and loaded.layers[0].n == 3
    _close(loaded.params, m.params, rtol=0, atol=0)
    np.testing.assert_allclose(loaded.predict(X, verbose=0), m.predict(X, verbose=0), rtol=1e-6)


def test_weights_move_from_the_unrolled_model(tmp_path):
    unrolled = kx.Sequential([kx.Input((W,)), kx.Sequential([residual(f"block_{i}") for i in range(3)], name="repeat"),
                              layers.Dense(2)])
    unrolled.build(seed=2)
    unrolled.save_weights(tmp_path / "u.safetensors")
    m = _model()
    m.build(seed=3)
    m.load_weights(tmp_path / "u.safetensors")
    np.testing.assert_allclose(m.predict(X, verbose=0), unrolled.predict(X, verbose=0), rtol=1e-5, atol=1e-6)


def _unrolled_and_repeat(make_block, head, tail=(), policy=None, n=2):
    """The same stack unrolled (a Sequential of blocks block_0 ..) and as a Repeat, between
    ``head`` and ``tail`` layers, with the unrolled model's weights in both (per-block names:
    set_weights moves them)."""
    def build(mid):
        m = kx.Sequential([*head(), mid, *[make() for make in tail], layers.Dense(1, dtype="float32")],
                          dtype_policy=policy)
        m.build(seed=0)
        return m

    unrolled = build(kx.Sequential([make_block(f"block_{i}") for i in range(n)], name="repeat"))
    rep = build(layers.Repeat(make_block(None), n, name="repeat"))
    rep.set_weights(unrolled.get_weights())
    return unrolled, rep


def _attention_block(name):
    inp = kx.Input((5, 4))
    return kx.Model(inp, layers.Add()([inp, layers.MultiHeadAttention(2, 2)(inp)]), name=name)


@pytest.mark.parametrize("make_block", [lambda name: layers.LSTM(4, return_sequences=True, name=name),
                                        _attention_block], ids=["lstm", "attention"])
def test_a_padding_mask_goes_through_every_copy_and_out(make_block):
    """Embedding(mask_zero=True) before the Repeat: every copy and the LSTM after it see the
    mask, as in the unrolled stack (the Repeat used to drop it, silently)."""
    head = lambda: [kx.Input((5,), dtype="int32"), layers.Embedding(10, 4, mask_zero=True)]
    unrolled, rep = _unrolled_and_repeat(make_block, head, tail=[lambda: layers.LSTM(3)])
    x = np.array([[3, 5, 0, 0, 0], [1, 2, 3, 4, 0]], np.int32)
    want = unrolled.predict(x, verbose=0)
    np.testing.assert_allclose(rep.predict(x, verbose=0), want, rtol=1e-5, atol=1e-7)
    # The mask is in effect: the padded steps' embeddings do not reach the output.
    emb = rep.params["embedding"]["embeddings"]
    rep.set_weights([np.asarray(w) + (np.arange(10)[:, None] == 0) * 5.0 if w.shape == emb.shape else w
                     for w in rep.get_weights()])
    np.testing.assert_allclose(rep.predict(x, verbose=0), want, rtol=1e-5, atol=1e-7)


def test_a_block_that_creates_a_mask_is_refused():
    inp = kx.Input((3, 4))
    block = kx.Model(inp, layers.Masking(0.0)(inp))
    model = kx.Sequential([kx.Input((3, 4)), layers.Repeat(block, 2)])
    with pytest.raises(errors.ShapeError, match=r"'repeat' \(Repeat\): the block .* creates a padding mask "
                                                r"\(shape \(1, 3\)\); .*put the masking layer before the Repeat"):
        model.build(seed=0)


def test_names_ending_like_a_stack_are_refused():
    """'proj_*' would read as a Repeat's stacked weights: get_weights crashed and files lost a row."""
    with pytest.raises(errors.ConfigError, match=r"name must not end in '_\*'.*received name='proj_\*'"):
        layers.Dense(3, name="proj_*")


def test_float32_blocks_in_a_mixed_model_are_not_rounded_between_copies():
    """Blocks that keep their own float32 policy inside a mixed_bfloat16 model run in float32
    unrolled; Repeat and scan_layers used to round the stream to bfloat16 between copies."""
    def block(name, width=W):
        inp = kx.Input((width,))
        return kx.Model(inp, layers.Add()([inp, layers.Dense(width, activation="tanh")(inp)]), name=name,
                        dtype_policy="float32")

    unrolled, rep = _unrolled_and_repeat(block, lambda: [kx.Input((W,))], policy="mixed_bfloat16", n=3)
    reference, _ = _unrolled_and_repeat(block, lambda: [kx.Input((W,))], n=3)
    reference.set_weights(unrolled.get_weights())
    want = reference.predict(X, verbose=0)
    np.testing.assert_allclose(unrolled.predict(X, verbose=0), want, rtol=1e-6)
    np.testing.assert_allclose(rep.predict(X, verbose=0), want, rtol=1e-6)

    pinned = kx.Sequential([kx.Input((W,)), layers.Dense(W)]
                           + [layers.Dense(W, activation="tanh", dtype_policy="float32") for _ in range(3)]
                           + [layers.Dense(1, dtype="float32")], dtype_policy="mixed_bfloat16")
    pinned.build(seed=0)
    scanned = scan_layers(pinned)
    assert scanned.runs == ((1, 4),)
    np.testing.assert_allclose(np.asarray(scanned.apply(pinned.params, pinned.state, X)[0], np.float32),
                               np.asarray(pinned.apply(pinned.params, pinned.state, X)[0], np.float32), rtol=1e-6)


def test_summary_counts_every_block():
    m = _model()
    lines = []
    m.summary(print_fn=lines.append)
    row = next(l for l in lines[0].splitlines() if l.strip().startswith("repeat"))
    assert "(None, 8)" in row and f"{3 * (W * W + W):,}" in row


# -- compile(scan_layers=True) ---------------------------------------------------------------------


def _six(seed=0):
    m = kx.Sequential([kx.Input((16,))] + [layers.Dense(16, activation="relu") for _ in range(6)])
    m.build(seed=seed)
    return m


def test_scan_layers_finds_the_run_and_matches_unrolled():
    m = _six()
    fast = scan_layers(m)
    assert fast.runs == ((0, 6),)
    x = np.random.default_rng(1).normal(size=(4, 16)).astype(np.float32)
    jaxpr = str(jax.make_jaxpr(lambda p: fast.apply(p, {}, x)[0])(m.params))
    assert jaxpr.count("scan[") == 1 and jaxpr.count("dot_general") == 1
    _close(fast.apply(m.params, {}, x)[0], m.apply(m.params, {}, x)[0])
    g = jax.grad(lambda p: jnp.sum(fast.apply(p, {}, x)[0] ** 2))(m.params)
    g_ref = jax.grad(lambda p: jnp.sum(m.apply(p, {}, x)[0] ** 2))(m.params)
    assert jax.tree.structure(g) == jax.tree.structure(m.params)
    _close(g, g_ref)
    # not identical layers: no runs
    mixed = kx.Sequential([kx.Input((16,)), layers.Dense(16), layers.Dense(16, activation="relu")])
    assert scan_layers(mixed) is mixed


def test_scan_layers_scans_the_rest_when_the_first_layer_changes_the_width():
    """Input(8) -> Dense(16) x 5: the first kernel is (8, 16), the others (16, 16); layers
    1-4 are scanned (the whole run used to be left unrolled)."""
    m = kx.Sequential([kx.Input((8,))] + [layers.Dense(16, activation="tanh") for _ in range(5)])
    m.build(seed=0)
    fast = scan_layers(m)
    x = np.random.default_rng(1).normal(size=(3, 8)).astype(np.float32)
    jaxpr = str(jax.make_jaxpr(lambda p: fast.apply(p, {}, x)[0])(m.params))
    assert jaxpr.count("scan[") == 1 and jaxpr.count("dot_general") == 2  # layer 0, then one in the scan
    _close(fast.apply(m.params, {}, x)[0], m.apply(m.params, {}, x)[0])


def test_scan_layers_scans_blocks_with_dropout_in_training():
    """Dropout needs a key: the run is scanned in the training step too, with each block's
    own key, so the output equals the unrolled model's exactly."""
    block = lambda: kx.Sequential([layers.Dense(W, activation="relu"), layers.Dropout(0.5)])
    m = kx.Sequential([kx.Input((W,))] + [block() for _ in range(4)])
    m.build(seed=0)
    fast = scan_layers(m)
    run = lambda model, p: model.apply(p, m.state, X, training=True, rng=jax.random.key(3))[0]
    assert str(jax.make_jaxpr(lambda p: run(fast, p))(m.params)).count("scan[") == 1
    np.testing.assert_array_equal(run(fast, m.params), run(m, m.params))


def test_fit_with_scan_layers_equals_unrolled():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(24, 16)).astype(np.float32), rng.normal(size=(24, 16)).astype(np.float32)
    results = {}
    for scan in (False, True):
        m = _six(seed=4)
        m.compile(optimizer="adam", loss="mse", scan_layers=scan)
        hist = m.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, seed=0)
        results[scan] = (m.get_weights(), hist.history["loss"], m.predict(x, verbose=0), m.evaluate(x, y, verbose=0))
    assert m._compiled.scan_layers is True
    _close(results[True][0], results[False][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(results[True][1], results[False][1], rtol=1e-5)
    _close(results[True][2], results[False][2], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(results[True][3], results[False][3], rtol=1e-5)


def test_scan_layers_must_be_a_bool_and_survives_save(tmp_path):
    m = _six()
    with pytest.raises(errors.ConfigError, match="compile: scan_layers must be True or False; received 'yes'"):
        m.compile(optimizer="adam", loss="mse", scan_layers="yes")
    m.compile(optimizer="adam", loss="mse", scan_layers=True)
    m.save(tmp_path / "m.kerax")
    assert kx.load_model(tmp_path / "m.kerax")._compiled.scan_layers is True


def test_scanned_predict_checks_the_input_shape():
    m = _six()
    m.compile(optimizer="adam", loss="mse", scan_layers=True)
    with pytest.raises(errors.ShapeError, match=r"Layer 'sequential' \(Sequential\).*expected shape \(None, 16\); "
                                                r"received shape \(\d+, 5\)"):
        m.predict(np.zeros((2, 5), np.float32), verbose=0)
