"""Tests for kerax.initializers: shapes, Keras statistics, determinism, configs, errors."""

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kerax import initializers as I
from kerax.errors import ConfigError, DTypeError, ShapeError, UnknownNameError

KEY = jax.random.key(0)
KERNEL = (3, 3, 64, 128)  # fan_in 576, fan_out 1152, 737,280 samples
FAN_IN, FAN_OUT = 576, 1152
TRUNC = 0.87962566103423978


def _draw(init, shape=KERNEL, key=KEY, dtype=jnp.float32):
    return np.asarray(init(key, shape, dtype), np.float64)


def _check_moments(x, mean, var, var_rtol=0.015):
    """Sample mean within 6 standard errors; sample variance within var_rtol."""
    assert abs(x.mean() - mean) < 6 * math.sqrt(var / x.size) + 1e-12
    np.testing.assert_allclose(x.var(), var, rtol=var_rtol)


def _check_uniform(x, low, high):
    assert x.min() >= low and x.max() <= high
    span = high - low
    assert x.min() < low + 1e-3 * span and x.max() > high - 1e-3 * span
    _check_moments(x, (low + high) / 2, span**2 / 12)


def _check_truncated(x, mean, stddev):
    """Keras's truncated normal: N(mean, stddev**2) cut at 2 stddev, variance shrunk."""
    assert np.all(np.abs(x - mean) <= 2 * stddev * (1 + 1e-6))
    assert np.abs(x - mean).max() > 1.98 * stddev
    _check_moments(x, mean, (stddev * TRUNC) ** 2)


@pytest.mark.parametrize("name", I.names())
def test_shape_and_dtype(name):
    init = I.get(name)
    out = init(KEY, [4, 5])
    assert out.shape == (4, 5) and out.dtype == jnp.float32
    shape = (4, 5) if name == "identity" else (3, 3, 2, 4)
    for dtype in (jnp.float32, jnp.bfloat16, jnp.float16):
        # Abstract evaluation is how layers build their params; it must give the dtype.
        spec = jax.eval_shape(lambda k, d=dtype: init(k, shape, d), KEY)
        assert spec.shape == shape and spec.dtype == dtype


def test_under_jit_matches_eager():
    inits = [I.HeNormal(), I.GlorotUniform(), I.Orthogonal(), I.Constant(2.0)]
    jitted = jax.jit(lambda k: [i(k, (4, 5)) for i in inits])(KEY)
    for init, out in zip(inits, jitted):
        np.testing.assert_allclose(out, init(KEY, (4, 5)), rtol=1e-5, atol=1e-7)


def test_compute_fans_follows_keras():
    assert I.compute_fans(()) == (1, 1)
    assert I.compute_fans((7,)) == (7, 7)
    assert I.compute_fans((400, 500)) == (400, 500)
    assert I.compute_fans(KERNEL) == (FAN_IN, FAN_OUT)
    assert I.compute_fans((5, 8, 16)) == (40, 80)


def test_constant_zeros_ones():
    np.testing.assert_array_equal(I.Zeros()(KEY, (2, 3)), np.zeros((2, 3)))
    np.testing.assert_array_equal(I.Ones()(None, (2, 3)), np.ones((2, 3)))
    np.testing.assert_array_equal(I.Constant(2.5)(None, (4,)), np.full(4, 2.5))
    out = I.Constant(3)(None, (2,), jnp.int32)
    assert out.dtype == jnp.int32 and out.tolist() == [3, 3]
    assert I.Zeros()(None, (), jnp.int8).dtype == jnp.int8


def test_random_normal():
    _check_moments(_draw(I.RandomNormal()), 0.0, 0.05**2)
    x = _draw(I.RandomNormal(mean=1.0, stddev=2.0))
    _check_moments(x, 1.0, 4.0)
    assert np.abs(x - 1.0).max() > 8.0  # not truncated


def test_random_uniform():
    _check_uniform(_draw(I.RandomUniform()), -0.05, 0.05)
    _check_uniform(_draw(I.RandomUniform(minval=2.0, maxval=5.0)), 2.0, 5.0)


def test_truncated_normal_cuts_at_two_stddev():
    _check_truncated(_draw(I.TruncatedNormal()), 0.0, 0.05)
    _check_truncated(_draw(I.TruncatedNormal(mean=1.0, stddev=0.5)), 1.0, 0.5)


# name -> (scale, n, distribution), n from KERNEL's fans as Keras defines each preset.
PRESETS = {
    "glorot_uniform": (1.0, (FAN_IN + FAN_OUT) / 2, "uniform"),
    "glorot_normal": (1.0, (FAN_IN + FAN_OUT) / 2, "truncated_normal"),
    "he_uniform": (2.0, FAN_IN, "uniform"),
    "he_normal": (2.0, FAN_IN, "truncated_normal"),
    "lecun_uniform": (1.0, FAN_IN, "uniform"),
    "lecun_normal": (1.0, FAN_IN, "truncated_normal"),
    "variance_scaling": (1.0, FAN_IN, "truncated_normal"),
}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_variance_scaling_presets_match_keras(name):
    scale, n, distribution = PRESETS[name]
    init = I.get(name)
    assert isinstance(init, I.VarianceScaling)
    assert (init.scale, init.distribution) == (scale, distribution)
    x = _draw(init)
    if distribution == "uniform":
        limit = math.sqrt(3 * scale / n)
        _check_uniform(x, -limit, limit)
    else:
        _check_truncated(x, 0.0, math.sqrt(scale / n) / TRUNC)
    np.testing.assert_allclose(x.var(), scale / n, rtol=0.015)  # the intended variance


@pytest.mark.parametrize(
    "mode, n", [("fan_in", FAN_IN), ("fan_out", FAN_OUT), ("fan_avg", (FAN_IN + FAN_OUT) / 2)]
)
def test_variance_scaling_modes_and_untruncated_normal(mode, n):
    x = _draw(I.VarianceScaling(scale=3.0, mode=mode, distribution="untruncated_normal"))
    _check_moments(x, 0.0, 3.0 / n)
    assert np.abs(x).max() > 4 * math.sqrt(3.0 / n)  # not truncated


def test_variance_scaling_small_ranks_use_keras_fans():
    # Rank 1: fan_in = fan_out = n; the uniform limit sqrt(3 / n) pins the fan down.
    x = _draw(I.VarianceScaling(distribution="uniform"), (4096,))
    limit = math.sqrt(3 / 4096)
    assert np.abs(x).max() <= limit and np.abs(x).max() > 0.99 * limit
    # Rank 0: fans are 1, so the limit is sqrt(3 * scale).
    scalar = I.VarianceScaling(scale=4.0, distribution="uniform")(KEY, ())
    assert scalar.shape == () and 0 < abs(float(scalar)) <= math.sqrt(12.0)


def test_variance_scaling_normal_means_truncated_normal():
    assert I.VarianceScaling(distribution="normal").distribution == "truncated_normal"
    assert I.VarianceScaling(distribution="Uniform").distribution == "uniform"


@pytest.mark.parametrize("shape", [(40, 50), (50, 40), (3, 3, 8, 16)])
def test_orthogonal(shape):
    w = _draw(I.Orthogonal(), shape).reshape(-1, shape[-1])
    gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
    np.testing.assert_allclose(gram, np.eye(min(w.shape)), atol=1e-5)


def test_orthogonal_gain():
    w, w2 = _draw(I.Orthogonal(), (3, 3, 8, 16)), _draw(I.Orthogonal(gain=2.0), (3, 3, 8, 16))
    np.testing.assert_allclose(w2, 2 * w, rtol=1e-6, atol=1e-7)


def test_orthogonal_is_keras_sign_fixed_qr():
    # Keras: Q from the QR of a normal draw, columns flipped so that diag(R) > 0.
    a = np.asarray(jax.random.normal(KEY, (50, 40)), np.float64)
    q, r = np.linalg.qr(a)
    expected = q * np.sign(np.diag(r))
    np.testing.assert_allclose(_draw(I.Orthogonal(), (50, 40)), expected, atol=1e-5)
    np.testing.assert_allclose(_draw(I.Orthogonal(), (40, 50)), expected.T, atol=1e-5)


def test_identity():
    np.testing.assert_array_equal(I.Identity()(None, (3, 4)), np.eye(3, 4))
    np.testing.assert_array_equal(I.Identity(gain=0.5)(None, (3, 3)), 0.5 * np.eye(3))


@pytest.mark.parametrize(
    "name", [n for n in I.names() if n not in {"zeros", "ones", "constant", "identity"}]
)
def test_determinism(name):
    init = I.get(name)
    a = init(KEY, (4, 5))
    np.testing.assert_array_equal(a, init(jax.random.key(0), (4, 5)))
    np.testing.assert_array_equal(a, init(jax.random.PRNGKey(0), (4, 5)))  # raw keys too
    assert not np.array_equal(a, init(jax.random.key(1), (4, 5)))


EXAMPLES = [
    I.Zeros(), I.Ones(), I.Constant(value=3.0), I.RandomNormal(mean=1.0, stddev=0.5),
    I.RandomUniform(minval=-1.0, maxval=2.0), I.TruncatedNormal(stddev=0.2),
    I.VarianceScaling(scale=2.0, mode="fan_out", distribution="uniform"),
    I.GlorotUniform(), I.GlorotNormal(), I.HeUniform(), I.HeNormal(), I.LecunUniform(),
    I.LecunNormal(), I.Orthogonal(gain=2.0), I.Identity(gain=0.5),
]


@pytest.mark.parametrize("init", EXAMPLES, ids=lambda i: type(i).__name__)
def test_config_round_trip(init):
    config = I.serialize(init)
    assert config["class_name"] == type(init).__name__
    restored = I.get(json.loads(json.dumps(config)))
    assert restored == init and type(restored) is type(init)
    assert restored.get_config() == init.get_config()
    assert type(init).from_config(init.get_config()) == init
    hash(init)  # frozen dataclasses: usable as fields of frozen layers
    np.testing.assert_array_equal(restored(KEY, (4, 5)), init(KEY, (4, 5)))


def test_presets_have_fixed_fields_and_empty_config():
    assert I.GlorotUniform().get_config() == {}
    assert I.HeNormal() == I.HeNormal() and I.HeNormal() != I.VarianceScaling(2.0)
    with pytest.raises(TypeError):
        I.GlorotUniform(scale=2.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        I.RandomNormal().stddev = 1.0


def test_get_accepts_names_classes_instances_dicts_and_callables():
    assert I.get(None) is None
    assert I.get("glorot_uniform") == I.GlorotUniform() == I.get("GlorotUniform")
    assert I.get("normal") == I.RandomNormal() and I.get("uniform") == I.RandomUniform()
    assert I.get("zero") == I.Zeros() and I.get("one") == I.Ones()
    assert I.get(I.HeNormal) == I.HeNormal()
    init = I.Orthogonal(gain=3.0)
    assert I.get(init) is init
    fn = lambda key, shape, dtype=jnp.float32: jnp.zeros(shape, dtype)  # noqa: E731
    assert I.get(fn) is fn
    keras_style = {"module": "keras.initializers", "class_name": "GlorotUniform",
                   "config": {"seed": None}, "registered_name": None}
    assert I.get(keras_style) == I.GlorotUniform()
    snake = {"class_name": "random_normal", "config": {"stddev": 1.0}}
    assert I.get(snake) == I.RandomNormal(stddev=1.0)
    assert I.get({"class_name": "Zeros"}) == I.Zeros()
    assert I.serialize("he_uniform") == {"class_name": "HeUniform", "config": {}}
    assert I.serialize(None) is None


def test_name_table_is_immutable():
    with pytest.raises(TypeError):
        I._BY_NAME["os"] = object  # noqa: SLF001


# --- errors ---------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    ({"mode": "bad"}, r"mode to be one of 'fan_in', 'fan_out', 'fan_avg'; received mode='bad'"),
    ({"distribution": "cauchy"}, r"distribution to be one of 'truncated_normal', "
     r"'untruncated_normal', 'uniform'; received distribution='cauchy'"),
    ({"scale": 0.0}, r"VarianceScaling expected scale > 0; received scale=0.0"),
    ({"scale": -1}, r"expected scale > 0; received scale=-1.0"),
    ({"scale": "2"}, r"scale to be a finite real number; received scale='2' of type str"),
])
def test_variance_scaling_validates_arguments(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        I.VarianceScaling(**kwargs)


def test_other_constructors_validate_arguments():
    with pytest.raises(ConfigError, match=r"RandomNormal expected stddev >= 0; received stddev=-1"):
        I.RandomNormal(stddev=-1.0)
    with pytest.raises(ConfigError, match=r"TruncatedNormal expected mean to be a finite real"):
        I.TruncatedNormal(mean=float("nan"))
    with pytest.raises(ConfigError, match=r"minval <= maxval; received minval=1.0, maxval=0.0"):
        I.RandomUniform(minval=1.0, maxval=0.0)
    with pytest.raises(ConfigError, match=r"Constant expected value to be a finite real number; "
                       r"received value=True of type bool"):
        I.Constant(True)


def test_unknown_names_list_valid_ones():
    with pytest.raises(UnknownNameError, match=r"Unknown initializer 'glorot_unifrom'\. "
                       r"Did you mean 'glorot_uniform'\?"):
        I.get("glorot_unifrom")
    with pytest.raises(UnknownNameError, match=r"Valid initializer names: .*he_normal.*orthogonal"):
        I.get({"class_name": "os.system", "config": {}})


@pytest.mark.parametrize("bad, match", [
    (3, r"received initializer=3 of type int"),
    (dict, r"received initializer=<class 'dict'> of type type"),
    ({"config": {}}, r"Expected an initializer config \{'class_name': str, 'config': dict\}"),
    ({"class_name": "Zeros", "code": "x"}, r"received \{'class_name': 'Zeros', 'code': 'x'\}"),
    ({"class_name": "RandomNormal", "config": {"sdtdev": 1}},
     r"RandomNormal expected config keys among \['mean', 'stddev'\]; "
     r"received unknown key\(s\) \['sdtdev'\]"),
    ({"class_name": "HeNormal", "config": {"scale": 1}}, r"HeNormal expected an empty config"),
    ({"class_name": "Zeros", "config": [1]},
     r"Zeros.from_config expected a dict; received config=\[1\]"),
])
def test_get_rejects_malformed_identifiers(bad, match):
    with pytest.raises(ConfigError, match=match):
        I.get(bad)


def test_serialize_refuses_plain_callables_and_unknown_classes():
    with pytest.raises(ConfigError, match=r"only kerax's built-in initializers can be serialized"):
        I.serialize(lambda key, shape, dtype: jnp.zeros(shape, dtype))

    @dataclasses.dataclass(frozen=True)
    class Custom(I.Initializer):
        def _draw(self, key, shape, dtype):
            return jnp.zeros(shape, dtype)

    assert Custom()(KEY, (2,)).shape == (2,)
    with pytest.raises(ConfigError, match=r"Cannot serialize initializer=.*Custom"):
        I.serialize(Custom())


def test_call_validates_key_shape_and_dtype():
    with pytest.raises(DTypeError, match=r"GlorotUniform expected a JAX PRNG key such as "
                       r"jax.random.key\(0\); received key=0 of type int"):
        I.GlorotUniform()(0, (2, 2))
    with pytest.raises(ShapeError, match=r"expected shape to be a tuple of non-negative ints .*"
                       r"received shape=\(2, -1\)"):
        I.HeNormal()(KEY, (2, -1))
    with pytest.raises(ShapeError, match=r"received shape=2\.5"):
        I.Zeros()(KEY, 2.5)
    with pytest.raises(DTypeError, match=r"RandomNormal expected a floating dtype such as "
                       r"float32; received dtype=int32"):
        I.RandomNormal()(KEY, (2,), jnp.int32)
    with pytest.raises(ShapeError, match=r"Orthogonal expected a shape of rank >= 2 .*"
                       r"received shape=\(5,\) of rank 1"):
        I.Orthogonal()(KEY, (5,))
    with pytest.raises(ShapeError, match=r"Identity expected a 2-D shape \(rows, cols\); "
                       r"received shape=\(2, 2, 2\) of rank 3"):
        I.Identity()(KEY, (2, 2, 2))


@pytest.mark.parametrize("shape", [(37, 10), (3, 3, 5, 7), (11,)])
def test_draws_equal_jax_random_on_the_requested_shape(shape):
    # Samplers run over the flattened size (cheaper to compile); the values must be those
    # jax.random gives for the shape itself.
    limit = math.sqrt(6.0 / sum(I.compute_fans(shape)))
    np.testing.assert_array_equal(I.GlorotUniform()(KEY, shape), jax.random.uniform(KEY, shape, jnp.float32, -limit, limit))
    np.testing.assert_array_equal(I.RandomUniform(-0.3, 0.2)(KEY, shape), jax.random.uniform(KEY, shape, jnp.float32, -0.3, 0.2))
    np.testing.assert_array_equal(I.TruncatedNormal(stddev=0.5)(KEY, shape),
                                  0.5 * jax.random.truncated_normal(KEY, -2.0, 2.0, shape, jnp.float32))
    np.testing.assert_allclose(I.RandomNormal(stddev=0.5)(KEY, shape), 0.5 * jax.random.normal(KEY, shape), rtol=1e-6)
