"""Non-finite losses in fit: on_nan="stop" / TerminateOnNaN, "skip", "warn", and JAX's
NaN checker (RELIABILITY C11, C12, C14)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kerax as kx
from kerax import errors, layers
from test_training import SCCE, _blobs, _mlp


def test_terminate_on_nan_stops_before_the_bad_update():
    x, y = _blobs(n=64)
    x[40] = np.nan  # batch 2 of 4 (batch_size=16, no shuffle)
    model = _mlp()
    model.compile(optimizer="sgd", loss=SCCE)
    params_before = {}

    class Snapshot(kx.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            params_before[batch] = jax.tree.map(np.asarray, self.model._ts.params)

    history = model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0, seed=0,
                        callbacks=[Snapshot(), kx.callbacks.TerminateOnNaN()])
    assert len(history.history["loss"]) == 1
    assert math.isnan(history.history["loss"][0])  # not the mean of the two good steps
    assert all(np.all(np.isfinite(a)) for a in jax.tree.leaves(model.params))
    jax.tree.map(np.testing.assert_array_equal, model.params, params_before[1])  # after batch 1 (0-based)
    assert int(model._ts.step) == 2


@pytest.mark.filterwarnings("ignore:epoch 1. 2 step.s. had a non-finite")  # "warn" reports them
@pytest.mark.parametrize("on_nan", ["stop", "skip", "warn"])
def test_debug_nans_reaches_the_primitive_whatever_on_nan_says(on_nan):
    """on_nan="stop"/"skip" mask the bad update, which would hide the NaN from JAX's check;
    JAX's compile cache does not tell the modes apart, so turning the flag on after a fit,
    or off again, must still take effect; "warn" must not have donated the inputs JAX
    re-runs the step on."""
    x, y = _blobs(n=32)
    model = kx.Sequential([layers.Dense(3, input_shape=(4,)), layers.Activation(jnp.sqrt)])  # sqrt(< 0)
    model.compile(optimizer="sgd", loss=SCCE, on_nan=on_nan)
    fit = lambda: model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0, seed=0)  # noqa: E731
    fit()  # compiled without the flag
    jax.config.update("jax_debug_nans", True)
    try:
        with pytest.raises(FloatingPointError, match=r"invalid value \(nan\) encountered in sqrt"):
            fit()
    finally:
        jax.config.update("jax_debug_nans", False)
    if on_nan == "stop":  # and off again: the masked program, not the debugging one
        history = fit()
        assert math.isnan(history.history["loss"][0])
        assert all(np.all(np.isfinite(a)) for a in jax.tree.leaves(model.params))
    model.evaluate(x, y, verbose=0)  # an evaluation step compiled without the flag...
    with jax.debug_nans(True), pytest.raises(FloatingPointError, match=r"invalid value \(nan\) encountered in"):
        model.evaluate(x, y, verbose=0)  # ...and with it (under "warn" the weights are NaN by now)
    fresh = kx.Sequential([layers.Dense(3, input_shape=(4,)), layers.Activation(jnp.sqrt)])
    fresh.compile(optimizer="sgd", loss=SCCE, on_nan=on_nan)
    with jax.debug_nans(True), pytest.raises(FloatingPointError, match="sqrt"):  # the context form
        fresh.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0, seed=0)


def test_nan_without_terminate_is_reported():
    x, y = _blobs(n=32)
    x[3] = np.inf
    model = _mlp()
    model.compile(optimizer="sgd", loss=SCCE)
    with pytest.warns(UserWarning, match="non-finite loss"):
        history = model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0, seed=0)
    assert math.isnan(history.history["loss"][0])


def test_on_nan_skip_never_applies_and_raises_after_limit():
    x, y = _blobs(n=64)
    x[0] = np.nan
    model = _mlp()
    model.compile(optimizer="sgd", loss=SCCE, on_nan="skip", max_consecutive_nonfinite=2)
    history = model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0, seed=0)
    assert history.history["skipped_steps"] == [1.0]
    assert int(model._ts.step) == 3 and math.isfinite(history.history["loss"][0])
    # C12: the skipped step left weights and optimizer state as they were: the result is a
    # fit on the three good batches alone
    alone = _mlp()
    alone.compile(optimizer="sgd", loss=SCCE)
    alone.fit(x[16:], y[16:], batch_size=16, epochs=1, shuffle=False, verbose=0, seed=0)
    jax.tree.map(np.testing.assert_array_equal, model.params, alone.params)
    jax.tree.map(np.testing.assert_array_equal, model._ts.opt_state, alone._ts.opt_state)
    x[16:48] = np.nan
    with pytest.raises(errors.NonFiniteLossError, match=r"2 consecutive steps had a non-finite loss .*max_consecutive_nonfinite=2"):
        model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0, seed=0)
    assert all(np.all(np.isfinite(a)) for a in jax.tree.leaves(model._ts.params))


def test_skipped_steps_is_logged_every_epoch_so_the_history_lists_align():
    x, y = _blobs(n=32)
    model = _mlp()
    model.compile(optimizer="sgd", loss=SCCE, on_nan="skip")
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0, seed=0)
    x[20] = np.nan
    history = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, seed=0)
    assert history.history["skipped_steps"] == [1.0, 1.0]
    clean = _mlp()
    clean.compile(optimizer="sgd", loss=SCCE, on_nan="skip")
    assert clean.fit(_blobs(n=32)[0], y, batch_size=16, epochs=2, verbose=0, seed=0).history["skipped_steps"] == [0.0, 0.0]
