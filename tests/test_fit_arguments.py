"""The arguments fit, evaluate and predict check before anything runs (kerax.training.setup's
shared checks, plain and ensemble alike): refused values name the argument and what was
received; values the earlier checks took (NumPy integers, whole float seeds) still work."""

from __future__ import annotations

import numpy as np
import pytest

import kerax as kx
from kerax import errors, layers


@pytest.fixture
def compiled():
    model = kx.Sequential([kx.Input((4,)), layers.Dense(8, activation="relu"), layers.Dense(3)])
    model.compile(optimizer="sgd", loss=kx.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _no_compile(model):
    assert not model._step_cache or all(k[0] == "objectives" for k in model._step_cache)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"validation_steps": 0}, errors.DataError, r"validation_steps must be a positive int; received 0"),
    ({"validation_freq": 0}, errors.ConfigError, r"validation_freq must be a positive int .* received validation_freq=0"),
    ({"seed": -1}, errors.ConfigError, r"seed must be a non-negative int when shuffling; received seed=-1"),
    ({"seed": 2.5}, errors.ConfigError, r"seed must be a whole number; received seed=2.5"),
    ({"steps_per_epoch": True}, errors.DataError, r"steps_per_epoch must be a positive int; received True"),
])
def test_fit_refuses_bad_counts_and_seeds_before_running(compiled, kwargs, error, match):
    """Before: validation_steps=0 gave 0.0 validation logs, validation_freq=0 a
    ZeroDivisionError, seed=-1 a raw NumPy ValueError."""
    x, y = np.zeros((8, 4), np.float32), np.zeros(8, np.int32)
    with pytest.raises(error, match=match):
        compiled.fit(x, y, validation_data=(x, y), verbose=0, **kwargs)
    _no_compile(compiled)


def test_numpy_integers_and_whole_seeds_are_accepted(compiled):
    """The shared checks take what the old ones did: NumPy integers for counts, a float seed
    that is a whole number, a negative seed without shuffling."""
    x, y = np.zeros((8, 4), np.float32), np.zeros(8, np.int32)
    compiled.fit(x, y, batch_size=np.int64(4), steps_per_epoch=np.int32(2), validation_data=(x, y),
                 validation_steps=np.int64(1), seed=2.0, verbose=0)
    compiled.fit(x, y, shuffle=False, seed=-1, verbose=0)
    assert compiled.predict(x, batch_size=np.int64(4), steps=np.int64(1)).shape[0] == 4
    assert np.isfinite(compiled.evaluate(x, y, batch_size=np.int64(4), steps=np.int64(2), verbose=0))


@pytest.mark.parametrize("steps", [0, -1])
def test_evaluate_and_predict_refuse_step_counts_below_one(compiled, steps):
    """Before: evaluate(steps=0) returned a loss of 0.0."""
    x, y = np.zeros((8, 4), np.float32), np.zeros(8, np.int32)
    with pytest.raises(errors.DataError, match=rf"steps must be a positive int; received {steps}$"):
        compiled.evaluate(x, y, steps=steps, verbose=0)
    with pytest.raises(errors.DataError, match=rf"steps must be a positive int; received {steps}$"):
        compiled.predict(x, steps=steps)
    with pytest.raises(errors.ConfigError, match=r"batch_size must be a positive int; received -1"):
        compiled.predict(x, batch_size=-1)
