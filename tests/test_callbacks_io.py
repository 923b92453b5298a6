"""Callbacks that write files or print: ModelCheckpoint, weight files, the progress display."""

from __future__ import annotations

import io

import jax
import numpy as np
import pytest

import kerax as kx
from kerax import errors, layers
from kerax.training.callbacks.progress import Progress, per_step


def _model(units=3):
    model = kx.Sequential([layers.Dense(8, activation="relu", input_shape=(4,)), layers.Dense(units)])
    model.compile(optimizer="sgd", loss=kx.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _data(n=32):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 4)).astype(np.float32), rng.integers(0, 3, n).astype(np.int32)


def test_save_and_load_weights_round_trip(tmp_path):
    model = _model()
    model.build(seed=1)
    path = tmp_path / "w.safetensors"
    model.save_weights(path)
    other = _model()
    other.build(seed=2)
    other.load_weights(path)
    jax.tree.map(np.testing.assert_array_equal, model.params, other.params)
    x, _ = _data()
    np.testing.assert_array_equal(model.predict(x), other.predict(x))


def test_load_weights_refuses_a_mismatch_and_keeps_the_model(tmp_path):
    model = _model(units=5)
    model.build(seed=1)
    path = tmp_path / "w.safetensors"
    model.save_weights(path)
    target = _model(units=3)
    target.build(seed=2)
    before = jax.tree.map(np.asarray, target.params)
    with pytest.raises(errors.IncompatibleCheckpointError, match=r"'dense_1/bias' expected shape \(3,\) dtype float32; the file has shape \(5,\)"):
        target.load_weights(path)
    jax.tree.map(np.testing.assert_array_equal, target.params, before)
    (tmp_path / "bad").write_bytes(b"not a weights file")
    with pytest.raises(errors.CorruptFileError, match="not a readable weights file"):
        target.load_weights(tmp_path / "bad")


def test_model_checkpoint_saves_best_only(tmp_path):
    x, y = _data()
    model = _model()
    pattern = str(tmp_path / "ckpt-{epoch:02d}.safetensors")
    cb = kx.callbacks.ModelCheckpoint(pattern, monitor="loss", save_best_only=True, save_weights_only=True, mode="max")
    history = model.fit(x, y, epochs=3, verbose=0, seed=0, callbacks=[cb])
    losses = history.history["loss"]
    saved = sorted(p.name for p in tmp_path.iterdir())
    expected = ["ckpt-01.safetensors"] + [f"ckpt-{e + 1:02d}.safetensors" for e in (1, 2)
                                          if losses[e] > max(losses[:e])]
    assert saved == expected
    clone = _model()
    clone.build(seed=5)
    clone.load_weights(tmp_path / saved[-1])


def test_model_checkpoint_unknown_field(tmp_path):
    x, y = _data()
    cb = kx.callbacks.ModelCheckpoint(str(tmp_path / "{val_acc}.safetensors"), save_weights_only=True)
    with pytest.raises(errors.ConfigError, match=r"names 'val_acc' which is not in the logs \['loss'\]"):
        _model().fit(x, y, epochs=1, verbose=0, seed=0, callbacks=[cb])


def test_progress_one_line_per_epoch_when_not_a_terminal(capsys):
    x, y = _data()
    _model().fit(x, y, epochs=2, verbose=2, seed=0)
    lines = [l for l in capsys.readouterr().out.splitlines() if l.strip()]
    assert len(lines) == 2 and lines[0].startswith("Epoch 1/2 - ") and " - loss: " in lines[1]


def test_time_per_step_in_keras_units():
    # Sub-millisecond steps are common on small models: "0ms/step" said nothing.
    assert [per_step(s) for s in (2.4, 0.0354, 0.00048)] == ["2s/step", "35ms/step", "480us/step"]


def test_progress_bar_in_a_terminal_shows_steps_and_metrics():
    out = io.StringIO()
    bar = Progress(1, 4, "Epoch 1/1", interval=0.0, stream=out)
    for _ in range(4):
        bar.update(1, lambda: {"loss": 0.5})
    bar.close({"loss": 0.25, "accuracy": 0.75})
    text = out.getvalue()
    assert "Epoch 1/1" in text and "4/4" in text and "loss: 0.2500 - accuracy: 0.7500" in text


def test_verbose_zero_is_silent(capsys):
    x, y = _data()
    _model().fit(x, y, epochs=2, verbose=0, seed=0)
    assert capsys.readouterr().out == ""


def test_model_checkpoint_writes_whole_models(tmp_path):
    x, y = _data()
    model = _model()
    model.fit(x, y, epochs=2, verbose=0, seed=0,
              callbacks=[kx.callbacks.ModelCheckpoint(str(tmp_path / "m-{epoch}.kerax"), monitor="loss")])
    loaded = kx.load_model(tmp_path / "m-2.kerax")
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
