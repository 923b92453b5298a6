"""``evaluate``, ``predict`` and ``fit``'s validation cut in-memory data into batches on the
device once (``evaluation.EvalCut``, ``cut_batches``): the numbers must be those of the whole
data set, whatever the batch size, the padding of the last batch, the weights or ``steps``."""

from __future__ import annotations

import numpy as np
import pytest

import kerax as kx
from kerax import layers
from kerax.training import evaluation


def _data(n=30, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.5, 2.0, size=(n, 4)).astype(np.float32)  # positive, for the log head
    y = rng.integers(0, 3, n)
    return x, y


def _model(log_inputs=False):
    head = [layers.Lambda(lambda t: __import__("jax").numpy.log(t))] if log_inputs else []
    model = kx.Sequential([kx.Input((4,))] + head + [layers.Dense(3)])
    model.compile(optimizer="sgd", loss=kx.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.build(seed=0)
    return model


def _numpy_logs(model, x, y, w=None, log_inputs=False):
    """Cross-entropy (Keras's sum_over_batch_size: sum of w * ce over the rows, divided by
    their number) and accuracy from the kernel and bias, in NumPy."""
    p = model.get_weights()
    h = np.log(x) if log_inputs else x
    logits = h.astype(np.float64) @ p[0] + p[1]
    logp = logits - logits.max(1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    ce = -logp[np.arange(len(y)), y]
    w = np.ones(len(y)) if w is None else np.asarray(w, np.float64)
    return (ce * w).sum() / len(y), (logits.argmax(1) == y).mean()


@pytest.mark.parametrize("batch", [1, 7, 30, 64])
def test_evaluate_equals_the_whole_data_set_for_any_batch_size(batch):
    x, y = _data()
    # The padded rows of the last batch (copies of row 0) must weigh nothing.
    model = _model(log_inputs=True)
    logs = model.evaluate(x, y, batch_size=batch, verbose=0, return_dict=True)
    loss, acc = _numpy_logs(model, x, y, log_inputs=True)
    assert np.isfinite(logs["loss"])
    assert logs["loss"] == pytest.approx(loss, rel=1e-5)
    assert logs["accuracy"] == pytest.approx(acc, abs=1e-7)


def test_evaluate_with_sample_weights_and_steps():
    x, y = _data(n=23, seed=1)
    w = np.random.default_rng(2).uniform(0.1, 3.0, 23)
    model = _model()
    logs = model.evaluate(x, y, sample_weight=w, batch_size=5, verbose=0, return_dict=True)
    assert logs["loss"] == pytest.approx(_numpy_logs(model, x, y, w)[0], rel=1e-5)
    # steps=3 of batch 5: the first 15 rows only.
    logs = model.evaluate(x, y, sample_weight=w, batch_size=5, steps=3, verbose=0, return_dict=True)
    assert logs["loss"] == pytest.approx(_numpy_logs(model, x[:15], y[:15], w[:15])[0], rel=1e-5)


@pytest.mark.parametrize("batch,steps", [(7, None), (30, None), (64, None), (4, 2)])
def test_predict_returns_every_row_once(batch, steps):
    x, _ = _data()
    model = _model()
    p = model.get_weights()
    out = model.predict(x, batch_size=batch, steps=steps, verbose=0)
    rows = len(x) if steps is None else min(len(x), batch * steps)
    np.testing.assert_allclose(out, x[:rows] @ p[0] + p[1], rtol=1e-5, atol=1e-6)


def test_cut_batches_pads_the_last_batch_with_row_zero():
    a = np.arange(10)
    got = evaluation.cut_batches(a, 10, 4, None)
    assert [rows for _, rows in got] == [4, 4, 2]
    np.testing.assert_array_equal(got[2][0], [8, 9, 0, 0])
    assert np.shares_memory(got[0][0], a)  # full batches are views: no host copy
    assert [rows for _, rows in evaluation.cut_batches(a, 10, 4, 2)] == [4, 4]


def test_fit_cuts_its_validation_data_once_and_reports_each_epochs_weights(monkeypatch):
    x, y = _data(n=40, seed=3)
    model = _model()
    made = []
    real = evaluation.EvalCut.__init__

    def counting(self, *args, **kwargs):
        made.append(args[1:])
        real(self, *args, **kwargs)

    monkeypatch.setattr(evaluation.EvalCut, "__init__", counting)
    seen = []

    class AfterEpoch(kx.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(_numpy_logs(self.model, x[28:], y[28:])[0])

    history = model.fit(x[:28], y[:28], batch_size=8, epochs=3, validation_data=(x[28:], y[28:]),
                        validation_batch_size=5, verbose=0, callbacks=[AfterEpoch()], seed=0)
    assert made == [(5, None, "the validation data")]  # one cut, with the validation batch size, for the three epochs
    np.testing.assert_allclose(history.history["val_loss"], seen, rtol=1e-5)
