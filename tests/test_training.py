"""The training level: the pure step builders and the Keras shell compute the same thing,
train, and refuse bad data before compiling anything."""

from __future__ import annotations

import csv
import math

import jax
import numpy as np
import optax
import pytest

import kerax as kx
from kerax import errors, layers


SCCE = kx.losses.SparseCategoricalCrossentropy(from_logits=True)


def _blobs(n=96, classes=3, features=4, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=3.0, size=(classes, features))
    y = rng.integers(0, classes, n)
    x = centers[y] + rng.normal(size=(n, features))
    return x.astype(np.float32), y.astype(np.int32)


def _mlp(classes=3, features=4, dropout=0.0):
    return kx.Sequential([
        layers.Dense(16, activation="relu", input_shape=(features,)),
        layers.Dropout(dropout),
        layers.Dense(classes),
    ])


# -- the classic first Keras program ----------------------------------------------------------


def test_hello_world_as_written_trains():
    import kerax as keras

    model = keras.Sequential([keras.layers.Dense(units=1, input_shape=[1])])
    model.compile(optimizer=keras.optimizers.RMSprop(0.001), loss="mean_squared_error")
    history = model.fit(x=[1, 2, 3, 4], y=[1, 2, 3, 4], epochs=500, verbose=0, seed=3)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert model.predict([10.0]).shape == (1, 1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hello_world_at_lr_0_01_predicts_ten(seed):
    import kerax as keras

    model = keras.Sequential([keras.layers.Dense(units=1, input_shape=[1])])
    model.compile(optimizer=keras.optimizers.RMSprop(0.01), loss="mean_squared_error")
    model.fit(x=[1, 2, 3, 4], y=[1, 2, 3, 4], epochs=500, verbose=0, seed=seed)
    assert abs(float(model.predict([10.0])[0, 0]) - 10.0) < 0.15


# -- pure steps == fit -------------------------------------------------------------------------


def _pure_params(x, y, batch_size, seed, k=1, epochs=1):
    model = _mlp()
    model.build(seed=seed)
    tx = kx.optimizers.Adam(1e-2)
    ts = kx.TrainState.create(model, model.params, model.state, tx,
                              rng=jax.random.fold_in(jax.random.key(seed), 1))
    step = kx.make_train_step(model, loss=SCCE, metrics=["accuracy"],
                              steps_per_execution=k)
    for _ in range(epochs):
        batches = [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size)]
        for g in range(0, len(batches), k):
            group = batches[g:g + k]
            if k == 1:
                ts, logs = step(ts, group[0])
            else:
                ts, logs = step(ts, jax.tree.map(lambda *a: np.stack(a), *group))
    return ts, logs, step


def test_pure_loop_equals_fit():
    x, y = _blobs()
    ts, _, _ = _pure_params(x, y, 16, seed=5, epochs=2)
    model = _mlp()
    model.compile(optimizer=kx.optimizers.Adam(1e-2), loss=SCCE, metrics=["accuracy"])
    model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, seed=5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), ts.params, model.params)


def test_steps_per_execution_gives_the_same_params():
    x, y = _blobs(n=64)
    ts1, _, _ = _pure_params(x, y, 8, seed=1, k=1)
    ts8, logs8, step8 = _pure_params(x, y, 8, seed=1, k=8)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), ts1.params, ts8.params)
    assert int(ts8.step) == 8 and set(logs8) == {"loss", "accuracy"}
    model = _mlp()
    model.compile(optimizer=kx.optimizers.Adam(1e-2), loss=SCCE, steps_per_execution=8)
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, seed=1)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), ts1.params, model.params)


def test_steps_per_execution_of_odd_length_on_the_two_step_loop():
    """On CPU a dense model's K steps run two per loop iteration (``unroll=2``); K = 5
    and a last execution of 3 (odd, the remainder step) still equal K = 1."""
    from kerax.training.steps import TrainStep

    x, y = _blobs(n=8 * 23)
    ts1, _, _ = _pure_params(x, y, 8, seed=3, k=1)
    model = _mlp()
    model.compile(optimizer=kx.optimizers.Adam(1e-2), loss=SCCE, steps_per_execution=5)
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, seed=3)  # 5+5+5+5+3 steps
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), ts1.params, model.params)
    (step,) = [v for k, v in model._step_cache.items() if k[0] == "train"]
    assert isinstance(step, TrainStep) and step.unroll == 2


def test_train_step_compiles_once_per_shape():
    x, y = _blobs(n=40)
    model = _mlp()
    model.compile(optimizer="adam", loss=SCCE, metrics=["accuracy"])
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, seed=0)  # 2 full batches + 1 of 8
    (step,) = [v for k, v in model._step_cache.items() if k[0] == "train"]
    assert step.run._cache_size() == 2  # the (1, 16) and the (1, 8) executions
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, seed=1)
    assert step.run._cache_size() == 2  # a second fit reuses them


# -- fit behaviour -----------------------------------------------------------------------------


def test_fit_learns_and_history_has_every_key(tmp_path):
    x, y = _blobs(n=240)
    model = _mlp()
    model.compile(optimizer=kx.optimizers.Adam(1e-2), loss=SCCE, metrics=["accuracy"])
    log = tmp_path / "log.csv"
    history = model.fit(x, y, batch_size=32, epochs=6, validation_split=0.25, verbose=0, seed=0,
                        callbacks=[kx.callbacks.CSVLogger(str(log))])
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 6 for v in history.history.values())
    assert history.history["val_accuracy"][-1] >= 0.95
    rows = list(csv.DictReader(open(log)))
    assert len(rows) == 6 and math.isclose(float(rows[-1]["loss"]), history.history["loss"][-1], rel_tol=1e-6)
    loss, acc = model.evaluate(x, y, verbose=0)
    assert acc >= 0.95 and loss < history.history["loss"][0]
    assert model.evaluate(x, y, verbose=0, return_dict=True)["accuracy"] == acc


def test_evaluate_pads_last_batch_exactly():
    x, y = _blobs(n=30)
    model = _mlp()
    model.compile(optimizer="sgd", loss=SCCE, metrics=["accuracy"])
    model.build(seed=0)
    a = model.evaluate(x, y, batch_size=7, verbose=0, return_dict=True)
    b = model.evaluate(x, y, batch_size=30, verbose=0, return_dict=True)
    logits = model.predict(x, batch_size=7)
    ref = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    assert math.isclose(a["loss"], b["loss"], rel_tol=1e-5) and math.isclose(a["loss"], float(ref), rel_tol=1e-5)
    assert math.isclose(a["accuracy"], float(np.mean(logits.argmax(1) == y)), rel_tol=1e-6)
    np.testing.assert_allclose(logits, model.predict(x, batch_size=30), rtol=1e-5, atol=1e-6)


def test_early_stopping_restores_best_weights():
    x, y = _blobs(n=64)
    model = _mlp()
    model.compile(optimizer=kx.optimizers.SGD(0.05), loss=SCCE)
    seen = {}

    class Record(kx.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen[epoch] = (logs["loss"], jax.tree.map(np.asarray, self.model.params))

    # monitor training loss with a baseline that makes every epoch "no improvement" after the
    # first: stops after patience and restores epoch 0's weights.
    stop = kx.callbacks.EarlyStopping(monitor="loss", patience=2, mode="max", restore_best_weights=True)
    history = model.fit(x, y, epochs=10, verbose=0, seed=0, callbacks=[Record(), stop])
    assert len(history.history["loss"]) == 3
    best = int(np.argmax([seen[e][0] for e in range(3)]))
    jax.tree.map(np.testing.assert_array_equal, model.params, seen[best][1])


def test_reduce_lr_on_plateau_changes_the_optimizer_rate():
    x, y = _blobs(n=32)
    model = _mlp()
    model.compile(optimizer=kx.optimizers.SGD(0.1), loss=SCCE)
    cb = kx.callbacks.ReduceLROnPlateau(monitor="loss", mode="max", factor=0.5, patience=1, min_delta=0)
    history = model.fit(x, y, epochs=3, verbose=0, seed=0, callbacks=[cb])
    # logged at each epoch's end, before that epoch's reduction (as Keras logs it)
    assert history.history["learning_rate"] == pytest.approx([0.1, 0.1, 0.05])
    assert model.optimizer.learning_rate == pytest.approx(0.025)


def test_learning_rate_scheduler_and_lambda_callback():
    x, y = _blobs(n=32)
    model = _mlp()
    model.compile(optimizer=kx.optimizers.SGD(0.1), loss=SCCE)
    epochs = []
    cbs = [kx.callbacks.LearningRateScheduler(lambda epoch, lr: 0.1 / (epoch + 1)),
           kx.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: epochs.append(e))]
    history = model.fit(x, y, epochs=3, verbose=0, seed=0, callbacks=cbs)
    assert history.history["learning_rate"] == pytest.approx([0.1, 0.05, 0.1 / 3])
    assert epochs == [0, 1, 2]


def test_iterable_of_batches_and_dict_inputs():
    x, y = _blobs(n=48)
    a = kx.Input((4,), name="features")
    model = kx.Model({"features": a}, layers.Dense(3)(layers.Dense(8, activation="relu")(a)))
    model.compile(optimizer="adam", loss=SCCE, metrics=["accuracy"])
    batches = [({"features": x[i:i + 16]}, y[i:i + 16]) for i in range(0, 48, 16)]

    class Loader:  # a re-iterable, like a PyTorch DataLoader
        def __iter__(self):
            return iter(batches)

    history = model.fit(Loader(), epochs=2, verbose=0, seed=0)
    assert len(history.history["loss"]) == 2
    gen = (b for b in batches * 2)
    history = model.fit(gen, epochs=2, steps_per_epoch=3, verbose=0, seed=0)
    assert len(history.history["loss"]) == 2
    assert model.predict({"features": x}).shape == (48, 3)


def test_multi_output_losses_and_weights():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype(np.float32)
    inp = kx.Input((4,))
    h = layers.Dense(8, activation="relu")(inp)
    model = kx.Model(inp, [layers.Dense(1, name="reg")(h), layers.Dense(3, name="cls")(h)])
    model.compile(optimizer="adam", loss=["mse", "sparse_categorical_crossentropy"],
                  loss_weights=[0.5, 2.0], metrics={"cls": ["accuracy"]})
    y = [x[:, :1].sum(1, keepdims=True), (x[:, 0] > 0).astype(np.int32)]
    model.build(seed=0)
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    assert set(logs) == {"loss", "reg_loss", "cls_loss", "cls_accuracy"}
    assert logs["loss"] == pytest.approx(0.5 * logs["reg_loss"] + 2.0 * logs["cls_loss"], rel=1e-5)
    reg, cls = model.predict(x)
    assert logs["reg_loss"] == pytest.approx(float(np.mean((reg - y[0]) ** 2)), rel=1e-5)


def test_sample_and_class_weights():
    x, y = _blobs(n=32)
    model = _mlp()
    model.compile(optimizer="sgd", loss=SCCE)
    model.build(seed=0)
    logits = model.predict(x)
    per = np.asarray(optax.softmax_cross_entropy_with_integer_labels(logits, y))
    w = np.linspace(0, 2, 32).astype(np.float32)
    got = model.evaluate(x, y, sample_weight=w, verbose=0)
    assert got == pytest.approx(float(np.sum(per * w) / 32), rel=1e-5)
    cw = {0: 1.0, 1: 3.0, 2: 0.5}
    from kerax.training.setup import apply_class_weight

    np.testing.assert_array_equal(apply_class_weight(y, None, cw), np.array([cw[int(c)] for c in y], np.float32))


def test_train_test_predict_on_batch():
    x, y = _blobs(n=16)
    model = _mlp()
    model.compile(optimizer="sgd", loss=SCCE, metrics=["accuracy"])
    loss, acc = model.train_on_batch(x, y)
    assert math.isfinite(loss) and 0 <= acc <= 1
    assert int(model._ts.step) == 1
    assert model.test_on_batch(x, y, return_dict=True).keys() == {"loss", "accuracy"}
    assert model.predict_on_batch(x).shape == (16, 3)


# -- bad data is refused before anything compiles ------------------------------------------------


@pytest.fixture
def compiled():
    model = _mlp()
    model.compile(optimizer="sgd", loss=SCCE)
    return model


def _no_compile(model):
    assert not model._step_cache or all(k[0] == "objectives" for k in model._step_cache)


def test_a5_length_mismatch(compiled):
    with pytest.raises(errors.DataError, match="x has 10 samples, y has 8"):
        compiled.fit(np.zeros((10, 4)), np.zeros(8, np.int32), verbose=0)
    _no_compile(compiled)


def test_a6_targets_that_would_broadcast():
    model = kx.Sequential([layers.Dense(3, input_shape=(4,))])
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(errors.ShapeError, match=r"y_true.shape=\(10, 1\) and y_pred.shape=\(10, 3\)"):
        model.fit(np.zeros((10, 4)), np.zeros((10, 1)), verbose=0)


@pytest.mark.parametrize("labels, pattern", [
    ([0, 1, 5], r"label 5 out of range \[0, 3\)"),
    ([0, -1, 2], r"label -1 out of range \[0, 3\)"),
    ([0.0, 2.7, 1.0], r"non-integer"),
])
def test_a7_a8_a9_bad_sparse_labels(compiled, labels, pattern):
    with pytest.raises(errors.LabelError, match=pattern):
        compiled.fit(np.zeros((3, 4)), np.array(labels), verbose=0)
    _no_compile(compiled)


def test_a10_a11_empty_data(compiled):
    with pytest.raises(errors.DataError, match="dataset is empty"):
        compiled.fit(np.zeros((0, 4)), np.zeros(0, np.int32), verbose=0)
    with pytest.raises(errors.DataError, match="dataset is empty"):
        compiled.predict(np.zeros((0, 4)))
    with pytest.raises(errors.DataError, match="dataset is empty"):
        compiled.evaluate(np.zeros((0, 4)), np.zeros(0, np.int32))
    with pytest.raises(errors.DataError, match=r"^x \(list_iterator\) yielded no batches"):
        compiled.fit(iter([]), verbose=0)
    batches = [(np.zeros((2, 4), np.float32), np.zeros(2, np.int32))]
    with pytest.raises(errors.DataError, match=r"^validation_data \(generator\) yielded no batches"):
        compiled.fit(iter(batches), validation_data=(b for b in []), verbose=0)
    with pytest.raises(errors.DataError, match="steps_per_epoch must be a positive int"):
        compiled.fit(np.zeros((4, 4)), np.zeros(4, np.int32), steps_per_epoch=0, verbose=0)


def test_a16_string_input(compiled):
    with pytest.raises(errors.DTypeError, match=r"x has dtype <U1 \(strings\)"):
        compiled.fit(np.array([["a"] * 4]), np.zeros(1, np.int32), verbose=0)


def test_a17_int_inputs_are_cast():
    model = kx.Sequential([layers.Dense(2, input_shape=(3,))])
    model.build(seed=0)
    np.testing.assert_allclose(model.predict(np.ones((2, 3), np.int32)), model.predict(np.ones((2, 3), np.float32)))


def test_a17_strict_dtypes_refuses_a_cast_everywhere(tmp_path):
    model = kx.Sequential([kx.Input((3,)), layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse", strict_dtypes=True)
    x, y = np.ones((4, 3), np.int32), np.zeros((4, 2), np.float32)
    pattern = (r"^(x|validation_data\[0\]) has dtype int32; the model's input is float32, and "
               r"compile\(strict_dtypes=True\) refuses a cast: pass (x|validation_data\[0\])\.astype\('float32'\)")
    for call in (lambda: model.fit(x, y, verbose=0), lambda: model.evaluate(x, y, verbose=0),
                 lambda: model.predict(x, verbose=0), lambda: model.fit(x.astype(np.float64), y, verbose=0),
                 lambda: model.fit(x.astype(np.float32), y, validation_data=(x, y), verbose=0)):
        with pytest.raises(errors.DTypeError, match=pattern.replace("int32", "(int32|float64)")):
            call()
    model.fit(x.astype(np.float32), y, verbose=0)  # the model's own dtype passes
    model.save(tmp_path / "m.kerax")  # and the setting is saved with the compile arguments
    with pytest.raises(errors.DTypeError, match="strict_dtypes"):
        kx.load_model(tmp_path / "m.kerax").predict(x, verbose=0)
    a, b = kx.Input((4,), name="a"), kx.Input((2,), name="b", dtype="int32")
    two = kx.Model([a, b], layers.Dense(1)(layers.Concatenate()([a, layers.Activation("linear")(b)])))
    two.compile(optimizer="sgd", loss="mse", strict_dtypes=True)
    with pytest.raises(errors.DTypeError, match=r"^x\['b'\] has dtype float32; the model's input 'b' is int32"):
        two.predict({"a": np.ones((2, 4), np.float32), "b": np.ones((2, 2), np.float32)}, verbose=0)
    assert two.predict([np.ones((2, 4), np.float32), np.ones((2, 2), np.int32)], verbose=0).shape == (2, 1)
    # Without kx.Input: the dtype the model was built for (token ids for an Embedding)
    ids = kx.Sequential([layers.Embedding(10, 4, input_shape=(3,)), layers.Flatten(), layers.Dense(1)])
    ids.compile(optimizer="sgd", loss="mse", strict_dtypes=True)
    ids.fit(np.ones((4, 3), np.int32), np.zeros((4, 1), np.float32), verbose=0)
    with pytest.raises(errors.DTypeError, match=r"^x has dtype float32; the model's input is int32"):
        ids.predict(np.ones((4, 3), np.float32), verbose=0)


def test_a18_check_finite_inputs(compiled):
    x = np.zeros((8, 4), np.float32)
    x[5, 2] = np.nan
    with pytest.raises(errors.DataError, match="NaN or infinity in row 5"):
        compiled.fit(x, np.zeros(8, np.int32), verbose=0, check_finite_inputs=True)


def test_fit_before_compile_and_bad_loss_names():
    model = _mlp()
    with pytest.raises(errors.NotCompiledError, match=r"call model.compile\(optimizer=..., loss=...\) first"):
        model.fit(np.zeros((2, 4)), np.zeros(2), verbose=0)
    with pytest.raises(errors.UnknownNameError, match=r"Unknown loss 'msee'.*Did you mean 'mse'\?"):
        model.compile(optimizer="sgd", loss="msee")
    with pytest.raises(errors.UnknownNameError, match=r"Unknown optimizer 'adamm'"):
        model.compile(optimizer="adamm", loss="mse")


def test_input_shape_incompatible_with_model(compiled):
    with pytest.raises(errors.ShapeError, match=r"expected shape \(None, 4\); received shape \(2, 5\)"):
        compiled.fit(np.zeros((2, 5)), np.zeros(2, np.int32), verbose=0)


def test_validation_split_with_iterable(compiled):
    with pytest.raises(errors.DataError, match="validation_split needs in-memory arrays"):
        compiled.fit(iter([(np.zeros((2, 4)), np.zeros(2, np.int32))]), validation_split=0.5, verbose=0)


# -- determinism (D1-D5) -------------------------------------------------------------------------


def _train_hash(seed):
    x, y = _blobs(n=64)
    model = _mlp(dropout=0.3)
    model.compile(optimizer="adam", loss=SCCE)
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, seed=seed)
    import hashlib

    h = hashlib.sha256()
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


def _order_hash():
    """SHA-256 of the shuffled orders of epochs 0-2 for seed 3 (D5)."""
    import hashlib

    from kerax.data import epoch_order

    return hashlib.sha256(b"".join(epoch_order(50, True, seed=3, epoch=e).tobytes() for e in range(3))).hexdigest()


def test_d1_d2_same_seed_same_weights_different_seed_different():
    assert _train_hash(11) == _train_hash(11)
    assert _train_hash(11) != _train_hash(12)


@pytest.mark.parametrize("variant", ["plain", "single_thread_eigen", "one_core"])
def test_d1_d3_across_processes(tmp_path, variant):
    import shutil
    import subprocess
    import sys

    script = tmp_path / "run.py"
    script.write_text(
        "import sys; sys.path.insert(0, %r)\n" % str(__import__("pathlib").Path(__file__).parent)
        + "from test_training import _order_hash, _train_hash\nprint(_order_hash())\nprint(_train_hash(11))\n"
    )
    flags = __import__("os").environ["XLA_FLAGS"]  # conftest's: the same XLA as this process
    if variant == "single_thread_eigen":
        flags += " --xla_cpu_multi_thread_eigen=false"
    command = [sys.executable, str(script)]
    if variant == "one_core":
        if shutil.which("taskset") is None:
            pytest.skip("taskset is not installed")
        command = ["taskset", "-c", "0", *command]
    # The new process compiles on its own: no programs from the run's shared compilation cache.
    env = {k: v for k, v in __import__("os").environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    out = subprocess.run(command, capture_output=True, text=True, timeout=120, env={**env, "XLA_FLAGS": flags})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == _train_hash(11)
    assert out.stdout.strip().splitlines()[-2] == _order_hash()  # D5: the same shuffles in another process


def test_d5_epoch_order():
    from kerax.data import epoch_order

    a = epoch_order(50, True, seed=3, epoch=0)
    np.testing.assert_array_equal(a, epoch_order(50, True, seed=3, epoch=0))
    assert not np.array_equal(a, epoch_order(50, True, seed=3, epoch=1))
    assert sorted(a) == list(range(50))
    np.testing.assert_array_equal(epoch_order(5, False, 3, 0), np.arange(5))


def test_validation_uses_the_weights_of_that_epoch():
    x, y = _blobs(n=64)
    model = _mlp()
    model.compile(optimizer=kx.optimizers.Adam(1e-2), loss=SCCE, metrics=["accuracy"])
    history = model.fit(x[:48], y[:48], epochs=1, validation_data=(x[48:], y[48:]), verbose=0, seed=0)
    after = model.evaluate(x[48:], y[48:], verbose=0, return_dict=True)
    assert history.history["val_loss"][0] == pytest.approx(after["loss"], rel=1e-6)
