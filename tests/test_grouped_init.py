"""Grouped weight creation (kerax.core.grouped_init): equal leaf layers initialized by one vmap.

Reference: the model's own ``init`` traced plainly (one call per layer, each with its own
key), and ``derive`` one name at a time."""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kerax as kx
from kerax import layers
from kerax.core.grouped_init import init_grouped
from kerax.core.rng import derive, derive_many

KEY = jax.random.key(3)


class CountingDense(layers.Dense):
    """A Dense that counts its init calls by kind of key: plain or batched (under vmap)."""

    calls: ClassVar[dict] = {}  # reset per test

    def init(self, rng, x):
        kind = "batched" if _batched(rng) else "plain"
        CountingDense.calls[kind] = CountingDense.calls.get(kind, 0) + 1
        return super().init(rng, x)


def _batched(rng) -> bool:
    return type(rng).__name__ == "BatchTracer"


def _same(a, b):
    """Bit for bit: vmap over keys draws what each key draws alone."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(lambda u, v: np.testing.assert_array_equal(np.asarray(u), np.asarray(v)), a, b)


def _plain_and_grouped(model):
    spec = model._declared_specs()
    plain = jax.jit(model.init)(KEY, spec)
    grouped = jax.jit(lambda k: init_grouped(model.init, k, spec))(KEY)
    return plain, grouped


def _residual_stack(n, width=6, block=None):
    x = kx.Input((width,))
    h = x
    for _ in range(n):
        z = layers.Dense(2 * width, activation="gelu")(layers.LayerNormalization()(h))
        h = layers.Add()([h, layers.Dense(width)(z)])
    return kx.Model(x, layers.Dense(3)(h))


def test_derive_many_gives_the_keys_derive_gives_one_by_one():
    names = ["dense", "dense_1", "conv2d", "dense"]
    keys = derive_many(KEY, names)
    assert keys.shape == (4,)
    for i, name in enumerate(names):
        np.testing.assert_array_equal(jax.random.key_data(keys[i]), jax.random.key_data(derive(KEY, name)))
    assert derive_many(None, names) is None


def test_deep_residual_stack_grouped_equals_plain_init():
    plain, grouped = _plain_and_grouped(_residual_stack(5))
    _same(plain, grouped)
    # distinct blocks got distinct weights (the keys differ), not five copies of one
    p = grouped[0]
    assert not np.allclose(p["dense"]["kernel"], p["dense_2"]["kernel"])


def test_equal_layers_are_initialized_by_one_vmapped_call():
    CountingDense.calls = {}
    x = kx.Input((4,))
    h = x
    for _ in range(6):
        h = CountingDense(4, activation="relu")(h)
    model = kx.Model(x, CountingDense(2)(h))
    spec = model._declared_specs()
    CountingDense.calls = {}  # building the graph inferred shapes through init
    jax.make_jaxpr(lambda k: init_grouped(model.init, k, spec))(KEY)
    # the first walk calls each of the 7 layers once; then the six Dense(4) run as one vmap
    # (one batched call) and the Dense(2), alike to no other, keeps its first-walk result
    assert CountingDense.calls == {"plain": 7, "batched": 1}


def test_nested_models_shared_layers_and_repeat_group_as_plain_init_does():
    inner = [kx.Sequential([kx.Input((5,)), layers.Dense(5, activation="tanh"), layers.Dense(5)]) for _ in range(3)]
    shared = layers.Dense(5, name="shared")
    x = kx.Input((5,))
    h = shared(x)
    for m in inner:
        h = shared(m(h))
    block_in = kx.Input((5,))
    block = kx.Model(block_in, layers.Add()([block_in, layers.Dense(5)(block_in)]))
    h = layers.Repeat(block, 3)(h)
    model = kx.Model(x, layers.Dense(2)(h))
    plain, grouped = _plain_and_grouped(model)
    _same(plain, grouped)


def test_conv_lstm_and_normalization_stacks_grouped_equal_plain():
    model = kx.Sequential([kx.Input((8, 8, 2))] + [layers.Conv2D(2, 3, padding="same") for _ in range(3)]
                          + [layers.BatchNormalization(), layers.Reshape((8, 16))]
                          + [layers.LSTM(4, return_sequences=True) for _ in range(2)] + [layers.LSTM(4)])
    plain, grouped = _plain_and_grouped(model)
    _same(plain, grouped)


def test_dtype_policy_casts_grouped_weights_as_plain_init():
    model = kx.Sequential([kx.Input((4,))] + [layers.Dense(4) for _ in range(3)], dtype_policy="bfloat16")
    plain, grouped = _plain_and_grouped(model)
    assert {a.dtype for a in jax.tree.leaves(grouped)} == {jnp.dtype("bfloat16")}
    _same(plain, grouped)


def test_layers_differing_only_in_config_are_not_grouped():
    CountingDense.calls = {}
    x = kx.Input((4,))
    h = CountingDense(4, kernel_initializer="zeros")(x)
    h = CountingDense(4, kernel_initializer="ones")(h)
    model = kx.Model(x, h)
    CountingDense.calls = {}
    model.build(seed=0)
    assert CountingDense.calls.get("batched", 0) == 0
    np.testing.assert_array_equal(model.params["counting_dense"]["kernel"], np.zeros((4, 4)))
    np.testing.assert_array_equal(model.params["counting_dense_1"]["kernel"], np.ones((4, 4)))


@pytest.mark.parametrize("seed", [0, 7])
def test_build_uses_grouping_and_gives_plain_inits_weights(seed):
    model = _residual_stack(4)
    model.build(seed=seed)
    ref = jax.jit(model.init)(jax.random.key(seed), model._declared_specs())
    _same(ref, (model.params, model.state))


def test_groups_larger_than_the_byte_bound_draw_in_chunks(monkeypatch):
    from kerax.core import grouped_init

    x = kx.Input((4,))
    h = x
    for _ in range(6):
        h = CountingDense(4)(h)
    model = kx.Model(x, h)
    spec = model._declared_specs()
    plain = jax.jit(model.init)(KEY, spec)
    # each CountingDense(4): kernel 64 + bias 16 bytes; a 170-byte bound draws two at a time
    monkeypatch.setattr(grouped_init, "GROUP_BYTES", 170)
    CountingDense.calls = {}
    grouped = jax.jit(lambda k: init_grouped(model.init, k, spec))(KEY)
    assert CountingDense.calls == {"plain": 6, "batched": 3}
    _same(plain, grouped)


def test_function_layers_are_never_grouped_by_their_function_names():
    # stax closures are all named init_fun: equal configs, different layers
    from jax.example_libraries import stax

    x = kx.Input((4,))
    model = kx.Model(x, [layers.FunctionLayer(*stax.Dense(10))(x), layers.FunctionLayer(*stax.Dense(20))(x)])
    model.build(seed=0)
    shapes = sorted(a.shape for a in jax.tree.leaves(model.params) if a.ndim == 2)
    assert shapes == [(4, 10), (4, 20)]


def test_python_scalar_state_and_rbg_keys_build_as_plain_init():
    class Counter(kx.Layer):
        def init(self, rng, x):
            return {}, {"calls": 0}

        def apply(self, params, state, x, *, rng=None, training=False):
            return x, state

    model = kx.Sequential([kx.Input((3,)), Counter(), Counter()])
    model.build(seed=0)
    assert [int(v["calls"]) for v in model.state.values()] == [0, 0]
    # vmap over rbg keys does not draw what each key draws alone: no grouping there
    stack = _residual_stack(3)
    key = jax.random.key(1, impl="rbg")
    stack.build(seed=key)
    _same(jax.jit(stack.init)(key, stack._declared_specs()), (stack.params, stack.state))
