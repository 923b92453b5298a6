"""Errors of fit(ensemble=N), ensemble evaluate/predict, ensemble_hyperparams and
kx.vmap_train_step on bad input: the argument, what was expected and what was received,
instead of a raw JAX/NumPy error or silently dropped batches."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest

import kerax as kx
from kerax import errors, layers


def _data(n: int = 32):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32) + (x[:, 2] > 1).astype(np.int32)
    return x, y


def _model(optimizer=None) -> kx.Sequential:
    model = kx.Sequential([layers.Dense(4, activation="relu"), layers.Dense(3)])
    model.compile(optimizer=optimizer or kx.optimizers.Adam(0.01),
                  loss=kx.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


@pytest.fixture(scope="module")
def trained():
    x, y = _data()
    model = _model()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, seed=0, ensemble=2)
    return model, x, y


# -- fit(ensemble=N) arguments (findings 4 and the two plain-fit ones) ----------------------------


@pytest.mark.parametrize("name", ["steps_per_epoch", "validation_steps"])
@pytest.mark.parametrize("value", [0, -1, 1.5])
def test_fit_step_counts_must_be_positive_ints_as_in_plain_fit(name, value):
    x, y = _data()
    want = rf"{name} must be a positive int; received {value}$"
    if name == "steps_per_epoch":  # the same error as plain fit's
        with pytest.raises(errors.DataError, match=want):
            _model().fit(x, y, verbose=0, **{name: value})
    with pytest.raises(errors.DataError, match=want):
        _model().fit(x, y, verbose=0, ensemble=2, validation_split=0.25, **{name: value})


@pytest.mark.parametrize("kwargs, match", [
    (dict(validation_freq=0), r"validation_freq must be a positive int .*received validation_freq=0$"),
    (dict(validation_freq=1.5), r"validation_freq must be a positive int .*received validation_freq=1.5$"),
    (dict(seed=-1), r"seed must be a non-negative int when shuffling; received seed=-1$"),
    (dict(seed="0"), r"seed must be a whole number; received seed='0'$"),
])
def test_fit_validation_freq_and_seed_errors(kwargs, match):
    x, y = _data()
    with pytest.raises(errors.ConfigError, match=match):
        _model().fit(x, y, verbose=0, ensemble=2, validation_split=0.25, **kwargs)


# -- evaluate and predict on an ensemble (finding 5) ---------------------------------------------


@pytest.mark.parametrize("steps", [0, -1, 1.5])
def test_ensemble_evaluate_and_predict_steps_must_be_positive_ints(trained, steps):
    model, x, y = trained
    with pytest.raises(errors.DataError, match=rf"steps must be a positive int; received {steps}$"):
        model.evaluate(x, y, batch_size=8, steps=steps, verbose=0)
    with pytest.raises(errors.DataError, match=rf"steps must be a positive int; received {steps}$"):
        model.predict(x, batch_size=8, steps=steps)


def test_ensemble_evaluate_with_steps_uses_that_many_batches(trained):
    model, x, y = trained
    two = model.evaluate(x, y, batch_size=8, steps=2, verbose=0, return_dict=True)
    first16 = model.evaluate(x[:16], y[:16], batch_size=8, verbose=0, return_dict=True)
    assert two["loss_member_1"] == pytest.approx(first16["loss_member_1"], rel=1e-6)


# -- ensemble_hyperparams (finding 10) -----------------------------------------------------------


@pytest.mark.parametrize("values", [[[1e-3], 1e-2], {"a": 1e-3, "b": 1e-2}])
def test_malformed_sweep_values_get_the_one_per_member_error(values):
    x, y = _data()
    with pytest.raises(errors.ConfigError, match=r"ensemble_hyperparams\['learning_rate'\] must hold 2 finite "
                                                 r"numbers \(one per member, ensemble=2\); received "):
        _model().fit(x, y, verbose=0, ensemble=2, ensemble_hyperparams={"learning_rate": values})


def test_a_negative_learning_rate_in_a_sweep_is_refused():
    """model.optimizer.learning_rate = -1 is refused; so is the same rate for one member."""
    x, y = _data()
    with pytest.raises(errors.ConfigError, match=r"ensemble_hyperparams\['learning_rate'\] must hold rates >= 0 "
                                                 r".*received \[0.01, -0.01\]"):
        _model().fit(x, y, verbose=0, ensemble=2, ensemble_hyperparams={"learning_rate": [0.01, -0.01]})


def test_sweeping_a_scheduled_rate_says_it_follows_a_schedule():
    x, y = _data()
    model = _model(kx.optimizers.Adam(optax.exponential_decay(1e-2, 10, 0.5)))
    with pytest.raises(errors.ConfigError, match=r"ensemble_hyperparams\['learning_rate'\]: expected a constant "
                                                 r"learning_rate to sweep; received an optimizer whose "
                                                 r"learning_rate follows a schedule"):
        model.fit(x, y, verbose=0, ensemble=2, ensemble_hyperparams={"learning_rate": [1e-3, 1e-2]})


def test_sweeping_a_name_two_transformations_inject_says_it_is_ambiguous():
    x, y = _data()
    tx = optax.multi_transform({"a": kx.optimizers.Adam(1e-3), "b": kx.optimizers.SGD(1e-2)},
                               {"dense": "a", "dense_1": "b"})
    with pytest.raises(errors.ConfigError, match=r"ensemble_hyperparams\['learning_rate'\]: expected one "
                                                 r"transformation of the optimizer to inject 'learning_rate'; "
                                                 r"received an optimizer in which 2 do .*ambiguous"):
        _model(tx).fit(x, y, verbose=0, ensemble=2, ensemble_hyperparams={"learning_rate": [1e-3, 1e-2]})


# -- kx.vmap_train_step (finding 9) --------------------------------------------------------------


@pytest.fixture(scope="module")
def pure():
    """A step, its model and 3 members' stacked train state (nothing compiled yet)."""
    x, y = _data()
    model = kx.Sequential([layers.Dense(3)])
    step = kx.make_train_step(model, loss=kx.losses.SparseCategoricalCrossentropy(from_logits=True))

    def create(key):
        params, state = model.init(key, x[:1])
        return kx.TrainState.create(model, params, state, optax.adam(1e-2), rng=jax.random.fold_in(key, 1))

    keys = jax.random.split(jax.random.key(0), 3)
    return step, create, keys, x, y


@pytest.mark.parametrize("unroll", [False, True])
def test_vmap_train_step_refuses_an_unstacked_train_state(pure, unroll):
    step, create, keys, x, y = pure
    with pytest.raises(errors.ShapeError, match=r"vmap_train_step: ts must be stacked with a leading member axis "
                                                r"\(jax.vmap\(create\)\(keys\)\); received ts.step of shape \(\)"):
        kx.vmap_train_step(step, unroll=unroll)(create(keys[0]), (x[:8], y[:8]))
    with pytest.raises(errors.ConfigError, match="expected ts to be a kx.TrainState .*received ts=dict"):
        kx.vmap_train_step(step, unroll=unroll)({"params": 1}, (x[:8], y[:8]))


@pytest.mark.parametrize("batch, shape", [
    (lambda x, y: (np.stack([x[:8]] * 2), np.stack([y[:8]] * 2)), r"\(2, 8, 6\)"),  # 2 members' batches for 3
    (lambda x, y: (x[:8], y[:8]), r"\(8, 6\)"),  # no member axis at all
])
def test_vmap_train_step_per_member_batches_need_the_member_axis(pure, batch, shape):
    step, create, keys, x, y = pure
    with pytest.raises(errors.ShapeError, match=r"shared_batch=False\): every batch leaf needs a leading axis of "
                                                rf"N=3 members .*received batch\[0\] of shape {shape}"):
        kx.vmap_train_step(step, shared_batch=False)(jax.vmap(create)(keys), batch(x, y))
