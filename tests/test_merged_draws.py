"""Merged threefry hashes (kerax.core.merged_draws): one call per link of the key chains.

Reference: the same function traced plainly under ``jax.jit``, compared bit for bit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kerax as kx
from kerax import initializers, layers
from kerax.core import merged_draws
from kerax.core.merged_draws import merge_draws

KEY = jax.random.key(11)


def _same(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        if jnp.issubdtype(u.dtype, jax.dtypes.prng_key):
            u, v = jax.random.key_data(u), jax.random.key_data(v)
        assert u.dtype == v.dtype and u.shape == v.shape
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


HASHES = {"threefry2x32", "random_bits", "random_split", "random_fold_in"}


def _count(jaxpr) -> int:
    """Threefry hashes run by ``jaxpr``: its hash equations, those of its ``jit`` calls."""
    n = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in HASHES:
            n += 1
        elif eqn.primitive.name == "jit":
            n += _count(eqn.params["jaxpr"].jaxpr)
    return n


def _threefry_calls(fn, *args) -> int:
    return _count(jax.make_jaxpr(fn)(*args).jaxpr)


def _keys_and_draws(k, i):
    """Every kind of hash the merger rewrites, with batched keys and data among them."""
    ks = jax.random.split(k, 4)
    grid = jax.random.split(ks[0], (2, 3))
    return {
        "bits8": jax.random.bits(ks[1], (5,), jnp.uint8),
        "bits16": jax.vmap(jax.vmap(lambda kk: jax.random.bits(kk, (2, 2), jnp.uint16)))(grid),
        "bits32": jax.random.bits(ks[2], (3, 7)),
        "split_grid": grid,
        "split_batched": jax.vmap(lambda kk: jax.random.split(kk, 3))(grid.reshape(-1)),
        "fold_keys": jax.vmap(jax.random.fold_in, (0, None))(jax.random.split(ks[3], 4), i),
        "fold_data": jax.vmap(jax.random.fold_in, (None, 0))(ks[3], jnp.arange(3)),
        "normal": jax.vmap(lambda kk: jax.random.normal(kk, (4, 3)))(jax.random.split(ks[1], 5)),
        "randint": jax.random.randint(ks[2], (6,), 0, 100),
        "permutation": jax.random.permutation(ks[3], 10),
        # inside scan: left to scan, still correct
        "scan": jax.lax.scan(lambda c, kk: (c + jax.random.uniform(kk), None), 0.0, jax.random.split(ks[0], 3))[0],
        # a key made from drawn bits: its hash waits for the first one's
        "key_from_bits": jax.random.uniform(jax.random.wrap_key_data(jax.random.bits(ks[1], (2,))), (3,)),
    }


def test_every_kind_of_hash_gives_what_it_gives_alone():
    plain = jax.jit(_keys_and_draws)(KEY, 7)
    merged = jax.jit(merge_draws(_keys_and_draws))(KEY, 7)
    _same(plain, merged)
    assert _threefry_calls(merge_draws(_keys_and_draws), KEY, 7) < _threefry_calls(_keys_and_draws, KEY, 7)


RANDOM_INITIALIZERS = [n for n in initializers.names() if initializers.get(n).random]


@pytest.mark.parametrize("name", RANDOM_INITIALIZERS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_every_initializer_draws_the_same_values(name, dtype):
    init = initializers.get(name)

    def draw(k):
        k1, k2 = jax.random.split(k)
        return init(k1, (6, 4), dtype), init(k2, (3, 3, 2, 5), dtype)

    _same(jax.jit(draw)(KEY), jax.jit(merge_draws(draw))(KEY))


def test_small_chunks_give_the_same_values(monkeypatch):
    def draw(k):
        batched = jax.vmap(lambda kk: jax.random.normal(kk, (10, 7)))(jax.random.split(k, 5))  # keys (5,)
        return [jax.random.normal(kk, (50, 7)) for kk in jax.random.split(k, 5)] + [batched]

    whole = _threefry_calls(merge_draws(draw), KEY)
    monkeypatch.setattr(merged_draws, "CHUNK_ELEMENTS", 400)  # each draw of 350 alone
    _same(jax.jit(draw)(KEY), jax.jit(merge_draws(draw))(KEY))
    assert _threefry_calls(merge_draws(draw), KEY) == whole + 5


def test_non_threefry_and_non_partitionable_hashes_are_left_alone():
    def draw(k):
        return jax.random.normal(k, (4, 4)), jax.random.split(k, 3)

    rbg = jax.random.key(5, impl="rbg")
    _same(jax.jit(draw)(rbg), jax.jit(merge_draws(draw))(rbg))
    with jax.threefry_partitionable(False):
        _same(jax.jit(draw)(KEY), jax.jit(merge_draws(draw))(KEY))
        assert _threefry_calls(merge_draws(draw), KEY) == _threefry_calls(draw, KEY)


def test_a_function_with_effects_runs_as_written():
    seen = []

    def draw(k):
        jax.debug.callback(lambda: seen.append(1))
        return jax.random.normal(k, (3,))

    _same(jax.jit(draw)(KEY), jax.jit(merge_draws(draw))(KEY))
    jax.effects_barrier()
    assert len(seen) == 2


def _mlp():
    return kx.Sequential([kx.Input((12,)), layers.Dense(16, activation="relu"), layers.Dense(16), layers.Dense(3)])


def _mixed():
    x = kx.Input((5, 4))
    h = layers.LSTM(6, return_sequences=True)(x)
    h = layers.Conv1D(4, 3)(h)
    h = layers.LayerNormalization()(layers.Flatten()(h))
    return kx.Model(x, layers.Dense(2, kernel_initializer="orthogonal")(layers.Dropout(0.1)(h)))


@pytest.mark.parametrize("make", [_mlp, _mixed], ids=["mlp", "mixed"])
def test_build_holds_exactly_the_weights_of_init(make):
    model = make()
    model.build(seed=4)
    params, state = jax.jit(model.init)(jax.random.key(4), model._declared_specs())
    _same((params, state), (model.params, model.state))


def test_a_sequentials_weights_take_one_threefry_per_link_of_its_key_chain():
    """fold in the layer, fold in the weight, draw: three calls for any number of layers."""
    model = _mlp()
    spec = model._declared_specs()
    assert _threefry_calls(merge_draws(lambda k: model.init(k, spec)), KEY) <= 3
    assert _threefry_calls(lambda k: model.init(k, spec), KEY) >= 6


def test_a_fault_in_the_merger_falls_back_to_the_plain_trace(monkeypatch):
    def broken(self, ready):
        raise AttributeError("an equation field this JAX does not have")

    monkeypatch.setattr(merged_draws._Frame, "walk", broken)
    draw = lambda k: jax.random.normal(k, (4,))  # noqa: E731
    _same(jax.jit(draw)(KEY), jax.jit(merge_draws(draw))(KEY))
