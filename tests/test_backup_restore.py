"""BackupAndRestore: an interrupted fit resumed with the same call equals an uninterrupted one
bitwise (RELIABILITY C8), and is sensitive to the rng (C9)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import jax
import pytest

import kerax as kx
from kerax import errors
from kerax.training.callbacks.backup import BackupAndRestore

sys.path.insert(0, str(Path(__file__).parent))
from ckpt_worker import model_and_data, weights_hash  # noqa: E402

WORKER = str(Path(__file__).with_name("ckpt_worker.py"))
ROOT = str(Path(__file__).resolve().parents[1])
EPOCHS = 4


class Interrupt(kx.callbacks.Callback):
    """Raises at the end of epoch ``epoch`` (or before batch ``batch`` of it)."""

    def __init__(self, epoch, batch=None):
        super().__init__()
        self.epoch, self.batch, self.current = epoch, batch, -1

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.batch is not None and self.current == self.epoch and batch == self.batch:
            raise KeyboardInterrupt("preempted")

    def on_epoch_end(self, epoch, logs=None):
        if self.batch is None and epoch == self.epoch:
            raise KeyboardInterrupt("preempted")


def _fit(callbacks, **kw):
    model, x, y = model_and_data()
    model.fit(x, y, batch_size=16, epochs=EPOCHS, verbose=0, seed=7, callbacks=callbacks, **kw)
    return model


@pytest.fixture(scope="module")
def straight_hash():
    return weights_hash(_fit([]))


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A backup left by a fit interrupted (an exception) after epoch 2 of 4."""
    backup = tmp_path_factory.mktemp("interrupted") / "backup"
    with pytest.raises(KeyboardInterrupt):
        _fit([BackupAndRestore(backup), Interrupt(1)])
    return backup


def test_exception_after_epoch_two_then_resume_is_bitwise_equal(tmp_path, straight_hash, interrupted):
    backup = tmp_path / "backup"
    shutil.copytree(interrupted, backup)
    assert CheckpointManagerSteps(backup) == 1
    seen = []
    record = kx.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: seen.append(e))
    model = _fit([BackupAndRestore(backup), record])
    assert seen == [2, 3]  # only the epochs not done yet
    assert weights_hash(model) == straight_hash
    assert not backup.exists()  # a finished fit deletes its backup


def CheckpointManagerSteps(backup):
    from kerax.checkpoint import CheckpointManager

    return len(CheckpointManager(backup).all_steps())


def test_sigkill_of_a_process_then_resume_in_a_new_one(tmp_path, straight_hash):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    backup = str(tmp_path / "backup")
    killed = subprocess.run([sys.executable, WORKER, "fit", backup, str(EPOCHS), "1"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = subprocess.run([sys.executable, WORKER, "fit", backup, str(EPOCHS), "-1"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.split()[-1] == straight_hash


def test_resume_without_the_rng_differs(tmp_path, straight_hash, interrupted):
    """Negative control: the same resume with the restored rng replaced gives other weights."""

    class ForgetRng(BackupAndRestore):
        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            self.model._ts = self.model._ts.replace(rng=jax.random.key(0))

    backup = tmp_path / "backup"
    shutil.copytree(interrupted, backup)
    assert weights_hash(_fit([ForgetRng(backup)])) != straight_hash


def test_mid_epoch_backup_resumes_at_the_batch(tmp_path, straight_hash):
    backup = tmp_path / "backup"
    with pytest.raises(KeyboardInterrupt):  # 5 batches an epoch; backups before batches 2, 4
        _fit([BackupAndRestore(backup, save_freq=2), Interrupt(2, batch=3)])
    from kerax.checkpoint import CheckpointManager

    mgr = CheckpointManager(backup)
    assert mgr.metadata(mgr.latest_step())["epoch"] == 2 and mgr.metadata(mgr.latest_step())["batch"] == 2
    batches = []

    class Record(kx.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            batches.append(batch)

    model = _fit([BackupAndRestore(backup, save_freq=2), Record()])
    assert batches[:3] == [2, 3, 4]  # the rest of epoch 2, then epoch 3 from 0
    assert weights_hash(model) == straight_hash


def test_mid_epoch_backup_resumes_unshuffled_data(tmp_path):
    # Unshuffled epochs feed executions cut once; the resumed epoch starts part-way, by tables.
    straight = weights_hash(_fit([], shuffle=False))
    backup = tmp_path / "backup"
    with pytest.raises(KeyboardInterrupt):
        _fit([BackupAndRestore(backup, save_freq=2), Interrupt(2, batch=3)], shuffle=False)
    assert weights_hash(_fit([BackupAndRestore(backup, save_freq=2)], shuffle=False)) == straight
    assert straight != weights_hash(_fit([]))  # the orders differ, so the check can fail


def test_mid_epoch_backup_with_steps_per_execution(tmp_path, straight_hash):
    def run(callbacks):
        model, x, y = model_and_data()
        model.compile(optimizer=kx.optimizers.Adam(0.01),
                      loss=kx.losses.SparseCategoricalCrossentropy(from_logits=True), steps_per_execution=2)
        model.fit(x, y, batch_size=16, epochs=EPOCHS, verbose=0, seed=7, callbacks=callbacks)
        return weights_hash(model)

    straight = straight_hash  # groups of 2 steps compute what single steps do
    backup = tmp_path / "backup"
    with pytest.raises(KeyboardInterrupt):
        run([BackupAndRestore(backup, save_freq=2), Interrupt(1, batch=4)])
    assert run([BackupAndRestore(backup, save_freq=2)]) == straight


def test_keep_backup_when_asked_and_after_a_changed_model(tmp_path):
    backup = tmp_path / "backup"
    _fit([BackupAndRestore(backup, delete_checkpoint=False)])
    assert CheckpointManagerSteps(backup) == 1
    model = kx.Sequential([kx.layers.Dense(8, input_shape=(4,)), kx.layers.Dense(3)])
    model.compile(optimizer="adam", loss=kx.losses.SparseCategoricalCrossentropy(from_logits=True))
    _, x, y = model_and_data()
    with pytest.raises(errors.IncompatibleCheckpointError, match="params/dense"):
        model.fit(x, y, epochs=1, verbose=0, seed=7, callbacks=[BackupAndRestore(backup)])
    assert CheckpointManagerSteps(backup) == 1  # nothing overwritten


def test_bad_arguments():
    with pytest.raises(errors.ConfigError, match="save_freq must be 'epoch' or a positive int; received 0"):
        BackupAndRestore("b", save_freq=0)
    with pytest.raises(errors.ConfigError, match="backup_dir must be a directory path"):
        BackupAndRestore("")


def test_mid_epoch_resume_of_an_iterable_is_refused(tmp_path):
    model, x, y = model_and_data()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, seed=7)

    class Resume(kx.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.model._resume_epoch, self.model._resume_batch = 0, 2

    batches = ((x[i:i + 16], y[i:i + 16]) for i in range(0, 80, 16))
    with pytest.raises(errors.ConfigError, match="resuming in the middle of an epoch needs in-memory arrays"):
        model.fit(batches, epochs=1, steps_per_epoch=5, verbose=0, callbacks=[Resume()])
