"""fit(ensemble=N) semantics the review of the ensembles found wrong: on_nan="stop" keeps a
member frozen, callbacks cannot silently lose an assignment, a second fit continues the
members, best_member ranks as EarlyStopping and picks from its own ensemble, and the
ensemble's predict honours callbacks. Each checked against a plain fit or exact numbers."""

from __future__ import annotations

import re
import warnings

import jax
import numpy as np
import pytest

import kerax as kx
from kerax import errors, layers
from kerax.training import ensemble_predict
from kerax.training.ensemble import EnsembleHistory

NAN_FIT = dict(batch_size=4, steps_per_epoch=1, verbose=0)  # 4 of the 16 rows per epoch


def _data(n: int = 48):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int32) + (x[:, 2] > 1).astype(np.int32)
    return x, y


def _nan_data():
    """Row 0 is NaN: with seeds 10 and 11 and 4 rows per epoch, member 0 (seed 10) first
    meets it in epoch index 1, member 1 (seed 11) in epoch index 3."""
    x, y = _data(16)
    x[0, 0] = np.nan
    return x, y


def _model(lr: float = 0.01, dropout: bool = False, **compile_kw) -> kx.Sequential:
    stack = [layers.Dense(8, activation="relu")] + ([layers.Dropout(0.3)] if dropout else []) + [layers.Dense(3)]
    model = kx.Sequential(stack)
    model.compile(optimizer=kx.optimizers.Adam(lr), metrics=["accuracy"],
                  loss=kx.losses.SparseCategoricalCrossentropy(from_logits=True), **compile_kw)
    return model


def _assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=rtol, atol=atol)


def _rates(model) -> list[float]:
    return np.asarray(kx.optimizers.get_learning_rate(model._ensemble.ts.opt_state)).tolist()


@pytest.fixture(scope="module")
def nan_singles():
    """Plain fit(seed=s, on_nan="stop") for the members' seeds 10 and 11 (6 epochs asked)."""
    x, y = _nan_data()
    out = []
    for seed in (10, 11):
        model = _model(on_nan="stop")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out.append((model, model.fit(x, y, epochs=6, seed=seed, **NAN_FIT)))
    return out


@pytest.fixture(scope="module")
def trained():
    """A 2-member ensemble, read (not trained further) by the tests that take it."""
    x, y = _data()
    model = _model()
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0, seed=0, ensemble=2)
    return model, history, x, y


# -- on_nan="stop" (finding 1) -------------------------------------------------------------------


@pytest.mark.parametrize("how", ["compile", "TerminateOnNaN"])
def test_on_nan_stop_keeps_each_member_frozen_and_stops_when_all_are(how, nan_singles):
    x, y = _nan_data()
    model = _model(on_nan="stop" if how == "compile" else "warn")
    callbacks = [kx.callbacks.TerminateOnNaN()] if how == "TerminateOnNaN" else []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        history = model.fit(x, y, epochs=6, seed=10, ensemble=2, callbacks=callbacks, **NAN_FIT)
    # Member 1 freezes in epoch index 3: then every member is frozen and the fit stops.
    assert len(history.history["loss"]) == 4
    assert [len(h.history["loss"]) for _, h in nan_singles] == [2, 4]
    for i, (single, _) in enumerate(nan_singles):  # frozen at the first bad step, as a plain fit
        _assert_trees_close(model.ensemble_member(i).params, single.params, rtol=0, atol=0)
    member0 = history.history["loss_member_0"]
    assert member0[0] == pytest.approx(nan_singles[0][1].history["loss"][0], rel=1e-6)
    assert np.isnan(member0[1:]).all()  # no step applied: no value (not 0.0)
    assert np.isnan(history.history["accuracy_member_0"][1:]).all()
    # A member that applied no step is left out of the mean.
    assert history.history["loss"][1] == pytest.approx(history.history["loss_member_1"][1], rel=1e-6)
    with pytest.raises(errors.ConfigError, match="no member has a finite last-epoch 'loss'"):
        history.best_member_index("loss")


def test_member_whose_epoch_was_refused_is_never_the_best():
    x, y = _nan_data()
    model = _model(on_nan="stop")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        history = model.fit(x, y, epochs=2, seed=10, ensemble=2, **NAN_FIT)
    loss0, loss1 = history.history["loss_member_0"], history.history["loss_member_1"]
    assert np.isnan(loss0[1]) and np.isfinite(loss1[1])
    assert history.history["loss"][1] == pytest.approx(loss1[1], rel=1e-6)  # not (0.0 + loss1) / 2
    assert history.best_member_index("loss") == 1


# -- callbacks that assign the model's weights or learning rate (finding 2) ---------------------


class _MyScheduler(kx.callbacks.LearningRateScheduler):
    pass


class _MyCheckpoint(kx.callbacks.ModelCheckpoint):
    pass


@pytest.mark.parametrize("callback, match", [
    (_MyScheduler(lambda epoch, lr: lr), r"callback _MyScheduler \(a LearningRateScheduler\)"),
    (_MyCheckpoint("unused.kerax"), r"callback _MyCheckpoint \(a ModelCheckpoint\)"),
])
def test_subclasses_of_refused_callbacks_are_refused(callback, match):
    x, y = _data(16)
    with pytest.raises(errors.ConfigError, match=match + ": it acts on one model's weights or learning rate"):
        _model().fit(x, y, ensemble=2, callbacks=[callback], verbose=0)


class _Halve(kx.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.model.optimizer.learning_rate = self.model.optimizer.learning_rate * 0.5


class _Zero(kx.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        self.model.set_weights([np.zeros_like(w) for w in self.model.get_weights()])


@pytest.mark.parametrize("callback, match", [
    (_Halve(), r"callback _Halve set the model's optimizer state .*in on_epoch_end"),
    (_Zero(), r"callback _Zero set the model's weights in on_train_batch_end"),
])
def test_callback_assigning_weights_or_learning_rate_is_refused_and_undone(callback, match):
    x, y = _data(32)
    model = _model()
    with pytest.raises(errors.ConfigError, match=match + r".*which that assignment does not reach"):
        model.fit(x, y, batch_size=16, epochs=2, verbose=0, seed=0, ensemble=2, callbacks=[callback],
                  ensemble_hyperparams={"learning_rate": [0.01, 0.02]})
    # The model still holds the ensemble and reports what member 0 really uses.
    assert model.ensemble_size == 2 and _rates(model) == pytest.approx([0.01, 0.02])
    assert model.optimizer.learning_rate == pytest.approx(0.01)
    _assert_trees_close(model.params, model.ensemble_member(0).params, rtol=0, atol=0)


def test_learning_rate_set_between_ensemble_fits_is_refused_and_undone():
    x, y = _data(32)
    model = _model()
    fit = dict(batch_size=16, epochs=1, verbose=0, seed=0, ensemble=2)
    model.fit(x, y, **fit)
    model.optimizer.learning_rate = 0.5
    with pytest.raises(errors.ConfigError, match=r"optimizer state was set after the ensemble fit .*"
                                                 r"ensemble_hyperparams=\{'learning_rate'"):
        model.fit(x, y, **fit)
    assert model.optimizer.learning_rate == pytest.approx(0.01)  # undone: member 0's real rate
    model.fit(x, y, **fit)  # and the members continue
    assert np.asarray(model._ensemble.ts.step).tolist() == [4, 4]


# -- a second fit(ensemble=N) (finding 11) --------------------------------------------------------


def test_second_fit_with_new_sweep_values_continues_the_members():
    x, y = _data()
    fit = dict(batch_size=16, epochs=1, verbose=0, seed=3)
    model = _model(dropout=True)
    model.fit(x, y, ensemble=2, ensemble_hyperparams={"learning_rate": [0.01, 0.03]}, **fit)
    model.fit(x, y, ensemble=2, ensemble_hyperparams={"learning_rate": [0.002, 0.005]}, **fit)
    assert np.asarray(model._ensemble.ts.step).tolist() == [6, 6]  # 3 + 3 steps: not restarted
    assert _rates(model) == pytest.approx([0.002, 0.005])
    single = _model(lr=0.03, dropout=True)  # member 1, as one model: fit, set the rate, fit
    single.fit(x, y, **{**fit, "seed": 4})
    single.optimizer.learning_rate = 0.005
    single.fit(x, y, **{**fit, "seed": 4})
    _assert_trees_close(model.ensemble_member(1).params, single.params)


# -- best_member (findings 3 and 7) --------------------------------------------------------------


def _history(values: dict) -> EnsembleHistory:
    """An EnsembleHistory of 3 members whose last epoch holds ``values[name]`` (one per member)."""
    history = EnsembleHistory([0, 1, 2])
    for name, per_member in values.items():
        for i, v in enumerate(per_member):
            history.history[f"{name}_member_{i}"] = [v]
    return history


@pytest.mark.parametrize("monitor", ["val_f1_score", "fmeasure", "val_auc", "val_precision", "val_loss", "mse"])
def test_best_member_auto_mode_decides_as_early_stopping(monitor):
    history = _history({monitor: [0.343, 0.464, 0.111]})
    mode = kx.callbacks.EarlyStopping(monitor=monitor).mode
    assert history.best_member_index(monitor) == (1 if mode == "max" else 2)


def test_best_member_refuses_vector_and_all_nonfinite_monitors():
    history = _history({"val_f1_score": [[0.6, 0.6, 0.0], [0.5, 0.7, 0.0], [0.7, 0.3, 0.0]],
                        "loss": [float("nan"), float("inf"), float("nan")]})
    with pytest.raises(errors.ConfigError, match=r"expected monitor 'val_f1_score' to be one number per "
                                                 r"member; received a value of shape \(3,\) per member"):
        history.best_member_index("val_f1_score", mode="max")
    with pytest.raises(errors.ConfigError, match=r"no member has a finite last-epoch 'loss' "
                                                 r"\(received \[nan, inf, nan\]\)"):
        history.best_member_index("loss")
    with pytest.raises(errors.ConfigError, match="best_member: mode must be 'auto', 'min' or 'max'; received 'up'"):
        history.best_member_index("loss", mode="up")
    with pytest.raises(errors.ConfigError, match="EarlyStopping: mode must be 'auto', 'min' or 'max'; received 'up'"):
        kx.callbacks.EarlyStopping(mode="up")  # the one rule both use (callbacks/monitor.py)


def test_history_best_member_picks_from_the_ensemble_it_recorded():
    x, y = _data()
    model = _model()
    fit = dict(batch_size=16, epochs=1, verbose=0, validation_split=0.25)
    history = model.fit(x, y, seed=0, ensemble=2, **fit)
    index = history.best_member_index("val_loss")
    _assert_trees_close(history.best_member("val_loss").params, model.ensemble_member(index).params)
    stale = "the model no longer holds the ensemble this History recorded"
    for again in (dict(seed=100, ensemble=2), dict(seed=100, ensemble=3), dict(seed=0)):  # continued, new, plain
        model.fit(x, y, **again, **fit)
        with pytest.raises(errors.ConfigError, match=stale):
            history.best_member("val_loss")


# -- predict with callbacks and verbose (finding 8) ----------------------------------------------


class _Calls(kx.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.calls = []

    def on_predict_begin(self, logs=None):
        self.calls.append("begin")

    def on_predict_batch_end(self, batch, logs=None):
        self.calls.append((batch, np.shape(logs["outputs"])))

    def on_predict_end(self, logs=None):
        self.calls.append("end")


def test_ensemble_predict_calls_the_predict_hooks_and_shows_progress(trained, capsys):
    model, _, x, _ = trained
    calls = _Calls()
    out = model.predict(x, batch_size=16, ensemble="all", verbose=2, callbacks=[calls])
    assert out.shape == (2, len(x), 3)
    assert calls.calls == ["begin", (0, (2, 16, 3)), (1, (2, 16, 3)), (2, (2, 16, 3)), "end"]
    assert re.search(r" \d+(s|ms|us)/step", capsys.readouterr().out)
    calls.calls.clear()
    mean = model.predict(x, batch_size=32, verbose=0, callbacks=[calls])
    np.testing.assert_allclose(mean, out.mean(0), rtol=1e-6)
    assert calls.calls == ["begin", (0, (32, 3)), (1, (32, 3)), "end"]  # the last batch padded
