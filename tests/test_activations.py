"""Tests for kerax.activations: values against NumPy formulas of the Keras definitions."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kerax import activations
from kerax.errors import ConfigError, UnknownNameError

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
_erfc = np.vectorize(math.erfc)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _softplus(x):
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


def _hard_sigmoid(x):
    return np.minimum(np.maximum(x + 3.0, 0.0), 6.0) / 6.0


# Independent float64 NumPy formulas of the Keras 3 definitions.
REFERENCE = {
    "relu": lambda x: np.maximum(x, 0.0),
    "relu6": lambda x: np.minimum(np.maximum(x, 0.0), 6.0),
    "gelu": lambda x: 0.5 * x * _erfc(-x / math.sqrt(2.0)),  # = x * Phi(x), exact
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "silu": lambda x: x * _sigmoid(x),
    "swish": lambda x: x * _sigmoid(x),
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
    "selu": lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0.0))),
    "leaky_relu": lambda x: np.where(x >= 0, x, 0.2 * x),
    "softplus": _softplus,
    "softsign": lambda x: x / (1.0 + np.abs(x)),
    "hard_sigmoid": _hard_sigmoid,
    "hard_silu": lambda x: x * _hard_sigmoid(x),
    "hard_swish": lambda x: x * _hard_sigmoid(x),
    "mish": lambda x: x * np.tanh(_softplus(x)),
    "exponential": np.exp,
    "linear": lambda x: x,
}
ELEMENTWISE = sorted(REFERENCE)
GRID = np.concatenate(
    [[-1000.0, -100.0, -30.0, -10.0], np.linspace(-8.0, 8.0, 161), [10.0, 30.0, 100.0, 1000.0]]
).astype(np.float32)


def _reference(name, x):
    with np.errstate(over="ignore", under="ignore"):
        return REFERENCE[name](np.asarray(x, np.float64)).astype(np.float32)


def test_every_registered_name_has_a_reference():
    assert set(activations.names()) == set(REFERENCE) | {"softmax", "log_softmax"}


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_matches_keras_formula_float32(name):
    out = activations.get(name)(jnp.asarray(GRID))
    assert out.dtype == jnp.float32
    # atol only absorbs deep-tail values below 1e-12 (and denormals XLA:CPU may flush).
    # gelu's tail is ill-conditioned in float32: rounding x / sqrt(2) to float32 is
    # amplified ~x**2 times by erfc, hence 2e-6 for it; everything else is held to 1e-6.
    rtol = 2e-6 if name == "gelu" else 1e-6
    np.testing.assert_allclose(np.asarray(out), _reference(name, GRID), rtol=rtol, atol=1e-12)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_every_activation_keeps_dtype(dtype):
    fns = [activations.get(name) for name in activations.names()]
    x = jax.ShapeDtypeStruct((5, 5), dtype)
    outs = jax.eval_shape(lambda v: [f(v) for f in fns], x)  # exact output dtypes, no compile
    assert [o.dtype for o in outs] == [dtype] * len(fns)


def test_bfloat16_values_close():
    x = np.linspace(-6.0, 6.0, 49).astype(np.float32)
    fns = [activations.get(name) for name in ELEMENTWISE]
    outs = jax.jit(lambda v: [f(v) for f in fns])(jnp.asarray(x, jnp.bfloat16))
    for name, out in zip(ELEMENTWISE, outs):
        assert out.dtype == jnp.bfloat16, name
        np.testing.assert_allclose(
            np.asarray(out, np.float32), _reference(name, x), rtol=3e-2, atol=2e-2, err_msg=name
        )


def test_softmax_and_log_softmax_over_axis():
    x = np.linspace(-50.0, 50.0, 24).reshape(4, 6).astype(np.float32)
    for axis in (-1, 0):
        z = x - x.max(axis=axis, keepdims=True)
        ref = np.exp(z) / np.exp(z).sum(axis=axis, keepdims=True)
        np.testing.assert_allclose(activations.softmax(x, axis=axis), ref, rtol=1e-6, atol=1e-37)
        log_ref = z - np.log(np.exp(z).sum(axis=axis, keepdims=True))
        np.testing.assert_allclose(activations.log_softmax(x, axis=axis), log_ref, rtol=1e-6)


def test_keras_defaults_differ_from_jax_nn():
    x = jnp.asarray(GRID)
    # gelu is exact (jax.nn.gelu defaults to the tanh approximation).
    exact = jax.nn.gelu(x, approximate=False)
    np.testing.assert_array_equal(activations.gelu(x), exact)
    assert not np.allclose(activations.gelu(x), jax.nn.gelu(x), rtol=1e-6, atol=0)
    np.testing.assert_allclose(activations.leaky_relu(jnp.asarray(-10.0)), -2.0)
    xs = np.float64(-1.5)
    tanh_ref = 0.5 * xs * (1 + np.tanh(np.sqrt(2 / np.pi) * (xs + 0.044715 * xs**3)))
    approx = activations.gelu(jnp.float32(-1.5), approximate=True)
    np.testing.assert_allclose(approx, tanh_ref, rtol=1e-6)


def test_arguments_elu_alpha_and_leaky_slope():
    x = jnp.asarray(GRID)
    ref = np.where(GRID > 0, GRID, 0.5 * np.expm1(np.minimum(GRID, 0.0)))
    np.testing.assert_allclose(activations.elu(x, alpha=0.5), ref, rtol=1e-6)
    leaky = activations.leaky_relu(x, negative_slope=0.01)
    np.testing.assert_allclose(leaky, np.where(GRID >= 0, GRID, 0.01 * GRID), rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs", [{"max_value": 6.0}, {"negative_slope": 0.1}, {"threshold": 1.5},
               {"negative_slope": 0.1, "max_value": 4.0, "threshold": 1.0}]
)
def test_relu_keras_options(kwargs):
    slope, cap = kwargs.get("negative_slope", 0.0), kwargs.get("max_value")
    th = kwargs.get("threshold", 0.0)
    x = GRID.astype(np.float64)
    ref = np.where(x > th, x, 0.0)
    if cap is not None:
        ref = np.minimum(ref, cap)
    ref = np.where(x < th, slope * (x - th), ref)
    out = activations.relu(jnp.asarray(GRID), **kwargs)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, ref.astype(np.float32), rtol=1e-6)


def test_grad_is_finite_on_moderate_inputs():
    fns = [activations.get(name) for name in ELEMENTWISE]
    grads = jax.jit(lambda x: [jax.grad(lambda v, f=f: jnp.sum(f(v)))(x) for f in fns])
    for name, g in zip(ELEMENTWISE, grads(jnp.linspace(-20.0, 20.0, 81))):
        assert bool(jnp.all(jnp.isfinite(g))), name


def test_get_resolves_names_callables_and_none():
    assert activations.get("relu") is activations.relu
    assert activations.get("swish") is activations.silu
    assert activations.get("hard_swish") is activations.hard_silu
    assert activations.get(None) is activations.linear
    custom = lambda x: 2 * x  # noqa: E731
    assert activations.get(custom) is custom
    assert activations.get(jax.nn.relu) is jax.nn.relu
    x = jnp.ones(3)
    assert activations.get(None)(x) is x


def test_get_unknown_name_lists_valid_names():
    with pytest.raises(UnknownNameError, match=r"Unknown activation 'rleu'\. Did you mean 'relu'"):
        activations.get("rleu")
    with pytest.raises(UnknownNameError, match=r"Valid activation names: .*gelu.*relu.*swish"):
        activations.get("not_an_activation")


@pytest.mark.parametrize("bad", [3, 1.5, ["relu"], {"name": "relu"}])
def test_get_rejects_other_types(bad):
    with pytest.raises(ConfigError, match=rf"received activation=.* of type {type(bad).__name__}"):
        activations.get(bad)


@pytest.mark.parametrize("name", activations.names())
def test_serialize_round_trip(name):
    fn = activations.get(name)
    restored = activations.get(activations.serialize(fn))
    assert restored is fn or (name, activations.serialize(fn)) in {
        ("swish", "silu"), ("hard_swish", "hard_silu")}
    x = jnp.asarray(GRID)
    np.testing.assert_array_equal(restored(x), fn(x))


def test_serialize_canonical_names_and_jax_equivalents():
    assert activations.serialize(activations.swish) == "silu"
    assert activations.serialize(activations.hard_swish) == "hard_silu"
    assert activations.serialize("swish") == "silu"
    assert activations.serialize(None) == "linear"
    assert activations.serialize(jax.nn.relu) == "relu"
    assert activations.serialize(jnp.tanh) == "tanh"


def test_serialize_custom_callable_is_refused():
    with pytest.raises(ConfigError, match="custom activation functions cannot be serialized"):
        activations.serialize(lambda x: x * 2)
    # jax.nn.gelu approximates by default, unlike Keras's gelu: it must not pass as "gelu".
    with pytest.raises(ConfigError, match="Pass a registered name .*relu"):
        activations.serialize(jax.nn.gelu)


def test_name_table_is_immutable():
    with pytest.raises(TypeError):
        activations._BY_NAME["relu"] = activations.linear  # noqa: SLF001
