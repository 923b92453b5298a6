"""DP-SGD through the Keras shell: the privacy ledger of fit (multi-process sample rate,
interrupted runs, delta warnings, train_on_batch) and the dp setting in saved models."""

from __future__ import annotations

import json
import shutil
import types
import warnings
import zipfile
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

import kerax as kx
from kerax import errors, layers
from kerax.models.trainer import _account_privacy, _dp_segment, _training_rows
from kerax.privacy import accountant

SCE = kx.losses.SparseCategoricalCrossentropy(from_logits=True)
FIXTURE = Path(__file__).parent / "fixtures" / "model_v1.kerax"


def _mlp():
    return kx.Sequential([kx.Input((5,)), layers.Dense(8, activation="tanh"), layers.Dense(3)])


def _data(n, seed=0):
    rs = np.random.RandomState(seed)
    return rs.randn(n, 5).astype(np.float32), rs.randint(0, 3, n).astype(np.int32)


def _steps(model) -> int:
    return sum(s.steps for s in accountant.ledger_of(model))


# -- finding 4: multi-process sample rate -------------------------------------------------------


def test_multi_process_sample_rate_uses_the_global_row_count(monkeypatch):
    # Two processes, each passing fit its own 50 rows, global batch 20: q = 20 / 100.
    # The computation is checked directly, with two processes simulated (a real two-process
    # DP fit was run once by hand: sample_rate 0.2, epsilon 2.912).
    dp = kx.privacy.DPSGD(1.0, 1.0, delta=1e-3)
    model = types.SimpleNamespace(_compiled=types.SimpleNamespace(
        dp=dp, distribute=types.SimpleNamespace(multi_process=True)))
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    x = np.zeros((50, 5), np.float32)
    spent = _account_privacy(model, dp, lambda: _dp_segment(model, dp, x, 20, 0.0), 5)
    assert accountant.ledger_of(model) == (accountant.Segment(5, 1.0, 0.2),)
    assert spent.epsilon == pytest.approx(kx.privacy.compute_epsilon(5, 1.0, 0.2, 1e-3), rel=1e-12)
    assert _training_rows(model, x, 0.0) == 100
    assert _training_rows(model, x, 0.2) == 80  # each process keeps int(50 * 0.8) rows
    # One process (or no data parallelism): the rows fit was given.
    model._compiled.distribute = None
    assert _training_rows(model, x, 0.0) == 50


# -- finding 2: an interrupted distributed fit ---------------------------------------------------


class _StopAfter(kx.callbacks.Callback):
    def __init__(self, batches):
        super().__init__()
        self.batches, self.seen = batches, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.batches:
            raise KeyboardInterrupt


@pytest.mark.parametrize("shard", [False, True])
def test_an_interrupted_fit_records_the_steps_that_ran(shard):
    x, y = _data(64)
    model = _mlp()
    model.compile(optimizer=optax.sgd(0.1), loss=SCE, dp=kx.privacy.DPSGD(1.0, 1.0, delta=1e-3),
                  distribute=kx.distribute.DataParallel(mode="shard") if shard else None)
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, batch_size=8, epochs=3, verbose=0, seed=0, callbacks=[_StopAfter(3)])
    assert _steps(model) == 3
    # The model holds the weights of those 3 steps and trains on.
    assert int(model._ts.step) == 3
    assert all(np.isfinite(w).all() for w in model.get_weights())
    h = model.fit(x, y, batch_size=8, epochs=1, verbose=0, seed=0)
    assert h.privacy.steps == 3 + 8 and int(model._ts.step) == 11


# -- finding 3: save / load keep dp ----------------------------------------------------------------


def test_save_and_load_keep_the_dp_setting(tmp_path):
    x, y = _data(32)
    dp = kx.privacy.DPSGD(1.0, 1.1, microbatches=4, delta=1e-3)
    model = _mlp()
    model.compile(optimizer=kx.optimizers.SGD(0.1), loss=SCE, dp=dp)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, seed=0)
    path = tmp_path / "dp.kerax"
    model.save(path)
    with zipfile.ZipFile(path) as zf:
        saved = json.loads(zf.read("compile.json"))["dp"]
        version = json.loads(zf.read("metadata.json"))["format_version"]
    assert saved == {"l2_norm_clip": 1.0, "noise_multiplier": 1.1, "microbatches": 4, "delta": 1e-3}
    assert version == 2  # a kerax that reads version 1 only refuses it instead of dropping dp
    loaded = kx.load_model(path)
    assert loaded._compiled.dp == dp
    # The ledger is saved: the loaded model's epsilon counts the steps behind its weights.
    first = accountant.Segment(4, 0.55, 0.25)
    assert accountant.ledger_of(loaded) == (first,)
    assert kx.privacy.privacy_spent(loaded) == kx.privacy.privacy_spent(model)
    h = loaded.fit(x, y, batch_size=8, epochs=1, verbose=0, seed=0)
    assert h.privacy.steps == 8 and accountant.ledger_of(loaded) == (accountant.Segment(8, 0.55, 0.25),)
    assert h.privacy.epsilon == pytest.approx(kx.privacy.compute_epsilon(8, 0.55, 0.25, 1e-3), rel=1e-12)
    # Uncompiled, the loaded model reports at the saved run's delta (1e-3), not the default.
    assert kx.privacy.privacy_spent(kx.load_model(path, compile=False)) == kx.privacy.privacy_spent(model)
    # Without the optimizer the file still says what the weights cost.
    model.save(tmp_path / "weights_only.kerax", include_optimizer=False)
    assert accountant.ledger_of(kx.load_model(tmp_path / "weights_only.kerax")) == (first,)


def test_a_malformed_saved_ledger_is_refused(tmp_path):
    x, y = _data(32)
    model = _mlp()
    model.compile(optimizer=kx.optimizers.SGD(0.1), loss=SCE, dp=kx.privacy.DPSGD(1.0, 1.0, delta=1e-3))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, seed=0)
    path, bad = tmp_path / "dp.kerax", tmp_path / "bad.kerax"
    model.save(path)
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    meta = json.loads(members["metadata.json"])
    assert meta["privacy_ledger"] == [[4, 1.0, 0.25]]
    for ledger, message in (([[2, 1.0, 1.5]], r" entry 0: expected \[steps >= 0, .*received \[2, 1.0, 1.5\]"),
                            ({"steps": 2}, r": expected a list of \[steps, noise_multiplier, sample_rate\]; received dict")):
        members["metadata.json"] = json.dumps({**meta, "privacy_ledger": ledger}).encode()
        with zipfile.ZipFile(bad, "w") as zf:
            for name, blob in members.items():
                zf.writestr(name, blob)
        with pytest.raises(errors.CorruptFileError, match=r"metadata.json: malformed privacy_ledger \(privacy ledger" + message):
            kx.load_model(bad)


# -- a fit resumed from a backup accounts for the steps behind the restored weights ------------------


class _FailAtEpochEnd(kx.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise RuntimeError("preempted")


@pytest.mark.parametrize("fresh_model", [False, True])
def test_resumed_fit_counts_the_steps_before_the_backup_once(tmp_path, fresh_model):
    x, y = _data(32)
    dp = kx.privacy.DPSGD(1.0, 1.0, delta=1e-3)

    def compiled():
        model = _mlp()
        model.compile(optimizer=kx.optimizers.SGD(0.1), loss=SCE, dp=dp)
        return model

    model = compiled()
    earlier = model.fit(x, y, batch_size=8, epochs=1, verbose=0, seed=1).privacy  # before the backed-up run
    backup = kx.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(RuntimeError, match="preempted"):  # epoch 1 backed up, then the fit failed
        model.fit(x, y, batch_size=8, epochs=3, verbose=0, seed=0, callbacks=[backup, _FailAtEpochEnd()])
    if fresh_model:  # a new process: the model comes from its saved file, the backup from disk
        model.save(tmp_path / "m.kerax")
        model = kx.load_model(tmp_path / "m.kerax")
    h = model.fit(x, y, batch_size=8, epochs=3, verbose=0, seed=0,
                  callbacks=[kx.callbacks.BackupAndRestore(str(tmp_path / "backup"))])
    # The weights come from the 4 steps before, the 8 of epochs 0 and 1, and the resumed
    # epoch 2's 4; the failed attempt's own record (its 8 steps) is not counted again.
    assert earlier.steps == 4 and h.privacy.steps == 4 + 8 + 4
    assert accountant.ledger_of(model) == (accountant.Segment(16, 1.0, 0.25),)  # one noise and rate: merged
    assert h.privacy.epsilon == pytest.approx(kx.privacy.compute_epsilon(16, 1.0, 0.25, 1e-3), rel=1e-12)


def test_a_resume_at_another_batch_size_keeps_each_part_at_its_own_rate(tmp_path):
    x, y = _data(32)
    model = _mlp()
    model.compile(optimizer=kx.optimizers.SGD(0.1), loss=SCE, dp=kx.privacy.DPSGD(1.0, 1.0, delta=1e-3))
    with pytest.raises(RuntimeError, match="preempted"):  # epochs 0 and 1 at batch 16 backed up
        model.fit(x, y, batch_size=16, epochs=3, verbose=0, seed=0,
                  callbacks=[kx.callbacks.BackupAndRestore(str(tmp_path)), _FailAtEpochEnd()])
    before = accountant.Segment(4, 1.0, 0.5)
    plain = _mlp()  # a model compiled without dp= restores the record too (no DP steps after)
    plain.compile(optimizer=kx.optimizers.SGD(0.1), loss=SCE)
    shutil.copytree(tmp_path, tmp_path.parent / f"{tmp_path.name}_copy")
    plain.fit(x, y, batch_size=8, epochs=3, verbose=0, seed=0,
              callbacks=[kx.callbacks.BackupAndRestore(str(tmp_path.parent / f"{tmp_path.name}_copy"))])
    assert accountant.ledger_of(plain) == (before,)
    model.fit(x, y, batch_size=8, epochs=3, verbose=0, seed=0, callbacks=[kx.callbacks.BackupAndRestore(str(tmp_path))])
    assert accountant.ledger_of(model) == (before, accountant.Segment(4, 1.0, 0.25))  # epoch 2 at batch 8


def test_a_save_during_a_dp_fit_and_quantize_record_the_steps_behind_the_weights(tmp_path):
    x, y = _data(32)
    model = _mlp()
    model.compile(optimizer=kx.optimizers.SGD(0.1), loss=SCE, dp=kx.privacy.DPSGD(1.0, 1.0, delta=1e-3))
    ckpt = kx.callbacks.ModelCheckpoint(str(tmp_path / "e{epoch}.kerax"))
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, seed=0, callbacks=[ckpt])
    for epoch in (1, 2):  # Keras numbers the files from 1: after 4 and 8 steps
        loaded = kx.load_model(tmp_path / f"e{epoch}.kerax")
        assert accountant.ledger_of(loaded) == (accountant.Segment(4 * epoch, 1.0, 0.25),)
    assert accountant.ledger_of(kx.quantize(model)) == accountant.ledger_of(model) == (accountant.Segment(8, 1.0, 0.25),)


def test_a_backup_without_a_privacy_record_warns_a_dp_fit(tmp_path):
    x, y = _data(32)
    plain = _mlp()
    plain.compile(optimizer=kx.optimizers.SGD(0.1), loss=SCE)
    with pytest.raises(RuntimeError, match="preempted"):
        plain.fit(x, y, batch_size=8, epochs=3, verbose=0, seed=0,
                  callbacks=[kx.callbacks.BackupAndRestore(str(tmp_path)), _FailAtEpochEnd()])
    model = _mlp()
    model.compile(optimizer=kx.optimizers.SGD(0.1), loss=SCE, dp=kx.privacy.DPSGD(1.0, 1.0, delta=1e-3))
    with pytest.warns(UserWarning, match=r"holds no privacy record .* epsilon counts only the steps from here"):
        h = model.fit(x, y, batch_size=8, epochs=3, verbose=0, seed=0, callbacks=[kx.callbacks.BackupAndRestore(str(tmp_path))])
    assert h.privacy.steps == 4  # epoch 2 only


def test_files_without_dp_load_without_dp_and_a_bad_dp_is_refused(tmp_path):
    assert kx.load_model(FIXTURE)._compiled.dp is None  # written before dp was saved
    with zipfile.ZipFile(FIXTURE) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    conf = json.loads(members["compile.json"])
    bad = tmp_path / "bad.kerax"

    def write_with(dp: dict) -> None:
        members["compile.json"] = json.dumps({**conf, "dp": dp}).encode()
        with zipfile.ZipFile(bad, "w") as zf:
            for name, blob in members.items():
                zf.writestr(name, blob)

    write_with({"l2_norm_clip": -1.0, "noise_multiplier": 1.0, "microbatches": None, "delta": 1e-5})
    with pytest.raises(errors.CorruptFileError, match=r"compile.json: malformed dp setting \(DPSGD: "
                                                      r"l2_norm_clip must be a finite number > 0; received -1.0\)"):
        kx.load_model(bad)
    write_with({"l2_norm_clip": 1.0, "noise_multiplier": 1.0, "clip": 2})
    with pytest.raises(errors.CorruptFileError, match=r"malformed dp setting \(DPSGD.from_config: expected a dict "
                                                      r"with keys \['delta', 'l2_norm_clip'.*received \['clip'"):
        kx.load_model(bad)


# -- finding 8: delta >= 1/n ------------------------------------------------------------------------


def test_delta_not_below_one_over_n_warns():
    x, y = _data(100)
    model = _mlp()
    model.compile(optimizer=optax.sgd(0.1), loss=SCE, dp=kx.privacy.DPSGD(1.0, 1.0, delta=0.05))
    with pytest.warns(UserWarning, match=r"delta=0.05 is not below 1/n = 0.01 \(n=100 training examples\).*"
                                         r"delta=0.001"):
        model.fit(x, y, batch_size=50, epochs=1, verbose=0, seed=0)
    with pytest.warns(UserWarning, match=r"delta=1e-05 is not below 1/n = 1e-06 \(n=1000000"):
        kx.privacy.DPSGD(1.0, 1.0).epsilon(1_000_000, 1000, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # delta below 1/n: no warning
        kx.privacy.DPSGD(1.0, 1.0, delta=1e-3).epsilon(100, 10, 1)
        assert accountant.delta_warning(0.0099, 100) is None


# -- finding 13 (documented behaviour): train_on_batch ----------------------------------------------


def test_train_on_batch_records_each_call_at_sample_rate_one():
    x, y = _data(10)
    model = _mlp()
    model.compile(optimizer=optax.sgd(0.1), loss=SCE, dp=kx.privacy.DPSGD(1.0, 1.0, delta=1e-3))
    model.train_on_batch(x, y)
    model.train_on_batch(x, y)
    assert accountant.ledger_of(model) == (accountant.Segment(2, 1.0, 1.0),)
    assert accountant.extend((accountant.Segment(2, 1.0, 1.0),), accountant.Segment(3, 1.0, 0.5)) == (
        accountant.Segment(2, 1.0, 1.0), accountant.Segment(3, 1.0, 0.5))


def test_a_malformed_privacy_record_in_a_backup_is_refused():
    backup = kx.callbacks.BackupAndRestore("unused")
    backup.model = types.SimpleNamespace(_steps_executed=5)
    for record in ({"ledger": [[1, 1.0, 2.0]]}, {"ledger": {}}, {}, [1]):
        with pytest.raises(errors.CorruptFileError, match=r"BackupAndRestore: unused: malformed privacy record"):
            backup._restore_ledger(record)
    backup._restore_ledger({"ledger": [[3, 1.0, 0.5]]})
    assert backup.model._privacy_ledger == (accountant.Segment(3, 1.0, 0.5),) and backup.model._fit_steps_base == 5
