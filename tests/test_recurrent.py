"""Recurrent layers, cells, Bidirectional, TimeDistributed and Masking: parity with Keras 3
(weights copied by name), masks, initial states, dropout, gradients against finite
differences, the compiled loop's structure, and every error message."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import kerax as kx
from keras_oracle import compare, keras, keras_weights, to_kerax
from kerax import errors
from kerax.layers.core import Dense, Embedding
from kerax.layers.masking import Masking
from kerax.layers.recurrent import GRU, LSTM, RNN, SimpleRNN
from kerax.layers.rnn_cells import GRUCell, LSTMCell, SimpleRNNCell
from kerax.layers.wrappers import Bidirectional, TimeDistributed

KEY = jax.random.key(0)
RNG = np.random.default_rng(0)
X = RNG.normal(size=(2, 5, 3)).astype(np.float32)
MASK = np.array([[1, 1, 1, 0, 0], [0, 1, 0, 1, 1]], bool)  # padding at either end and inside
LAYERS = {"SimpleRNN": SimpleRNN, "LSTM": LSTM, "GRU": GRU}


def _pair(name, units=4, **kw):
    return LAYERS[name](units, **kw), getattr(keras.layers, name)(units, name=name.lower(), **kw)


# -- Keras parity ------------------------------------------------------------------------

FLAGS = [  # (return_sequences, return_state, go_backwards)
    (False, False, False), (True, False, True), (False, True, True), (True, True, False),
]


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("flags", FLAGS, ids=lambda f: "seq%d-state%d-back%d" % f)
def test_layers_match_keras(name, flags):
    rs, st, gb = flags
    compare(*_pair(name, return_sequences=rs, return_state=st, go_backwards=gb), X)


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("go_backwards", [False, True])
def test_masked_steps_match_keras(name, go_backwards):
    # Keras 3: a masked step keeps the states, and its output is the previous output.
    # (backwards without return_sequences: the last output of a masked sequence; backward
    # sequences with masks run in the RNN and Bidirectional tests)
    kx_layer, k_layer = _pair(name, return_sequences=not go_backwards, return_state=True, go_backwards=go_backwards)
    out, _ = compare(kx_layer, k_layer, X, keras_kwargs={"mask": MASK}, kx_kwargs={"mask": MASK})
    if not go_backwards:
        np.testing.assert_array_equal(out[0][0, 3], out[0][0, 2])  # carried through the padding
        np.testing.assert_array_equal(out[0][1, 0], 0.0)  # nothing before the first real step
        assert kx_layer.compute_mask(X, MASK)[0] is MASK
    assert LAYERS[name](4).compute_mask(X, MASK) is None  # the last output has no time axis


@pytest.mark.parametrize("kw", [
    {"reset_after": False}, {"reset_after": False, "use_bias": False}, {"use_bias": False},
    {"activation": "relu", "recurrent_activation": "hard_sigmoid"},
])
def test_gru_variants_match_keras(kw):
    compare(*_pair("GRU", return_sequences=True, **kw), X, keras_kwargs={"mask": MASK}, kx_kwargs={"mask": MASK})


def test_lstm_options_and_inference_dropout_match_keras():
    compare(*_pair("LSTM", unit_forget_bias=False, use_bias=False), X)
    compare(*_pair("LSTM", 3, dropout=0.5, recurrent_dropout=0.5, return_sequences=True), X, training=False)
    compare(*_pair("SimpleRNN", activation="relu", dropout=0.3), X, training=False)


def test_zero_output_for_mask_and_generic_rnn_match_keras():
    kx_layer = RNN(LSTMCell(4), return_sequences=True, zero_output_for_mask=True)
    k_layer = keras.layers.RNN(keras.layers.LSTMCell(4), return_sequences=True, zero_output_for_mask=True)
    out, _ = compare(kx_layer, k_layer, X, keras_kwargs={"mask": MASK}, kx_kwargs={"mask": MASK})
    np.testing.assert_array_equal(out[~MASK], 0.0)
    kx_layer = RNN(GRUCell(4), return_sequences=True, go_backwards=True)
    k_layer = keras.layers.RNN(keras.layers.GRUCell(4), return_sequences=True, go_backwards=True)
    compare(kx_layer, k_layer, X, keras_kwargs={"mask": MASK}, kx_kwargs={"mask": MASK})


@pytest.mark.parametrize("cls, kcls, states", [
    (SimpleRNNCell, "SimpleRNNCell", 1), (LSTMCell, "LSTMCell", 2), (GRUCell, "GRUCell", 1)])
def test_cells_match_keras_one_step(cls, kcls, states):
    x_t, hs = X[:, 0], [RNG.normal(size=(2, 4)).astype(np.float32) for _ in range(states)]
    k_cell = getattr(keras.layers, kcls)(4)
    k_h, k_states = k_cell(x_t, hs)
    cell = cls(4)
    params, _ = to_kerax(*cell.init(KEY, [x_t, *hs]), keras_weights(k_cell))
    (h, new), _ = cell.apply(params, {}, [x_t, *hs])
    np.testing.assert_allclose(h, k_h, rtol=1e-5, atol=1e-6)
    for a, b in zip(new, k_states):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    (h0, _), _ = cell.apply(params, {}, x_t)  # x_t alone: zero states
    (h1, _), _ = cell.apply(params, {}, [x_t, *[np.zeros_like(s) for s in hs]])
    np.testing.assert_array_equal(h0, h1)


def test_initial_state_as_list_input_and_keyword_match_keras():
    h0, c0 = (RNG.normal(size=(2, 4)).astype(np.float32) for _ in range(2))
    kx_layer, k_layer = _pair("LSTM", return_state=True)
    k_out = k_layer(X, initial_state=[h0, c0])
    params, _ = to_kerax(*kx_layer.init(KEY, X), keras_weights(k_layer))
    listed, _ = kx_layer.apply(params, {}, [X, h0, c0])
    keyword, _ = kx_layer.apply(params, {}, X, initial_state=[h0, c0])
    for a, b, c in zip(listed, keyword, k_out):
        np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(a, b)
    gru, k_gru = _pair("GRU")
    k_out = k_gru(X, initial_state=h0)
    params, _ = to_kerax(*gru.init(KEY, [X, h0]), keras_weights(k_gru))
    np.testing.assert_allclose(gru.apply(params, {}, [X, h0])[0], k_out, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
def test_bidirectional_every_merge_mode_matches_keras(merge_mode):
    kx_layer = Bidirectional(LSTM(4, return_sequences=True), merge_mode)
    k_layer = keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=True, name="lstm"), merge_mode)
    compare(kx_layer, k_layer, X, keras_kwargs={"mask": MASK}, kx_kwargs={"mask": MASK})
    params, _ = kx_layer.init(KEY, X)
    assert set(params) == {"forward_lstm", "backward_lstm"}
    mask = kx_layer.compute_mask(X, MASK)
    assert (mask == [MASK, MASK]) if merge_mode is None else (mask is MASK)


def test_bidirectional_states_and_backward_layer_match_keras():
    backward = GRU(3, go_backwards=True, return_state=True, reset_after=False, name="bw")
    kx_layer = Bidirectional(GRU(3, return_state=True), backward_layer=backward)
    k_layer = keras.layers.Bidirectional(
        keras.layers.GRU(3, return_state=True, name="gru"),
        backward_layer=keras.layers.GRU(3, go_backwards=True, return_state=True, reset_after=False, name="bw"))
    out, _ = compare(kx_layer, k_layer, X)
    assert len(out) == 3 and set(kx_layer.init(KEY, X)[0]) == {"forward_gru", "bw"}
    h = [RNG.normal(size=(2, 3)).astype(np.float32) for _ in range(2)]
    params, _ = to_kerax(*kx_layer.init(KEY, X), keras_weights(k_layer))
    y, _ = kx_layer.apply(params, {}, [X, *h])
    for a, b in zip(y, k_layer(X, initial_state=h)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert kx_layer.compute_mask(X, MASK) == [None, None, None]
    lstm = Bidirectional(LSTM(2, return_state=True), None)
    assert len(lstm.apply(*lstm.init(KEY, X), X)[0]) == 6  # [y, y_rev, h, c, h_rev, c_rev]


def test_time_distributed_matches_keras():
    # Keras's path time_distributed/dense/kernel: the inner name is dropped in kerax.
    drop_inner = lambda p: p.split("/", 1)[1]  # noqa: E731
    compare(TimeDistributed(Dense(4, activation="relu")),
            keras.layers.TimeDistributed(keras.layers.Dense(4, activation="relu")), X, rename=drop_inner)
    layer = TimeDistributed(Dense(2))
    assert layer.compute_mask(X, MASK) is MASK
    params, _ = layer.init(KEY, X)
    y, _ = layer.apply(params, {}, X, mask=MASK)
    np.testing.assert_allclose(y[:, 3], X[:, 3] @ params["kernel"] + params["bias"], rtol=1e-5, atol=1e-6)


# -- masks through containers ----------------------------------------------------------------


def test_embedding_mask_zero_reaches_lstm_in_sequential():
    ids = np.array([[1, 2, 0, 0], [3, 0, 4, 5]], np.int32)
    kx_model = kx.Sequential([Embedding(10, 3, mask_zero=True), LSTM(4, return_sequences=True)])
    k_model = keras.Sequential([keras.layers.Embedding(10, 3, mask_zero=True, name="embedding"),
                                keras.layers.LSTM(4, return_sequences=True, name="lstm")], name="sequential")
    out, _ = compare(kx_model, k_model, ids)
    np.testing.assert_array_equal(out[0, 3], out[0, 1])  # padded steps carry the last output
    # The container's mask is the one apply(mask=...) takes, and it changes the result.
    params, state = kx_model.init(KEY, ids)
    through_model, _ = kx_model.apply(params, state, ids)
    emb, _ = Embedding(10, 3).apply(params["embedding"], {}, ids)
    lstm = LSTM(4, return_sequences=True)
    np.testing.assert_array_equal(through_model, lstm.apply(params["lstm"], {}, emb, mask=ids != 0)[0])
    assert not np.allclose(through_model, lstm.apply(params["lstm"], {}, emb)[0], atol=1e-4)


def test_masking_layer_matches_keras_and_feeds_gru():
    x = X.copy()
    x[0, 3:] = 0.0
    x[1, 1] = 0.0
    y, _ = Masking().apply({}, {}, x)
    np.testing.assert_array_equal(y, keras.layers.Masking()(x))
    np.testing.assert_array_equal(Masking().compute_mask(x, None), [[1, 1, 1, 0, 0], [1, 0, 1, 1, 1]])
    padded = np.full((1, 2, 2), 1.5, np.float32)
    np.testing.assert_array_equal(Masking(mask_value=1.5).apply({}, {}, padded)[0], 0.0)
    kx_model = kx.Sequential([Masking(), GRU(4, return_sequences=True)])
    k_model = keras.Sequential([keras.layers.Masking(name="masking"),
                                keras.layers.GRU(4, return_sequences=True, name="gru")], name="sequential")
    compare(kx_model, k_model, x)


# -- dropout, unrolling, a custom cell, regularizers -----------------------------------------------


def test_dropout_uses_one_mask_per_sequence():
    layer = SimpleRNN(3, activation="linear", return_sequences=True, dropout=0.5, recurrent_dropout=0.5,
                      kernel_initializer="identity", recurrent_initializer="zeros")
    x = jnp.ones((4, 6, 3))
    params, _ = layer.init(KEY, x)
    y, _ = layer.apply(params, {}, x, rng=jax.random.key(1), training=True)
    np.testing.assert_array_equal(y, jnp.broadcast_to(y[:, :1], y.shape))  # same at every step
    assert set(np.unique(np.asarray(y))) == {0.0, 2.0} and np.any(y == 0)
    y2, _ = layer.apply(params, {}, x, rng=jax.random.key(2), training=True)
    assert not np.array_equal(y, y2)
    np.testing.assert_array_equal(layer.apply(params, {}, x)[0], x)  # inference: no dropout
    with pytest.raises(errors.MissingRNGError, match="needs a random key when training"):
        layer.apply(params, {}, x, training=True)


def test_unroll_and_custom_cell_give_the_same_outputs():
    layer = LSTM(4, return_sequences=True)
    params, _ = layer.init(KEY, X)
    rolled, _ = layer.apply(params, {}, X, mask=MASK)
    unrolled, _ = LSTM(4, return_sequences=True, unroll=True).apply(params, {}, X, mask=MASK)
    np.testing.assert_allclose(rolled, unrolled, rtol=1e-6, atol=1e-6)

    class MinimalCell(kx.Layer):  # a user's cell, not a kerax one: the generic loop runs it
        units: int = 4

        @property
        def state_size(self):
            return self.units  # an int: one state

        def init(self, rng, x):
            return SimpleRNNCell(self.units).init(rng, x)

        def apply(self, params, state, x, *, rng=None, training=False):
            return SimpleRNNCell(self.units).apply(params, state, x)

    for kw in ({"return_sequences": True, "go_backwards": True}, {"return_state": True}):
        generic, fast = RNN(MinimalCell(), **kw), RNN(SimpleRNNCell(4), **kw)
        params, _ = generic.init(KEY, X)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6),
                     generic.apply(params, {}, X, mask=MASK)[0], fast.apply(params, {}, X, mask=MASK)[0])


def test_regularizers_apply_to_their_weights():
    layer = LSTM(2, kernel_regularizer=kx.regularizers.L2(0.1), recurrent_regularizer=kx.regularizers.L1(0.5))
    params, _ = layer.init(KEY, X)
    expected = 0.1 * jnp.sum(params["kernel"] ** 2) + 0.5 * jnp.sum(jnp.abs(params["recurrent_kernel"]))
    np.testing.assert_allclose(layer.penalty(params), expected, rtol=1e-6)
    bi = Bidirectional(layer)
    np.testing.assert_allclose(bi.penalty({"forward_lstm": params, "backward_lstm": params}), 2 * expected, rtol=1e-6)
    assert float(RNN(GRUCell(2, bias_regularizer="l2")).penalty({"bias": jnp.ones((2, 6))})) > 0


def test_weight_layouts_and_initializers():
    params, _ = LSTM(3).init(KEY, X)
    assert {k: v.shape for k, v in params.items()} == {"kernel": (3, 12), "recurrent_kernel": (3, 12), "bias": (12,)}
    np.testing.assert_array_equal(params["bias"], [0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0])  # unit_forget_bias
    rk = params["recurrent_kernel"]
    np.testing.assert_allclose(rk @ rk.T, np.eye(3), atol=1e-5)  # orthogonal rows
    assert GRU(3).init(KEY, X)[0]["bias"].shape == (2, 9)
    assert GRU(3, reset_after=False).init(KEY, X)[0]["bias"].shape == (9,)
    assert LSTM(3).init(KEY, X)[0]["kernel"].dtype == jnp.float32
    # The layer's weights are its cell's: the same key gives the same weights.
    cell_params, _ = LSTMCell(3).init(KEY, X[:, 0])
    jax.tree.map(np.testing.assert_array_equal, params, cell_params)


# -- gradients and the compiled loop ------------------------------------------------------------------


@pytest.fixture
def x64():
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


@pytest.mark.parametrize("layer", [
    LSTM(2, return_sequences=True, dtype="float64"),
    GRU(2, go_backwards=True, dtype="float64"),
], ids=["lstm", "gru"])
def test_gradients_match_finite_differences(x64, layer):
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 3, 2)))
    mask = jnp.asarray([[True, True, False], [False, True, True]])
    params, _ = layer.init(KEY, x)
    assert all(v.dtype == jnp.float64 for v in params.values())
    f = jax.jit(lambda p, x: layer.apply(p, {}, x, mask=mask)[0])  # compiled once, evaluated often
    check_grads(f, (params, x), order=1, modes=("rev",), atol=1e-6, rtol=1e-6)


def _scans(jaxpr):
    out = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "scan":
            out.append(eqn)
        for value in eqn.params.values():
            sub = getattr(value, "jaxpr", value)
            if hasattr(sub, "eqns"):
                out.extend(_scans(sub))
    return out


def test_sequence_compiles_to_one_scan_whatever_its_length():
    layer = LSTM(8)
    shapes = {}
    for steps in (8, 64):
        x = jnp.zeros((2, steps, 3))
        params, _ = layer.init(KEY, x)
        jaxpr = jax.make_jaxpr(lambda p, x: layer.apply(p, {}, x)[0])(params, x)
        scans = _scans(jaxpr.jaxpr)
        assert len(scans) == 1 and scans[0].params["length"] == steps
        shapes[steps] = len(scans[0].params["jaxpr"].jaxpr.eqns)
        # the input projection is outside the loop (one matmul per gate); the body has one (recurrent) matmul
        assert sum(e.primitive.name == "dot_general" for e in scans[0].params["jaxpr"].jaxpr.eqns) == 1
    assert shapes[8] == shapes[64]


# -- errors ------------------------------------------------------------------------------------


def test_input_errors():
    layer = LSTM(4)
    params, _ = layer.init(KEY, X)
    with pytest.raises(errors.ShapeError, match=r"expected input of shape \(batch, timesteps, features\); "
                                                r"received input of shape \(2, 3\)\. For one sequence"):
        layer.init(KEY, X[:, 0])
    with pytest.raises(errors.ShapeError, match=r"expected input of shape \(batch, timesteps, features\) with 3 "
                                                r"features \(the kernel's first axis\); received input of shape "
                                                r"\(2, 5, 2\)"):
        layer.apply(params, {}, X[..., :2])
    with pytest.raises(errors.ShapeError, match=r"expected a mask of shape \(2, 5\) \(batch, timesteps\)"):
        layer.apply(params, {}, X, mask=MASK[:, :4])
    with pytest.raises(errors.InputStructureError, match=r"expected 2 initial state\(s\) of shapes "
                                                         r"\(batch, 4\), \(batch, 4\); received 1"):
        layer.apply(params, {}, [X, np.zeros((2, 4))])
    with pytest.raises(errors.ShapeError, match=r"expected initial state 1 of shape \(2, 4\) \(batch, units\); "
                                                r"received shape \(2, 3\)"):
        layer.apply(params, {}, X, initial_state=[np.zeros((2, 4)), np.zeros((2, 3))])
    cell = LSTMCell(4)
    cell_params, _ = cell.init(KEY, X[:, 0])
    with pytest.raises(errors.ShapeError, match=r"a cell takes one time step: expected x_t of shape "
                                                r"\(None, 3\); received shape \(2, 5, 3\)\. .* RNN\(LSTMCell"):
        cell.apply(cell_params, {}, X)
    with pytest.raises(errors.ShapeError, match=r"expected input state 0 of shape \(2, 4\)"):
        cell.apply(cell_params, {}, [X[:, 0], np.zeros((2, 5)), np.zeros((2, 4))])
    with pytest.raises(errors.ShapeError, match=r"expected input of rank >= 3 \(batch, timesteps, \.\.\.\)"):
        TimeDistributed(Dense(2)).init(KEY, X[:, 0])
    td = TimeDistributed(Dense(2))
    with pytest.raises(errors.ShapeError, match=r"expected a mask of shape \(2, 5\) \(batch, timesteps\) for "
                                                r"input of shape \(2, 5, 3\); received mask of shape \(5,\)"):
        td.apply(td.init(KEY, X)[0], {}, X, mask=MASK[0])
    bi = Bidirectional(LSTM(2))
    with pytest.raises(errors.InputStructureError, match="an even number of states"):
        bi.init(KEY, [X, np.zeros((2, 2))])
    with pytest.raises(errors.ShapeError, match=r"expected input of rank >= 2"):
        Masking().apply({}, {}, np.zeros(3))


def test_errors_name_the_layer_path_in_a_model():
    model = kx.Sequential([Bidirectional(GRU(2))])
    params, state = model.init(KEY, X)
    with pytest.raises(errors.ShapeError, match=r"bidirectional/forward_gru' \(GRU\): expected input of shape "
                                                r"\(batch, timesteps, features\) with 3 features"):
        model.apply(params, state, X[..., :2])


def test_config_errors():
    with pytest.raises(errors.ConfigError, match=r"units must be a positive integer; received units=0"):
        LSTM(0)
    with pytest.raises(errors.ConfigError, match=r"dropout must be a number in \[0, 1\); received dropout=1.0"):
        GRU(2, dropout=1.0)
    with pytest.raises(errors.ConfigError, match=r"recurrent_dropout must be a number in \[0, 1\)"):
        SimpleRNNCell(2, recurrent_dropout=-0.1)
    with pytest.raises(errors.UnknownNameError, match="Unknown activation"):
        LSTM(2, recurrent_activation="sigmod")
    with pytest.raises(errors.ConfigError, match="stateful=True is not supported"):
        LSTM(2, stateful=True)
    with pytest.raises(errors.ConfigError, match="cell must be a recurrent cell"):
        RNN(Dense(2))
    with pytest.raises(errors.ConfigError, match=r"merge_mode must be one of .*received merge_mode='max'"):
        Bidirectional(LSTM(2), "max")
    with pytest.raises(errors.ConfigError, match="layer must be a recurrent layer"):
        Bidirectional(Dense(2))
    with pytest.raises(errors.ConfigError, match="need different go_backwards values"):
        Bidirectional(LSTM(2, go_backwards=True))
    with pytest.raises(errors.ConfigError, match=r"need the same return_sequences; received False \(forward\) "
                                                 r"and True \(backward\)"):
        Bidirectional(LSTM(2), backward_layer=LSTM(2, go_backwards=True, return_sequences=True))
    with pytest.raises(errors.LayerNameError, match="both named 'forward_x'"):
        Bidirectional(LSTM(2, name="x"), backward_layer=LSTM(2, go_backwards=True, name="forward_x"))
    with pytest.raises(errors.ConfigError, match="layer must be a kerax layer"):
        TimeDistributed(keras.layers.Dense(2))
    with pytest.raises(errors.ConfigError, match="mask_value must be a number"):
        Masking(mask_value="0")


def test_configs_round_trip_nested_layers():
    layer = Bidirectional(RNN(LSTMCell(3, dropout=0.1)), "sum", backward_layer=RNN(GRUCell(3), go_backwards=True))
    clone = Bidirectional.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert isinstance(clone.backward_layer.cell, GRUCell) and clone.layer.cell.dropout == 0.1
    assert isinstance(LSTM(3).cell, LSTMCell) and LSTM(3, dropout=0.2).cell.dropout == 0.2
