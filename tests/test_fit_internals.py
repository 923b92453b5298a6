"""What the fit loop does for speed must not change what it computes: the epoch's index
tables, the train state built in one program, and weights copied from it only when read."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest

import kerax as kx
from kerax import layers
from kerax.training.loop import index_groups, index_tables
from kerax.training.steps import TrainStep
from kerax.training.train_state import fresh


@pytest.mark.parametrize("n", [1, 7, 9, 64, 130])
@pytest.mark.parametrize("batch,k,steps", [(1, 1, None), (3, 2, None), (8, 3, 5), (32, 16, None), (8, 16, 40)])
def test_index_tables_hold_the_executions_in_order(n, batch, k, steps):
    order = np.random.default_rng(n).permutation(n)
    expected = index_groups(order, batch, k, steps)
    tables = index_tables(order, batch, k, steps)
    flat = [execution for table in tables for execution in table]
    assert len(flat) == len(expected)
    for got, want in zip(flat, expected):
        np.testing.assert_array_equal(got, want)
    # Every row of the epoch appears once (up to the step limit), batches in order.
    rows = np.concatenate([e.reshape(-1) for e in flat]) if flat else np.zeros(0, int)
    limit = n if steps is None else min(n, steps * batch)
    np.testing.assert_array_equal(rows, order[:limit])


@pytest.mark.parametrize("seed", [0, 7, 2**31 - 1, 2**40, -3])
def test_fresh_state_key_is_the_seed_folded_in(seed):
    ts = fresh({"w": np.ones(3, np.float32)}, {}, optax.adam(1e-3), seed, (1,))
    want = jax.random.fold_in(jax.random.key(seed), 1)
    np.testing.assert_array_equal(jax.random.key_data(ts.rng), jax.random.key_data(want))
    assert int(ts.step) == 0
    # Adam's moments start at zero, as optax's own init makes them.
    ref = optax.adam(1e-3).init({"w": np.ones(3, np.float32)})
    for a, b in zip(jax.tree.leaves(ts.opt_state), jax.tree.leaves(ref)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _model():
    model = kx.Sequential([layers.Dense(8, activation="relu", input_shape=(4,)), layers.Dense(3)])
    model.compile(optimizer=kx.optimizers.SGD(0.1), loss=kx.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _data(n=64):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 4)).astype(np.float32), rng.integers(0, 3, n).astype(np.int32)


def test_weights_read_before_fit_stay_usable_and_unchanged():
    model = _model()
    model.build((None, 4), seed=0)
    before = model.params
    kernel = np.asarray(before["dense"]["kernel"]).copy()
    model.fit(*_data(), batch_size=16, epochs=2, verbose=0, seed=0)
    np.testing.assert_array_equal(np.asarray(before["dense"]["kernel"]), kernel)  # not donated
    assert not np.allclose(np.asarray(model.params["dense"]["kernel"]), kernel)  # trained


class _Spy(kx.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seen = []

    def on_train_batch_end(self, batch, logs=None):
        self.seen.append(np.asarray(self.model.params["dense_1"]["bias"]).copy())


def test_weights_read_during_fit_are_the_current_ones():
    x, y = _data(32)
    spy = _Spy()
    model = _model()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, seed=0, shuffle=False, callbacks=[spy])
    # The same training one batch at a time: the weights after each step.
    ref = _model()
    ref.build((None, 4), seed=0)
    ref.set_weights(_model_weights_at_start(seed=0))
    expected = []
    for i in range(2):
        ref.fit(x[16 * i:16 * (i + 1)], y[16 * i:16 * (i + 1)], batch_size=16, epochs=1, verbose=0, seed=0,
                shuffle=False)
        expected.append(np.asarray(ref.params["dense_1"]["bias"]))
    assert len(spy.seen) == 2
    for got, want in zip(spy.seen, expected):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(model.params["dense_1"]["bias"]), expected[-1], rtol=1e-6, atol=1e-7)


def _model_weights_at_start(seed):
    m = _model()
    m.build((None, 4), seed=seed)
    return m.get_weights()


class _Zero(kx.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            self.model.params = jax.tree.map(np.zeros_like, self.model.params)


def test_weights_a_callback_assigns_are_trained_from():
    x, y = _data()
    model = _model()
    model.fit(x, y, batch_size=64, epochs=2, verbose=0, seed=0, callbacks=[_Zero()])
    # With every weight zero, one SGD step on the full batch moves only the output bias
    # (the ReLU layer's gradients are zero): a trace of training from the assigned weights.
    assert np.all(np.asarray(model.params["dense"]["kernel"]) == 0)
    assert np.all(np.asarray(model.params["dense_1"]["kernel"]) == 0)
    counts = np.bincount(y, minlength=3) / len(y)
    np.testing.assert_allclose(np.asarray(model.params["dense_1"]["bias"]), 0.1 * (counts - 1 / 3), rtol=1e-5)


class _ZeroMidEpoch(kx.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == 0:
            self.model.params = jax.tree.map(np.zeros_like, self.model.params)


def test_weights_a_callback_assigns_mid_epoch_take_effect_at_the_next_step():
    x, y = _data()
    model = _model()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, seed=0, shuffle=False, callbacks=[_ZeroMidEpoch()])
    # The second step started from zeros: only the output bias moved (see above).
    assert np.all(np.asarray(model.params["dense"]["kernel"]) == 0)
    counts = np.bincount(y[32:], minlength=3) / 32
    np.testing.assert_allclose(np.asarray(model.params["dense_1"]["bias"]), 0.1 * (counts - 1 / 3), rtol=1e-5)


def _compiles(records: list, name: str) -> list:
    return [r for r in records if f"Finished XLA compilation of jit({name})" in r.getMessage()]


def _precompile_fit(x, y):
    model = kx.Sequential([kx.Input((5,)), layers.Dense(7, activation="relu"), layers.Dense(2)])
    model.compile(optimizer="adam", loss=kx.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0, seed=0)
    return history.history, [np.asarray(w) for w in model.get_weights()]


def test_first_fit_compiles_its_train_step_once_on_the_precompile_thread(caplog, monkeypatch):
    x = np.random.default_rng(0).normal(size=(48, 5)).astype(np.float32)
    y = (x.sum(1) > 0).astype(np.int32)
    jax.config.update("jax_log_compiles", True)  # globally: a context would not reach the thread
    try:
        with caplog.at_level("WARNING", logger="jax"):
            logs, weights = _precompile_fit(x, y)
    finally:
        jax.config.update("jax_log_compiles", False)
    runs = _compiles(caplog.records, "_run")
    assert [r.threadName for r in runs] == ["kerax-precompile"]  # once, in the thread
    assert [r.threadName for r in _compiles(caplog.records, "_compute_jit")] == ["MainThread"]
    # Without it, fit trains the same: the same logs and weights.
    monkeypatch.setattr(TrainStep, "precompile", lambda self, *a: None)
    ref_logs, ref_weights = _precompile_fit(x, y)
    assert logs == ref_logs
    for a, b in zip(weights, ref_weights):
        np.testing.assert_array_equal(a, b)


def test_a_step_that_fails_to_trace_raises_from_fit_as_before():
    def bad_loss(y_true, y_pred):
        raise kx.errors.ShapeError("bad_loss expected nothing; received a call")

    model = kx.Sequential([kx.Input((3,)), layers.Dense(2)])
    model.compile(optimizer="sgd", loss=bad_loss)
    with pytest.raises(kx.errors.ShapeError, match="bad_loss expected nothing; received a call"):
        model.fit(np.zeros((8, 3), np.float32), np.zeros((8, 2), np.float32), batch_size=4, verbose=0)


_LEAVES_EARLY = """
import os, sys
sys.path.insert(0, {root!r})
import numpy as np
import kerax as kx
from kerax import layers

class Stop(kx.callbacks.Callback):
    def on_train_begin(self, logs=None):
        raise RuntimeError("stop before the first step")

model = kx.Sequential([kx.Input((64,))] + [layers.Dense(64, activation="relu") for _ in range(12)] + [layers.Dense(2)])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", steps_per_execution=4)
try:
    model.fit(np.zeros((64, 64), np.float32), np.zeros(64, np.int32), batch_size=8, verbose=0, callbacks=[Stop()])
except RuntimeError as e:
    print("raised:", e)
"""


def test_fit_that_stops_before_its_first_step_leaves_no_compile_running(tmp_path):
    # The precompile thread is joined when fit leaves: a daemon thread still inside XLA
    # when the interpreter exits aborts the process (SIGABRT) instead of exiting cleanly.
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "leave_early.py"
    script.write_text(_LEAVES_EARLY.format(root=str(Path(__file__).resolve().parents[1])))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "raised: stop before the first step" in done.stdout


def test_a_second_fit_on_the_same_shapes_starts_no_compile_thread(monkeypatch):
    model = _model()
    model.fit(*_data(), batch_size=16, epochs=1, verbose=0, seed=0)
    started = []
    monkeypatch.setattr("threading.Thread.start", lambda self: started.append(self.name))
    model.fit(*_data(), batch_size=16, epochs=1, verbose=0, seed=0)
    assert "kerax-precompile" not in started


@pytest.mark.parametrize("k,steps", [(1, None), (3, None), (1, 3), (3, 6)])
def test_unshuffled_data_is_cut_once_and_trains_as_the_index_tables_do(monkeypatch, k, steps):
    """shuffle=False feeds executions cut once on the device (no row gather per step); the
    same rows fed through index tables (an identity "shuffle") give bitwise the same fit."""
    from kerax.training import loop

    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(70, 4)).astype(np.float32), rng.integers(0, 3, 70).astype(np.int32)
    sw = rng.uniform(0.5, 2.0, 70).astype(np.float32)  # 70 = 4 batches of 16 and one of 6

    def run(shuffle):
        model = kx.Sequential([kx.Input((4,)), layers.Dense(8, activation="relu"), layers.Dense(3)])
        model.compile(optimizer=kx.optimizers.Adam(0.01), metrics=["accuracy"], steps_per_execution=k,
                      loss=kx.losses.SparseCategoricalCrossentropy(from_logits=True))
        history = model.fit(x, y, sample_weight=sw, batch_size=16, epochs=2, shuffle=shuffle,
                            steps_per_epoch=steps, verbose=0, seed=1)
        return history.history, model.get_weights()

    cuts = []

    class Spy(loop._Cut):
        def __init__(self, *args):
            super().__init__(*args)
            cuts.append(self)

    monkeypatch.setattr(loop, "_Cut", Spy)
    logs, weights = run(shuffle=False)
    assert len(cuts) == 1  # cut once for both epochs
    executions = cuts[0].executions
    want = 5 if steps is None else steps
    assert sum(e[0].shape[0] for e in executions) == min(want, 5)  # batches, k per execution at most
    np.testing.assert_array_equal(np.asarray(executions[0][0][0]), x[:16])
    monkeypatch.setattr(loop, "epoch_order", lambda n, shuffle, seed, epoch: np.arange(n))
    ref_logs, ref_weights = run(shuffle=True)
    assert logs == ref_logs
    for a, b in zip(weights, ref_weights):
        np.testing.assert_array_equal(a, b)


def test_unshuffled_dict_inputs_are_cut_as_the_index_tables_take_them(monkeypatch):
    from kerax.training import loop

    rng = np.random.default_rng(4)
    x = {"a": rng.normal(size=(10, 3)).astype(np.float32), "b": rng.normal(size=(10, 2)).astype(np.float32)}
    y = rng.normal(size=(10, 2)).astype(np.float32)

    def run(shuffle):
        a, b = kx.Input((3,), name="a"), kx.Input((2,), name="b")
        model = kx.Model({"a": a, "b": b}, layers.Dense(2)(layers.Concatenate()([a, b])))
        model.compile(optimizer=kx.optimizers.SGD(0.1), loss="mse")
        history = model.fit(x, y, batch_size=4, epochs=2, shuffle=shuffle, verbose=0, seed=0)
        return history.history["loss"], model.get_weights()

    logs, weights = run(shuffle=False)
    monkeypatch.setattr(loop, "epoch_order", lambda n, shuffle, seed, epoch: np.arange(n))
    ref_logs, ref_weights = run(shuffle=True)
    assert logs == ref_logs
    for p, q in zip(weights, ref_weights):
        np.testing.assert_array_equal(p, q)


def test_fit_waits_once_per_depth_executions_and_bounds_the_queue(monkeypatch):
    """In-memory data: the host waits on the older half of the queue at once (a wait per
    step costs XLA:CPU a core), 4 deep until its first wait has timed the steps;
    iterables keep the short fixed queue that bounds their batches."""
    from kerax.training import loop

    assert loop.in_flight_depth() == 4 and loop.in_flight_depth(streamed=True) == 2
    assert loop.in_flight_depth(distributed=True) == 2
    assert loop.wake_period() == loop.WAKE_PERIOD_S
    assert loop.wake_period(streamed=True) is None and loop.wake_period(distributed=True) is None
    seen = []
    execute = loop._Trainer.execute

    def recording(self, *args, **kwargs):
        out = execute(self, *args, **kwargs)
        seen.append((len(self.pending), self.pending.depth))
        return out

    monkeypatch.setattr(loop._Trainer, "execute", recording)
    monkeypatch.setattr(loop, "WAKE_PERIOD_S", 100.0)  # any step of this tiny model is far shorter
    x = np.random.default_rng(0).normal(size=(100, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    model = kx.Sequential([kx.Input((3,)), layers.Dense(2)])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=2, epochs=2, shuffle=False, verbose=0)  # 50 executions an epoch
    sizes = [n for n, _ in seen]
    # In flight after each execution: 1..7, then 8 -> a wait leaves 4 and times those 4
    # steps: far less than the period, so the depth becomes the largest, and no more waits.
    assert sizes[:7] == list(range(1, 8)) and seen[7] == (4, loop.MAX_DEPTH)
    assert all(d == 4 for _, d in seen[:7])
    assert sizes[8:50] == list(range(5, 47))
    assert seen[50] == (1, loop.MAX_DEPTH)  # the next epoch: a fresh queue, the learned depth
    seen.clear()
    batches = [(x[i:i + 2], y[i:i + 2]) for i in range(0, 20, 2)]
    model.fit(iter(batches), epochs=1, steps_per_epoch=10, verbose=0)
    assert [n for n, _ in seen][:5] == [1, 2, 3, 2, 3] and max(n for n, _ in seen) == 3  # streamed: depth 2


def test_in_flight_depth_follows_the_measured_step_time():
    """With a period, each wait sets the depth to the executions that take ``period``, by
    the time the waited-through executions took since the previous wait returned (or since
    the first push)."""
    from kerax.training.loop import MAX_DEPTH, MIN_DEPTH, InFlight

    now, waited = [0.0], []

    class Token:
        def block_until_ready(self):
            waited.append(now[0])

    q = InFlight(4, period=1.0, clock=lambda: now[0])
    q.push(Token())  # the clock starts at the first push
    now[0] = 0.4
    for _ in range(7):  # at 8 queued: the 4 executions waited through took 0.4 s; 10 take 1 s
        q.push(Token())
    assert (q.depth, q.since, len(q), waited) == (10, 0.4, 4, [0.4])
    now[0] += 5.0
    for _ in range(16):  # 10 executions of 0.5 s each: the floor
        q.push(Token())
    assert (q.depth, len(q), len(waited)) == (MIN_DEPTH, 10, 2)
    now[0] += 1e-6
    q.push(Token())  # very fast executions: the ceiling
    assert (q.depth, len(waited)) == (MAX_DEPTH, 3)
    q.restart(4, period=1.0)  # a new epoch keeps the learned depth, drops the clock and the queue
    assert (q.depth, q.since, len(q)) == (MAX_DEPTH, None, 0)
    q.restart(4)  # a fixed queue (iterables) takes the depth it is given
    assert (q.depth, q.period) == (4, None)


def test_in_flight_waits_on_the_newest_of_the_older_half():
    """``InFlight(3)``: nothing waits until 6 are queued; then the third oldest is waited on
    (executions finish in order) and the three oldest leave the queue."""
    from kerax.training.loop import InFlight

    waited = []

    class Token:
        def __init__(self, i):
            self.i = i

        def block_until_ready(self):
            waited.append(self.i)

    q, sizes = InFlight(3), []
    for i in range(12):
        q.push(Token(i))
        sizes.append(len(q))
    assert waited == [2, 5, 8] and sizes == [1, 2, 3, 4, 5, 3, 4, 5, 3, 4, 5, 3]
