"""Dynamic loss scaling for float16 (kerax.loss_scale): LossScaleOptimizer, the scaled
train step, skipped steps and saving. References: Keras 3's LossScaleOptimizer as an oracle,
float32 models, and float16's range (max 65504, min subnormal 6e-8)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import kerax as kx
from kerax import errors, layers
from kerax.loss_scale import LossScaleOptimizer, LossScaleState, scaled_value_and_grad

F16, F32 = jnp.float16, jnp.float32


# -- float16 and loss scaling -------------------------------------------------------------------


def _f16_regression(policy="mixed_float16"):
    model = kx.Sequential([layers.Dense(4, activation="relu"), layers.Dense(1)], dtype_policy=policy)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(8, 3)).astype(np.float32)
    t = rng.normal(size=(8, 1)).astype(np.float32)
    params, state = model.init(jax.random.key(1), x)
    return model, params, state, x, t


def test_loss_scaling_rescues_float16_gradients_that_underflow():
    model, params, state, x, t = _f16_regression()
    full = _f16_regression(None)[0]

    def loss_fn(m):
        # A tiny loss (as late in training): its cotangents are below float16's smallest
        # subnormal (6e-8), so an unscaled float16 backward pass flushes them to zero.
        return lambda p: (1e-9 * jnp.mean((m.apply(p, state, x)[0] - t) ** 2), None)

    (_, _), unscaled = scaled_value_and_grad(loss_fn(model), params, None)
    (_, _), scaled = scaled_value_and_grad(loss_fn(model), params, jnp.float32(2.0**24))
    (_, _), want = scaled_value_and_grad(loss_fn(full), params, None)
    assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(unscaled))
    for a, b in zip(jax.tree.leaves(scaled), jax.tree.leaves(want)):
        assert a.dtype == F32 and np.linalg.norm(a - b) <= 0.02 * np.linalg.norm(b)


def test_scaled_gradients_that_overflow_are_skipped_and_the_scale_halves():
    """C13: the scale starts far too large (2**40): scaled cotangents overflow float16's
    65504, so the first steps are skipped (params unchanged, scale halved each time) until
    the scale fits; then training proceeds, weights finite."""
    model, params, state, x, t = _f16_regression()
    tx = LossScaleOptimizer(kx.optimizers.SGD(0.05), initial_scale=2.0**40)
    step = kx.make_train_step(model, loss="mse")
    ts = kx.TrainState.create(model, params, state, tx, rng=0)
    scales, moved = [], []
    for _ in range(40):
        before = jax.tree.map(np.asarray, ts.params)
        ts, logs = step(ts, (x, t))
        scales.append(float(ts.opt_state.scale))
        moved.append(any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(ts.params))))
    skipped = moved.index(True)
    assert skipped >= 10  # 2**40 * (gradient ~1) overflows until the scale is below ~65504
    assert scales[:skipped] == [2.0 ** (39 - i) for i in range(skipped)]
    assert all(moved[skipped:]) and scales[skipped:] == [scales[skipped - 1]] * (40 - skipped)
    assert all(np.all(np.isfinite(a)) for a in jax.tree.leaves(ts.params))
    assert logs["loss"] < float(np.mean((model.apply(params, state, x)[0] - t) ** 2))


def test_an_overflowing_float16_batch_breaks_training_without_loss_scaling():
    """C13: a batch whose activations overflow float16 (x = 1e4, so x*x-size products pass
    65504). Plain optax: the weights become NaN. LossScaleOptimizer: the step is skipped, the
    scale halves, the weights stay finite, and the next normal batch trains."""
    model, params, state, x, t = _f16_regression()
    huge = np.full_like(x, 3e4)
    step = kx.make_train_step(model, loss="mse")
    plain = kx.TrainState.create(model, params, state, optax.sgd(0.01), rng=0)
    plain, _ = step(plain, (huge, t))
    assert not all(np.all(np.isfinite(a)) for a in jax.tree.leaves(plain.params))

    ts = kx.TrainState.create(model, params, state, LossScaleOptimizer("sgd", initial_scale=1024.0), rng=0)
    ts, _ = step(ts, (huge, t))
    assert float(ts.opt_state.scale) == 512.0
    for a, b in zip(jax.tree.leaves(ts.params), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)
    ts, _ = step(ts, (x, t))
    assert float(ts.opt_state.scale) == 512.0 and int(ts.opt_state.good_steps) == 1
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(ts.params), jax.tree.leaves(params)))
    assert all(np.all(np.isfinite(a)) for a in jax.tree.leaves(ts.params))


def test_a_skipped_step_keeps_batch_normalization_statistics_finite():
    """C13 with BatchNormalization: the overflowing batch's step is skipped as a whole, so
    the moving statistics keep their values instead of becoming NaN (inference would then
    return NaN for good while the training loss looked healthy)."""
    model = kx.Sequential([layers.Dense(4), layers.BatchNormalization(), layers.Dense(1)],
                          dtype_policy="mixed_float16")
    x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    t = np.ones((8, 1), np.float32)
    params, state = model.init(jax.random.key(0), x)
    huge = np.full_like(x, 1e5)
    huge[::2] *= -1
    step = kx.make_train_step(model, loss="mse")
    ts = kx.TrainState.create(model, params, state, LossScaleOptimizer("sgd", initial_scale=1024.0), rng=0)
    ts, _ = step(ts, (huge, t))
    assert float(ts.opt_state.scale) == 512.0
    for a, b in zip(jax.tree.leaves(ts.state), jax.tree.leaves(state)):
        np.testing.assert_array_equal(a, b)
    ts, _ = step(ts, (x, t))  # a normal batch updates them again
    moving = ts.state["batch_normalization"]["moving_mean"]
    assert np.all(np.isfinite(moving)) and not np.array_equal(moving, state["batch_normalization"]["moving_mean"])
    assert np.all(np.isfinite(model.apply(ts.params, ts.state, x)[0]))


@pytest.mark.parametrize("wrap", [lambda lso: optax.chain(optax.clip_by_global_norm(1.0), lso),
                                  lambda lso: optax.MultiSteps(lso, 1)], ids=["chain", "multisteps"])
def test_a_nested_loss_scale_optimizer_is_refused(wrap):
    """Nested, its scale would never be applied: float16 gradients would underflow to 0 and
    the steps would count as good. The step refuses it and says where it belongs."""
    model, params, state, x, t = _f16_regression()
    ts = kx.TrainState.create(model, params, state, wrap(LossScaleOptimizer(optax.sgd(0.1))), rng=0)
    with pytest.raises(errors.ConfigError, match=r"must be the outermost optimizer.*LossScaleOptimizer\(optax.chain"):
        kx.make_train_step(model, loss="mse")(ts, (x, t))
    # compile wraps a mixed_float16 model's optimizer in one more: the nested one is still found.
    model.compile(optimizer=wrap(LossScaleOptimizer(optax.sgd(0.1))), loss="mse")
    with pytest.raises(errors.ConfigError, match=r"must be the outermost optimizer"):
        model.fit(x, t, epochs=1, verbose=0)


def test_gradients_of_float16_weights_are_unscaled_in_float32():
    """1 / 2**25 is 0 in float16: unscaling in the gradient's dtype zeroed every gradient of
    float16 weights. Unscaled in float32, a large scale gives the gradient a float32 model
    computes (to float16 precision)."""
    model, params, state, x, t = _f16_regression("float16")
    # Gradients near 1e-4: normal float16 numbers, and times 2**25 still below 65504.
    loss = lambda p: (1e-3 * jnp.mean((model.apply(p, state, x)[0].astype(F32) - t) ** 2), None)
    want = jax.grad(lambda p: loss(p)[0])(jax.tree.map(lambda a: a.astype(F32), params))
    top = max(float(jnp.max(jnp.abs(b))) for b in jax.tree.leaves(want))
    for scale in (2.0**10, 2.0**25):
        _, got = scaled_value_and_grad(loss, params, jnp.float32(scale))
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            assert a.dtype == F16
            np.testing.assert_allclose(np.asarray(a, np.float32), b, rtol=0.02, atol=0.01 * top)


def test_scale_grows_after_growth_interval_finite_steps():
    tx = LossScaleOptimizer(optax.sgd(0.1), initial_scale=4.0, growth_interval=3)
    params = {"w": jnp.ones(2)}
    state = tx.init(params)
    history = []
    for g in [1.0, 1.0, 1.0, 1.0, np.inf, 1.0, 1.0, 1.0]:
        updates, state = tx.update({"w": jnp.full(2, g)}, state, params)
        history.append((float(state.scale), int(state.good_steps), round(float(updates["w"][0]), 6)))
    # Keras's rule: double after 3 finite steps in a row (counter reset), halve on a bad one.
    assert history == [(4, 1, -0.1), (4, 2, -0.1), (8, 0, -0.1), (8, 1, -0.1), (4, 0, 0.0),
                       (4, 1, -0.1), (4, 2, -0.1), (8, 0, -0.1)]


def test_loss_scale_sequence_matches_keras():
    """Keras 3's LossScaleOptimizer (stateless_apply takes scaled gradients) as the oracle
    for the scale, the finite-step counter and the variable, step by step."""
    keras = pytest.importorskip("keras")
    grads = [1.0, 1.0, 1.0, 1.0, np.inf, 1.0, 1.0, 1.0, np.nan, 1.0]
    var = keras.Variable(np.ones(2, "float32"))
    kopt = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1), initial_scale=4.0,
                                               dynamic_growth_steps=3)
    kopt.build([var])
    paths = [v.path for v in kopt.variables]
    ov, tv, want = [v.value for v in kopt.variables], [var.value], []
    for g in grads:
        scale = float(dict(zip(paths, ov))[kopt.dynamic_scale.path])
        tv, ov = kopt.stateless_apply(ov, [np.full(2, g * scale, "float32")], tv)
        d = dict(zip(paths, ov))
        want.append((float(d[kopt.dynamic_scale.path]), int(d[kopt.step_counter.path]), float(tv[0][0])))
    tx = LossScaleOptimizer(kx.optimizers.SGD(0.1), initial_scale=4.0, dynamic_growth_steps=3)
    params = {"w": jnp.ones(2)}
    state, got = tx.init(params), []
    for g in grads:
        updates, state = tx.update({"w": jnp.full(2, g)}, state, params)
        params = optax.apply_updates(params, updates)
        got.append((float(state.scale), int(state.good_steps), float(params["w"][0])))
    assert [(a, b) for a, b, _ in got] == [(a, b) for a, b, _ in want]
    np.testing.assert_allclose([c for *_, c in got], [c for *_, c in want], rtol=1e-6)


def test_a_skipped_step_keeps_the_inner_optimizer_state():
    tx = LossScaleOptimizer(kx.optimizers.Adam(1e-2))
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    _, state = tx.update({"w": jnp.ones(3)}, state, params)
    _, bad = tx.update({"w": jnp.array([1.0, np.nan, 1.0])}, state, params)
    for a, b in zip(jax.tree.leaves(bad.inner_state), jax.tree.leaves(state.inner_state)):
        np.testing.assert_array_equal(a, b)
    assert float(bad.scale) == float(state.scale) / 2


def test_compile_wraps_the_optimizer_for_mixed_float16_as_keras_does():
    model = kx.Sequential([layers.Dense(1)], dtype_policy="mixed_float16")
    model.compile("adam", "mse")
    opt = model.optimizer.transformation
    assert isinstance(opt, LossScaleOptimizer) and opt.initial_scale == 2.0**15
    assert opt.dynamic_growth_steps == 2000 and model.optimizer.learning_rate == pytest.approx(1e-3)
    mine = kx.optimizers.LossScaleOptimizer("sgd", initial_scale=8.0)
    model.compile(mine, "mse")
    assert model.optimizer.transformation is mine  # never wrapped twice
    bf = kx.Sequential([layers.Dense(1)], dtype_policy="mixed_bfloat16")
    bf.compile("adam", "mse")
    assert not isinstance(bf.optimizer.transformation, LossScaleOptimizer)
    x = np.random.default_rng(8).normal(size=(32, 3)).astype(np.float32)
    model.compile("adam", "mse")
    model.fit(x, x[:, :1], epochs=1, batch_size=8, verbose=0, seed=0)
    # Keras's default scale overflows this problem's first float16 backward passes: those
    # steps are skipped and halve it (a power of two below 2**15 remains), weights finite.
    scale = float(model._ts.opt_state.scale)
    assert isinstance(model._ts.opt_state, LossScaleState) and np.log2(scale) in range(0, 16)
    assert all(np.all(np.isfinite(a)) for a in model.get_weights())


def test_loss_scale_optimizer_argument_errors():
    with pytest.raises(errors.ConfigError, match=r"initial_scale to be a finite number > 0; received initial_scale=0"):
        LossScaleOptimizer("sgd", initial_scale=0)
    with pytest.raises(errors.ConfigError, match=r"dynamic_growth_steps \(growth_interval\) to be an int >= 1; received 0"):
        LossScaleOptimizer("sgd", growth_interval=0)
    with pytest.raises(errors.ConfigError, match=r"inner_optimizer is already a LossScaleOptimizer"):
        LossScaleOptimizer(LossScaleOptimizer("sgd"))


# -- saving a LossScaleOptimizer ----------------------------------------------------------------


def test_loss_scale_optimizer_config_round_trips_and_reads_keras_config():
    opt = LossScaleOptimizer(kx.optimizers.Adam(2e-3), initial_scale=1024.0, dynamic_growth_steps=7)
    again = kx.optimizers.get(kx.optimizers.serialize(opt))
    assert again == opt and isinstance(again.inner_optimizer, kx.optimizers.Adam)
    keras = pytest.importorskip("keras")
    kopt = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.25, momentum=0.5), initial_scale=64.0,
                                               dynamic_growth_steps=11)
    mine = kx.optimizers.get(keras.saving.serialize_keras_object(kopt))
    assert (mine.initial_scale, mine.dynamic_growth_steps) == (64.0, 11)
    assert mine.inner_optimizer == kx.optimizers.SGD(0.25, momentum=0.5)
    with pytest.raises(errors.ConfigError, match=r"unknown key\(s\) \['scale'\]"):
        kx.optimizers.get({"class_name": "LossScaleOptimizer", "config": {"inner_optimizer": "sgd", "scale": 2.0}})
    with pytest.raises(errors.ConfigError, match="has no config"):
        kx.optimizers.serialize(LossScaleOptimizer(optax.sgd(0.1)))
    with pytest.raises(errors.ConfigError, match="expected a dict with an inner_optimizer; received config=\\{'initial_scale': 2.0\\}"):
        kx.optimizers.get({"class_name": "LossScaleOptimizer", "config": {"initial_scale": 2.0}})


def test_a_mixed_float16_model_file_keeps_its_loss_scale_and_resumes_identically(tmp_path):
    x, y = np.random.default_rng(3).normal(size=(2, 32, 3)).astype(np.float32)
    model = kx.Sequential([kx.Input((3,)), layers.Dense(4, activation="relu"), layers.Dense(3)],
                          dtype_policy="mixed_float16")
    model.compile(LossScaleOptimizer("adam", initial_scale=2.0**20, dynamic_growth_steps=3), "mse")
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, seed=0)  # overflows, halves, then grows
    saved = model._ts.opt_state
    assert float(saved.scale) < 2.0**20  # a state a fresh optimizer would not have
    model.save(tmp_path / "m.kerax")
    loaded = kx.load_model(tmp_path / "m.kerax")
    opt = loaded.optimizer.transformation
    assert isinstance(opt, LossScaleOptimizer) and (opt.initial_scale, opt.dynamic_growth_steps) == (2.0**20, 3)
    for a, b in zip(jax.tree.leaves(loaded._ts.opt_state), jax.tree.leaves(saved)):
        np.testing.assert_array_equal(a, b)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0, seed=1)
    loaded.fit(x, y, epochs=1, batch_size=8, verbose=0, seed=1)
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert float(loaded._ts.opt_state.scale) == float(model._ts.opt_state.scale)
