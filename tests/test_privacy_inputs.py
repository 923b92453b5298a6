"""Inputs the privacy API refuses, with errors that name the argument, the expected and the
received value: BatchNormalization however nested, per-example gradient inputs, clip
bounds, and NumPy numbers where Python ones are accepted."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import kerax as kx
from kerax import errors, layers

DP = kx.privacy.DPSGD(1.0, 1.0)


class _Blocks(kx.Layer):
    """A custom composite layer holding its sub-layers in a container field."""

    blocks: object = ()

    def _layers(self):
        return jax.tree.leaves(self.blocks, is_leaf=lambda v: isinstance(v, kx.Layer))

    def init(self, rng, x):
        params, state = {}, {}
        for i, layer in enumerate(self._layers()):
            params[f"b{i}"], state[f"b{i}"] = layer.init(jax.random.fold_in(rng, i), x)
            x = jax.eval_shape(lambda p, s, x: layer.apply(p, s, x)[0], params[f"b{i}"], state[f"b{i}"], x)
        return params, state

    def apply(self, params, state, x, *, rng=None, training=False):
        new = {}
        for i, layer in enumerate(self._layers()):
            x, new[f"b{i}"] = layer.apply(params[f"b{i}"], state[f"b{i}"], x, training=training)
        return x, new


# -- finding 5: BatchNormalization nested in a custom layer's fields ------------------------------


@pytest.mark.parametrize("blocks", [
    (layers.Dense(3), layers.BatchNormalization()),
    [layers.Dense(3), layers.BatchNormalization()],
    {"a": layers.Dense(3), "b": layers.BatchNormalization()},
    ((layers.Dense(3),), [layers.BatchNormalization()]),  # nested containers
], ids=["tuple", "list", "dict", "nested"])
def test_batch_normalization_in_a_custom_layer_field_is_refused(blocks):
    model = kx.Sequential([kx.Input((4,)), _Blocks(blocks=blocks, name="block"), layers.Dense(2)])
    with pytest.raises(errors.ConfigError, match=r"cannot train layer 'block/batch_normalization' "
                                                 r"\(BatchNormalization\).*GroupNormalization"):
        model.compile(optimizer=optax.sgd(0.1), loss="mse", dp=DP)
    ok = kx.Sequential([kx.Input((4,)), _Blocks(blocks=(layers.Dense(3), layers.LayerNormalization())),
                        layers.Dense(2)])
    ok.compile(optimizer=optax.sgd(0.1), loss="mse", dp=DP)


# -- findings 6, 11, 12: per_example_grads inputs --------------------------------------------------


@pytest.fixture(scope="module")
def dense():
    model = kx.Sequential([kx.Input((4,)), layers.Dense(3)])
    params, state = model.init(jax.random.key(0), jnp.zeros((1, 4)))
    return model, params, state


@pytest.mark.parametrize("name,y,sw,shape", [
    ("y", np.zeros(6, np.int32), None, r"\(6,\)"),
    ("y", np.zeros(10, np.int32), None, r"\(10,\)"),
    ("sample_weight", np.zeros(8, np.int32), np.ones(3, np.float32), r"\(3,\)"),
])
def test_per_example_grads_refuses_targets_with_another_row_count(dense, name, y, sw, shape):
    model, params, state = dense
    fn = kx.privacy.per_example_grads(model, "sparse_categorical_crossentropy")
    x = np.zeros((8, 4), np.float32)
    with pytest.raises(errors.ShapeError, match=rf"{name} must have one row per example of x; expected 8 rows "
                                                rf"\(x has B=8\); received {name} of shape {shape}"):
        fn(params, state, x, y, sw)


def test_per_example_grads_refuses_a_multi_output_model():
    inp = kx.Input((4,))
    model = kx.Model(inp, [layers.Dense(2)(inp), layers.Dense(3)(inp)])
    params, state = model.init(jax.random.key(0), jnp.zeros((1, 4)))
    fn = kx.privacy.per_example_grads(model, "mse")
    with pytest.raises(errors.ConfigError, match=r"per_example_grads: expected a single-output model; "
                                                 r"received a model with 2 outputs"):
        fn(params, state, np.zeros((4, 4), np.float32), [np.zeros((4, 2), np.float32), np.zeros((4, 3), np.float32)])


def test_per_example_grads_refuses_batch_normalization_as_compile_does():
    model = kx.Sequential([kx.Input((4,)), layers.Dense(3), layers.BatchNormalization(), layers.Dense(2)])
    with pytest.raises(errors.ConfigError) as compiled:
        model.compile(optimizer="sgd", loss="mse", dp=DP)
    with pytest.raises(errors.ConfigError, match=r"'batch_normalization' \(BatchNormalization\)") as direct:
        kx.privacy.per_example_grads(model, "mse")
    assert str(direct.value) == str(compiled.value)


# -- finding 7: clip bounds and weights -------------------------------------------------------------


def _grads():
    return {"a": jnp.arange(12.0).reshape(4, 3), "b": jnp.ones((4, 2))}


@pytest.mark.parametrize("clip", [-1.0, 0, 0.0, math.inf, math.nan, True, "1"])
def test_clipping_helpers_refuse_a_clip_that_is_not_a_finite_positive_number(clip):
    with pytest.raises(errors.ConfigError, match=rf"clip_per_example: l2_norm_clip must be a finite number > 0; "
                                                 rf"received {repr(clip).replace('(', '[(]')}"):
        kx.privacy.clip_per_example(_grads(), clip)
    with pytest.raises(errors.ConfigError, match=r"clip_and_aggregate: l2_norm_clip must be a finite number > 0"):
        kx.privacy.clip_and_aggregate(_grads(), clip)


def test_clip_and_aggregate_checks_its_weights():
    with pytest.raises(errors.ConfigError, match=r"weights must be in \[0, 1\].*received min 0, max 5"):
        kx.privacy.clip_and_aggregate(_grads(), 1.0, jnp.asarray([5.0, 1.0, 0.0, 1.0]))
    with pytest.raises(errors.ShapeError, match=r"weights must have shape \(4,\), one per row of grads; "
                                                r"received shape \(3,\)"):
        kx.privacy.clip_and_aggregate(_grads(), 1.0, jnp.ones(3))
    # Traced values are not checked (the train step's mask): the numbers are those of NumPy.
    got = jax.jit(kx.privacy.clip_and_aggregate)(_grads(), 2.0, jnp.asarray([1.0, 0.0, 1.0, 1.0]))
    flat = np.concatenate([np.arange(12.0).reshape(4, 3), np.ones((4, 2))], axis=1)
    want = (flat * np.minimum(1, 2.0 / np.linalg.norm(flat, axis=1))[:, None])[[0, 2, 3]].sum(0)
    np.testing.assert_allclose(np.concatenate([got["a"], got["b"]]), want, rtol=1e-6)


# -- finding 14: NumPy integers, non-finite noise ----------------------------------------------------


def test_numpy_integers_are_accepted_and_non_finite_noise_refused():
    dp = kx.privacy.DPSGD(1.0, 1.0, microbatches=np.int64(4))
    assert dp.microbatches == 4 and type(dp.microbatches) is int
    assert dp.epsilon(np.int64(1000), np.int32(8), 1) == dp.epsilon(1000, 8, 1)
    assert kx.privacy.DPSGD(1.0, 1.0).epsilon(np.zeros((1000, 2)).shape[0], np.int64(10), 2) > 0
    with pytest.raises(errors.ConfigError, match=r"microbatches must be None or an int >= 1; received True"):
        kx.privacy.DPSGD(1.0, 1.0, microbatches=True)
    with pytest.raises(errors.ConfigError, match=r"batch_size <= n; received n=np.True_, batch_size=1"):
        kx.privacy.DPSGD(1.0, 1.0).epsilon(np.True_, 1, 1)
    for bad in (math.inf, math.nan):
        with pytest.raises(errors.ConfigError, match=rf"compute_epsilon: noise_multiplier must be a finite number "
                                                     rf">= 0; received {bad}"):
            kx.privacy.compute_epsilon(10, bad, 0.1, 1e-5)
