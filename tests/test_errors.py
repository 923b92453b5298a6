"""Bad input gets a clear kerax error naming the layer, the expected and received values.

Covers RELIABILITY.md rows A1, A2, A12-A15 (A3/A4 live with the conv tests) and the
construction errors of the core: duplicate names, graph defects, unknown names.
"""

from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kerax as kx
from kerax import errors, layers

KEY = jax.random.key(0)


def _two_input_model():
    a = kx.Input(shape=(4,), name="a")
    b = kx.Input(shape=(2,), name="b")
    out = layers.Dense(1)(layers.concatenate([layers.Dense(3)(a), layers.Dense(3)(b)]))
    model = kx.Model([a, b], out)
    return model, *model.init(KEY, [jnp.zeros((1, 4)), jnp.zeros((1, 2))])


# -- A1, A2: shapes ------------------------------------------------------------------------


def test_a1_dense_wrong_width_names_layer_expected_and_received():
    model = kx.Sequential([layers.Dense(3)])
    model.build((None, 4))
    for run in (lambda x: model(x), lambda x: jax.jit(model.apply)(model.params, model.state, x)):
        with pytest.raises(errors.ShapeError) as info:
            run(np.zeros((2, 5), np.float32))
        msg = str(info.value)
        assert "Layer 'dense' (Dense)" in msg and "(None, 4)" in msg and "(2, 5)" in msg
        assert "Traced" not in msg and "ShapedArray" not in msg


@pytest.mark.parametrize("functional", [False, True])
def test_a1_predict_names_the_callers_shape_not_a_padded_batch(functional):
    """predict pads its batches to batch_size: the error showed (32, 5) for an input of (2, 5)."""
    if functional:
        x = kx.Input((4,), name="x")
        model = kx.Model(x, layers.Dense(3)(x))
    else:
        model = kx.Sequential([kx.Input((4,)), layers.Dense(3)])
    model.build(seed=0)
    with pytest.raises(errors.ShapeError, match=r"expected shape \(None, 4\); received shape \(2, 5\)"):
        model.predict(np.zeros((2, 5), np.float32), verbose=0)


def test_a1_as_written_no_declared_input_predict_and_evaluate_name_the_callers_shape():
    """``Dense(3)`` built for 4 features without an Input: the error comes from the layer
    while a padded 32-row batch is traced; it must still show (2, 5)."""
    model = kx.Sequential([layers.Dense(3)])
    model.build((None, 4))
    pattern = r"Layer 'dense' \(Dense\): expected input shape \(None, 4\).*received input of shape \(2, 5\)"
    with pytest.raises(errors.ShapeError, match=pattern) as info:
        model.predict(np.zeros((2, 5)), verbose=0)
    assert "Traced" not in str(info.value) and info.value.__cause__ is None
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(errors.ShapeError, match=pattern):
        model.evaluate(np.zeros((2, 5)), np.zeros((2, 3)), verbose=0)


def test_a3_a4_a12_a13_through_predict_show_what_the_caller_passed():
    with pytest.raises(errors.ShapeError, match=r"received input of shape \(8, 8, 3\)\. Add a batch axis: x\[None\]"):
        _conv_model(False).predict(np.zeros((8, 8, 3), np.float32), verbose=0)
    with pytest.raises(errors.ShapeError, match=r"expected 3 input channels .*received input of shape \(2, 8, 8, 1\)"):
        _conv_model(False).predict(np.zeros((2, 8, 8, 1), np.float32), verbose=0)
    model, params, state = _two_input_model()
    model.params, model.state = params, state
    with pytest.raises(errors.InputStructureError, match=r"expected 2 inputs \['a', 'b'\]; received 1 array of shape \(5, 4\)"):
        model.predict(np.zeros((5, 4), np.float32), verbose=0)
    with pytest.raises(errors.ShapeError, match=r"input 'a' expected shape \(None, 4\); received shape \(5, 2\)"):
        model.predict([np.zeros((5, 2), np.float32), np.zeros((5, 4), np.float32)], verbose=0)


def test_predict_takes_dict_and_list_inputs_whatever_their_order():
    """Inputs declared b then a: a dict (leaves sorted a, b) and a list both run."""
    b, a = kx.Input((3,), name="b"), kx.Input((4,), name="a")
    model = kx.Model([b, a], layers.Concatenate()([b, a]))
    model.build(seed=0)
    xb, xa = np.ones((2, 3), np.float32), np.full((2, 4), 2.0, np.float32)
    want = np.concatenate([xb, xa], axis=1)
    np.testing.assert_array_equal(model.predict({"b": xb, "a": xa}, verbose=0), want)
    np.testing.assert_array_equal(model.predict([xb, xa], verbose=0), want)
    with pytest.raises(errors.ShapeError, match=r"expected shape \(None, 4\); received shape \(2, 5\)"):
        model.predict([xb, np.ones((2, 5), np.float32)], verbose=0)


def test_dense_declared_input_width_checked_at_init():
    model = kx.Sequential([layers.Dense(3, input_shape=(4,))])
    with pytest.raises(errors.ShapeError, match=r"expected shape \(None, 4\); received shape \(2, 5\)"):
        model.init(KEY, jnp.zeros((2, 5)))


def test_a2_rank_mismatch_against_declared_input():
    x = kx.Input(shape=(4,), name="x")
    model = kx.Model(x, layers.Dense(2)(x))
    params, state = model.init(KEY, jnp.zeros((1, 4)))
    with pytest.raises(errors.ShapeError, match=r"input 'x' expected shape \(None, 4\); received shape \(2, 4, 5\).*rank 2 expected, rank 3"):
        model.apply(params, state, jnp.zeros((2, 4, 5)))


def test_missing_batch_axis_suggests_x_none():
    model = kx.Sequential([layers.Dense(2, input_shape=(4,))])
    with pytest.raises(errors.ShapeError, match=r"batch axis is missing: pass x\[None\]"):
        model(jnp.zeros((4,)))


# -- A12-A15: input structure --------------------------------------------------------------


def test_a12_swapped_inputs_refused_eager_and_jit():
    model, params, state = _two_input_model()
    swapped = [jnp.zeros((3, 2)), jnp.zeros((3, 4))]
    pattern = r"Layer 'functional' \(Model\): input 'a' expected shape \(None, 4\); received shape \(3, 2\)"
    with pytest.raises(errors.ShapeError, match=pattern):
        model.apply(params, state, swapped)
    with pytest.raises(errors.ShapeError, match=pattern):
        jax.jit(model.apply)(params, state, swapped)


@pytest.mark.parametrize("n", [1, 3])
def test_a13_wrong_number_of_inputs(n):
    model, params, state = _two_input_model()
    xs = [jnp.zeros((3, 4))] * n
    with pytest.raises(errors.InputStructureError, match=rf"expected 2 inputs \['a', 'b'\]; received {n} array"):
        model.apply(params, state, xs if n > 1 else xs[0])


def test_a14_unknown_dict_key_refused():
    model, params, state = _two_input_model()
    with pytest.raises(errors.InputStructureError, match=r"unknown \['c'\]"):
        model.apply(params, state, {"a": jnp.zeros((1, 4)), "b": jnp.zeros((1, 2)), "c": jnp.zeros((1, 1))})


def test_a15_missing_dict_key_listed():
    model, params, state = _two_input_model()
    with pytest.raises(errors.InputStructureError, match=r"missing \['b'\]"):
        model.apply(params, state, {"a": jnp.zeros((1, 4))})


def test_dict_declared_inputs_require_a_dict():
    a, b = kx.Input((2,), name="a"), kx.Input((2,), name="b")
    model = kx.Model({"a": a, "b": b}, layers.Add()([a, b]))
    params, state = model.init(KEY, {"a": jnp.zeros((1, 2)), "b": jnp.zeros((1, 2))})
    with pytest.raises(errors.InputStructureError, match=r"as a dict keyed \['a', 'b'\]; received list"):
        model.apply(params, state, [jnp.zeros((1, 2))] * 2)


# -- merge layers --------------------------------------------------------------------------


def test_add_mismatched_shapes_symbolic_and_apply():
    with pytest.raises(errors.ShapeError, match=r"Add: expects inputs of the same shape .* received shapes \['\(None, 3\)', '\(None, 4\)'\]"):
        layers.Add()([kx.Input((3,)), kx.Input((4,))])
    with pytest.raises(errors.ShapeError, match=r"received shapes \['\(2, 3\)', '\(2, 4\)'\]"):
        layers.Add().apply({}, {}, [jnp.zeros((2, 3)), jnp.zeros((2, 4))])


def test_merge_needs_a_list_of_enough_inputs():
    with pytest.raises(errors.InputStructureError, match=r"Subtract: expects exactly 2 inputs; received 3"):
        layers.Subtract().init(KEY, [jnp.zeros((1, 2))] * 3)
    with pytest.raises(errors.InputStructureError, match=r"expects a list of inputs, e.g. Add\(\)\(\[a, b\]\)"):
        layers.Add().init(KEY, jnp.zeros((1, 2)))


def test_concatenate_and_dot_shape_errors():
    with pytest.raises(errors.ShapeError, match="agree except on the concatenation axis"):
        layers.Concatenate(axis=1).init(KEY, [jnp.zeros((2, 3, 4)), jnp.zeros((2, 3, 5))])
    with pytest.raises(errors.ShapeError, match=r"dot product along axes 1 of shapes \(2, 3\) and \(2, 4\)"):
        layers.Dot(axes=1).init(KEY, [jnp.zeros((2, 3)), jnp.zeros((2, 4))])


# -- graphs --------------------------------------------------------------------------------


def test_output_not_depending_on_an_input():
    a, b = kx.Input((2,), name="a"), kx.Input((2,), name="b")
    with pytest.raises(errors.GraphError, match="the outputs do not depend on input 'b'"):
        kx.Model([a, b], layers.Dense(1)(a))


def test_dangling_input():
    a, b = kx.Input((2,), name="a"), kx.Input((2,), name="b")
    with pytest.raises(errors.GraphError, match=r"depend on an Input \(name='b'.*dangling tensor"):
        kx.Model(a, layers.Add()([a, b]))


def test_inputs_must_come_from_input():
    a = kx.Input((2,))
    h = layers.Dense(2)(a)
    with pytest.raises(errors.GraphError, match="model inputs must be tensors made by kx.Input; received a tensor produced by Dense"):
        kx.Model(h, layers.Dense(1)(h))


def _config():
    a = kx.Input((2,), name="a")
    return kx.Model(a, layers.Dense(1, name="d2")(layers.Dense(2, name="d1")(a))).get_config()


def test_cycle_in_config():
    config = _config()
    config["nodes"][0]["inputs"] = {"ref": ["d2", 0, 0]}  # d1 now reads d2, which reads d1
    with pytest.raises(errors.GraphError, match=r"cycle among layers \['d1', 'd2'\]"):
        kx.Model.from_config(config)


def test_dangling_reference_in_config():
    config = _config()
    config["nodes"][1]["inputs"] = {"ref": ["d1", 3, 0]}
    with pytest.raises(errors.GraphError, match="reads call 3 of layer 'd1', which does not exist"):
        kx.Model.from_config(config)


def test_symbolic_operators_point_to_merge_layers():
    a = kx.Input((2,))
    with pytest.raises(TypeError, match=r"use merge layers such as layers.Add\(\)\(\[a, b\]\)"):
        a + a


def test_calling_a_layer_on_arrays_explains_init_apply():
    with pytest.raises(TypeError, match=r"Layers are pure: use `params, state = layer.init\(rng, x\)`"):
        layers.Dense(2)(jnp.zeros((1, 2)))


# -- names ---------------------------------------------------------------------------------


def test_duplicate_names_in_sequential_name_both_layers():
    with pytest.raises(errors.LayerNameError, match=r"two layers are named 'x': Dense\(units=2, name='x'\) and Dense\(units=3, name='x'\)"):
        kx.Sequential([layers.Dense(2, name="x"), layers.Dense(3, name="x")])


def test_duplicate_names_in_functional():
    a = kx.Input((2,))
    with pytest.raises(errors.LayerNameError, match="two layers are named 'h'"):
        kx.Model(a, layers.Dense(1, name="h")(layers.Dense(2, name="h")(a)))


def test_auto_names_skip_user_names():
    model = kx.Sequential([layers.Dense(2, name="dense_1"), layers.Dense(2), layers.Dense(2)])
    assert model.layer_names() == ["dense_1", "dense", "dense_2"]


def test_bad_layer_name():
    with pytest.raises(errors.ConfigError, match=r"name must be a non-empty string without '/'.*received name='a/b'"):
        layers.Dense(2, name="a/b")


# -- hyperparameters and identifiers -------------------------------------------------------


def test_unknown_activation_lists_valid_names():
    with pytest.raises(errors.UnknownNameError, match=r"Unknown activation 'rleu'\. Did you mean 'relu'\?.*gelu.*sigmoid"):
        layers.Dense(2, activation="rleu")


def test_unknown_initializer_lists_valid_names():
    with pytest.raises(errors.UnknownNameError, match=r"Unknown initializer 'glorot'.*glorot_uniform"):
        layers.Dense(2, kernel_initializer="glorot")


@pytest.mark.parametrize("make, pattern", [
    (lambda: layers.Dense(0), r"Dense: units must be a positive integer; received units=0"),
    (lambda: layers.Dropout(1.5), r"Dropout: rate must be a number in \[0, 1\); received rate=1.5"),
    (lambda: layers.Reshape((0, 2)), r"target_shape must have positive dims"),
    (lambda: layers.Permute((1, 3)), r"dims must be a permutation of 1..2"),
    (lambda: layers.Embedding(0, 3), r"input_dim must be a positive integer"),
    (lambda: layers.Lambda(3), r"function must be callable"),
    (lambda: layers.Dot(axes="x"), r"axes must be an int or a pair of ints"),
])
def test_hyperparameters_validated_in_constructor(make, pattern):
    with pytest.raises(errors.ConfigError, match=pattern):
        make()


def test_dropout_training_without_rng():
    with pytest.raises(errors.MissingRNGError, match=r"Layer 'dropout' \(Dropout\): needs a random key when training"):
        kx.Sequential([layers.Dropout(0.5)]).apply({}, {}, jnp.ones((2, 2)), training=True)


def test_reshape_size_mismatch():
    with pytest.raises(errors.ShapeError, match=r"cannot reshape input of shape \(2, 3, 4\) \(12 values per example\) to target_shape \(5,\)"):
        layers.Reshape((5,)).init(KEY, jnp.zeros((2, 3, 4)))


def test_string_input_refused():
    with pytest.raises(errors.DTypeError, match="expected a numeric input"):
        layers.Dense(2).apply({"kernel": jnp.zeros((1, 2)), "bias": jnp.zeros(2)}, {}, np.array([["a"]]))


# -- configs never import --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["os.system", "builtins.eval", "subprocess.Popen", "Layer"])
def test_config_naming_unknown_class_is_refused_without_import(name, monkeypatch):
    calls = []
    monkeypatch.setattr(importlib, "import_module", lambda *a, **k: calls.append(a))
    config = {"name": None, "input_shape": None, "layers": [{"class_name": name, "config": {}}]}
    with pytest.raises(errors.UnsafeContentError, match=rf"unknown layer class '{name}'"):
        kx.Sequential.from_config(config)
    assert calls == []


def test_lambda_config_needs_the_function_in_custom_objects():
    config = layers.Lambda(jnp.tanh).get_config()
    with pytest.raises(errors.UnsafeContentError, match=r"Lambda layer function 'tanh' is Python code"):
        layers.Lambda.from_config(config)
    assert layers.Lambda.from_config(config, custom_objects={"tanh": jnp.tanh}).function is jnp.tanh


def test_unknown_config_key():
    with pytest.raises(errors.ConfigError, match=r"Dense.from_config: unknown config keys \['unit'\]"):
        layers.Dense.from_config({"unit": 3})


# -- A3, A4: convolutions --------------------------------------------------------------------


def _conv_model(declared: bool):
    first = layers.Conv2D(4, 3, input_shape=(8, 8, 3)) if declared else layers.Conv2D(4, 3)
    model = kx.Sequential([first, layers.MaxPooling2D(2), layers.Flatten(), layers.Dense(2)])
    model.build((None, 8, 8, 3))
    return model


@pytest.mark.parametrize("declared", [True, False])
def test_a3_conv_without_batch_axis_suggests_x_none(declared):
    with pytest.raises(errors.ShapeError, match=r"received (input of )?shape \(8, 8, 3\).*x\[None\]"):
        _conv_model(declared)(np.zeros((8, 8, 3), np.float32))


def test_a4_conv_channel_mismatch_names_both_counts():
    with pytest.raises(errors.ShapeError, match=r"Layer 'conv2d' \(Conv2D\): expected 3 input channels .*received input of shape \(2, 8, 8, 1\)"):
        _conv_model(False)(np.zeros((2, 8, 8, 1), np.float32))
    with pytest.raises(errors.ShapeError, match=r"expected shape \(None, 8, 8, 3\); received shape \(2, 8, 8, 1\)"):
        _conv_model(True)(np.zeros((2, 8, 8, 1), np.float32))
