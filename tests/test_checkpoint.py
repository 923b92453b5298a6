"""CheckpointManager: round trip, retention, atomicity under SIGKILL, failed saves, mismatches
(RELIABILITY C1-C5, C10)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kerax import errors
from kerax.saving import checkpoint as ckpt
from kerax.saving.checkpoint import CheckpointManager
from kerax.training.callbacks import Callback
from kerax.training.train_state import TrainState

WORKER = str(Path(__file__).with_name("ckpt_worker.py"))
ROOT = str(Path(__file__).resolve().parents[1])


def _ts(value=1.0, tx=None, extra=False, rng=3):
    params = {"dense": {"kernel": jnp.full((3, 2), value), "bias": jnp.zeros(2, jnp.bfloat16)}}
    if extra:
        params["dense_1"] = {"kernel": jnp.ones((2, 2))}
    state = {"bn": {"moving_mean": jnp.full((2,), value)}}
    return TrainState.create(None, params, state, tx or optax.adam(1e-3), jax.random.key(rng))


def _trained(ts, n=3):
    for _ in range(n):
        ts = ts.apply_gradients(jax.tree.map(jnp.ones_like, ts.params))
    return ts


def _leaves(ts):
    return [np.asarray(x) for x in jax.tree.leaves((ts.step, ts.params, ts.state, ts.opt_state))] + [
        np.asarray(jax.random.key_data(ts.rng))]


def _same(a, b):
    la, lb = _leaves(a), _leaves(b)
    return len(la) == len(lb) and all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(la, lb))


# -- round trip and format -------------------------------------------------------------------


def test_round_trip_restores_every_field_bitwise(tmp_path):
    ts = _trained(_ts())
    mgr = CheckpointManager(tmp_path)
    mgr.save(3, ts, {"epoch": 1, "metrics": {"loss": np.float32(0.25)}})
    out, meta = mgr.restore(_ts(value=0.0, rng=9))
    assert _same(out, ts)
    assert out.tx is not None and int(out.step) == 3
    assert str(jax.random.key_impl(out.rng)) == str(jax.random.key_impl(ts.rng))
    assert meta == {"epoch": 1, "metrics": {"loss": 0.25}}
    assert out.params["dense"]["bias"].dtype == jnp.bfloat16


def test_directory_layout_and_manifest(tmp_path):
    mgr = CheckpointManager(tmp_path)
    mgr.save(5, _ts(), {"epoch": 0})
    assert sorted(os.listdir(tmp_path)) == ["step_5"]
    assert sorted(os.listdir(tmp_path / "step_5")) == sorted([ckpt.DATA_FILE, ckpt.MANIFEST_FILE, ckpt.COMMIT_FILE])
    manifest = json.loads((tmp_path / "step_5" / ckpt.MANIFEST_FILE).read_text())
    assert manifest["format"] == ckpt.FORMAT and manifest["rng_impl"] == "threefry2x32"
    assert "opt_state/0/mu/dense/kernel" in manifest["tensors"]
    assert manifest["tensors"]["params/dense/bias"]["dtype"] == "bfloat16"


def test_latest_and_all_steps_ignore_uncommitted(tmp_path):
    mgr = CheckpointManager(tmp_path, max_to_keep=None)
    assert mgr.latest_step() is None and mgr.all_steps() == []
    for s in (1, 10, 2):
        mgr.save(s, _ts(float(s)))
    (tmp_path / "step_11").mkdir()  # no COMMIT: never listed
    (tmp_path / f".tmp-step_12-{mgr.host}-{os.getpid()}").mkdir()
    assert mgr.all_steps() == [1, 2, 10] and mgr.latest_step() == 10
    out, _ = mgr.restore(_ts(0.0))
    assert float(out.params["dense"]["kernel"][0, 0]) == 10.0
    out, _ = mgr.restore(_ts(0.0), step=2)
    assert float(out.params["dense"]["kernel"][0, 0]) == 2.0


def test_resaving_a_step_replaces_it(tmp_path):
    mgr = CheckpointManager(tmp_path)
    mgr.save(1, _ts(1.0))
    mgr.save(1, _ts(7.0))
    assert mgr.all_steps() == [1]
    assert float(mgr.restore(_ts(0.0))[0].params["dense"]["kernel"][0, 0]) == 7.0


def test_restore_with_nothing_saved_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="no committed checkpoint to restore"):
        CheckpointManager(tmp_path).restore(_ts())
    mgr = CheckpointManager(tmp_path)
    mgr.save(1, _ts())
    with pytest.raises(FileNotFoundError, match="no committed checkpoint for step 4; steps present: \\[1\\]"):
        mgr.restore(_ts(), step=4)


def test_bad_arguments_raise(tmp_path):
    with pytest.raises(errors.ConfigError, match="max_to_keep must be a positive int"):
        CheckpointManager(tmp_path, max_to_keep=0)
    with pytest.raises(errors.ConfigError, match="keep_every must be a positive int"):
        CheckpointManager(tmp_path, keep_every=-1)
    with pytest.raises(errors.ConfigError, match="best_mode must be 'min' or 'max'"):
        CheckpointManager(tmp_path, best_mode="auto")
    mgr = CheckpointManager(tmp_path)
    with pytest.raises(errors.ConfigError, match="metadata must be JSON-serializable"):
        mgr.save(1, _ts(), {"f": object()})
    with pytest.raises(errors.ConfigError, match="step must be >= 0"):
        mgr.save(-1, _ts())
    assert mgr.all_steps() == []


# -- corrupt files ---------------------------------------------------------------------------


def test_damaged_data_file_is_detected(tmp_path):
    mgr = CheckpointManager(tmp_path)
    mgr.save(1, _ts())
    data = tmp_path / "step_1" / ckpt.DATA_FILE
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(errors.CorruptFileError, match="does not match its SHA-256"):
        mgr.restore(_ts())


def test_bad_manifest_is_corrupt(tmp_path, monkeypatch):
    mgr = CheckpointManager(tmp_path)
    mgr.save(1, _ts())
    manifest = tmp_path / "step_1" / ckpt.MANIFEST_FILE
    manifest.write_text('{"format": "other/9"}')
    with pytest.raises(errors.CorruptFileError, match="expected format 'kerax-checkpoint/1'; received 'other/9'"):
        mgr.restore(_ts())
    manifest.write_text("{not json")
    with pytest.raises(errors.CorruptFileError, match="not valid JSON"):
        mgr.restore(_ts())
    monkeypatch.setattr(ckpt, "MAX_MANIFEST_BYTES", 4)
    with pytest.raises(errors.CorruptFileError, match="manifest larger than 4 bytes"):
        mgr.restore(_ts())


# -- C10: a changed model or optimizer ---------------------------------------------------------


def test_changed_model_raises_with_a_diff_and_changes_nothing(tmp_path):
    mgr = CheckpointManager(tmp_path)
    mgr.save(1, _ts())
    template = _ts(5.0, extra=True)
    before = _leaves(template)
    with pytest.raises(errors.IncompatibleCheckpointError,
                       match=r"(?s)in the model/optimizer but not the checkpoint: \['opt_state/0/mu/dense_1/kernel'.*'params/dense_1/kernel'"):
        mgr.restore(template)
    assert all(np.array_equal(a, b) for a, b in zip(before, _leaves(template)))
    assert mgr.all_steps() == [1]


def test_changed_shape_and_dtype_are_named(tmp_path):
    mgr = CheckpointManager(tmp_path)
    mgr.save(1, _ts())
    bad = _ts()
    bad = bad.replace(params={"dense": {"kernel": jnp.ones((4, 2)), "bias": jnp.zeros(2, jnp.float32)}})
    with pytest.raises(errors.IncompatibleCheckpointError,
                       match=r"params/dense/bias: expected shape \(2,\) dtype float32; the checkpoint has shape \(2,\) dtype bfloat16"):
        mgr.restore(bad)
    with pytest.raises(errors.IncompatibleCheckpointError, match=r"params/dense/kernel: expected shape \(4, 2\)"):
        mgr.restore(bad)


@pytest.mark.parametrize("tx, match", [
    (optax.sgd(0.1), "in the checkpoint but not the model/optimizer: \\['opt_state/0/count'"),
    (optax.adamw(1e-3), "opt_state: tree structure differs"),  # same leaves, other containers
])
def test_changed_optimizer_raises(tmp_path, tx, match):
    mgr = CheckpointManager(tmp_path)
    mgr.save(1, _ts())
    with pytest.raises(errors.IncompatibleCheckpointError, match=match):
        mgr.restore(_ts(tx=tx))


def test_changed_rng_impl_raises(tmp_path):
    mgr = CheckpointManager(tmp_path)
    mgr.save(1, _ts())
    other = _ts().replace(rng=jax.random.key(0, impl="rbg"))
    with pytest.raises(errors.IncompatibleCheckpointError, match="rng"):
        mgr.restore(other)


# -- C4: retention -----------------------------------------------------------------------------


def test_keeps_the_last_three(tmp_path):
    mgr = CheckpointManager(tmp_path, max_to_keep=3)
    for s in range(10):
        mgr.save(s, _ts(float(s)))
    assert mgr.all_steps() == [7, 8, 9]
    assert sorted(os.listdir(tmp_path)) == ["step_7", "step_8", "step_9"]


def test_keep_every_and_best_are_never_deleted(tmp_path):
    mgr = CheckpointManager(tmp_path, max_to_keep=2, keep_every=4, best_metric="val_loss")
    losses = [5, 4, 1, 3, 6, 7, 8, 9, 10, 11]
    for s, loss in enumerate(losses):
        mgr.save(s, _ts(float(s)), {"metrics": {"val_loss": loss}})
    assert mgr.best_step() == 2
    assert mgr.all_steps() == [0, 2, 4, 8, 9]
    mx = CheckpointManager(tmp_path / "max", max_to_keep=1, best_metric="acc", best_mode="max")
    for s, acc in enumerate([0.1, 0.9, 0.5]):
        mx.save(s, _ts(), {"acc": acc})
    assert mx.all_steps() == [1, 2] and mx.best_step() == 1


def test_crash_between_save_and_delete_leaves_one_extra(tmp_path, monkeypatch):
    mgr = CheckpointManager(tmp_path, max_to_keep=3)
    for s in range(3):
        mgr.save(s, _ts())
    monkeypatch.setattr(CheckpointManager, "_prune", lambda self: None)  # "killed" before pruning
    mgr.save(3, _ts())
    assert len(mgr.all_steps()) == 4
    monkeypatch.undo()
    mgr.save(4, _ts())
    assert mgr.all_steps() == [2, 3, 4]


# -- C3: temporary directories ----------------------------------------------------------------


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_start_removes_only_dead_writers_temp_dirs(tmp_path):
    host = CheckpointManager(tmp_path).host
    dead = tmp_path / f".tmp-step_3-{host}-{_dead_pid()}"
    alive = tmp_path / f".tmp-step_4-{host}-{os.getppid()}"
    remote = tmp_path / f".tmp-step_5-other-host-{_dead_pid()}"
    for d in (dead, alive, remote):
        d.mkdir()
        (d / "x").write_bytes(b"partial")
    mgr = CheckpointManager(tmp_path)
    assert not dead.exists() and alive.exists() and remote.exists()
    assert mgr.all_steps() == []
    assert sorted(mgr.cleanup(force=True)) == sorted([alive.name, remote.name])
    assert os.listdir(tmp_path) == []


# -- C5: failed saves ------------------------------------------------------------------------


def test_failed_write_raises_and_keeps_everything(tmp_path, monkeypatch):
    mgr = CheckpointManager(tmp_path)
    good = _trained(_ts())
    mgr.save(1, good)
    before = _leaves(good)

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt, "_sha256", full)
    with pytest.raises(OSError, match="No space left on device"):
        mgr.save(2, good)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["step_1"]  # no temp dir left behind
    assert all(np.array_equal(a, b) for a, b in zip(before, _leaves(good)))
    assert _same(mgr.restore(_ts(0.0))[0], good)


@pytest.fixture
def file_size_limit():
    """``limit(n)``: writes past n bytes fail with EFBIG (a real write error, as a full disk
    gives, also as root); ``limit(None)`` lifts it. Restored after the test. Nothing may
    compile while it is on: JAX would write truncated entries to the run's compilation cache."""
    import resource

    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the error, not the signal's kill
    yield lambda n: resource.setrlimit(resource.RLIMIT_FSIZE, (old_limit[0] if n is None else n, old_limit[1]))
    resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
    signal.signal(signal.SIGXFSZ, old_handler)


def test_c5_a_real_write_error_raises_and_keeps_the_previous_checkpoint(tmp_path, file_size_limit):
    mgr = CheckpointManager(tmp_path)
    good, other = _trained(_ts()), _ts(2.0)
    mgr.save(1, good)
    file_size_limit(512)
    with pytest.raises(OSError, match="File too large"):
        mgr.save(2, other)
    file_size_limit(None)
    assert mgr.latest_step() == 1 and _same(mgr.restore(_ts(0.0))[0], good)


class _LimitAtEpochEnd(Callback):
    """Puts the file size limit on at the end of epoch ``epoch``, before the saving callback
    after it writes (every program is compiled by then)."""

    def __init__(self, limit, epoch):
        super().__init__()
        self.limit, self.epoch = limit, epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            self.limit(512)


def test_c6_a_save_that_fails_inside_fit_makes_fit_raise(tmp_path, file_size_limit):
    import kerax as kx
    from kerax.training.callbacks.backup import BackupAndRestore

    sys.path.insert(0, str(Path(__file__).parent))
    from ckpt_worker import model_and_data

    for saver in (BackupAndRestore(str(tmp_path / "b")), kx.callbacks.ModelCheckpoint(str(tmp_path / "m.kerax"))):
        model, x, y = model_and_data()
        with pytest.raises(OSError, match="File too large"):  # epoch 1 saves; epoch 2's save fails
            model.fit(x, y, batch_size=16, epochs=3, verbose=0, seed=7,
                      callbacks=[_LimitAtEpochEnd(file_size_limit, 1), saver])
        file_size_limit(None)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_permission_denied_raises_and_keeps_previous(tmp_path):
    mgr = CheckpointManager(tmp_path)
    mgr.save(1, _ts(1.0))
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(PermissionError):
            mgr.save(2, _ts(2.0))
    finally:
        tmp_path.chmod(0o700)
    assert mgr.all_steps() == [1]


# -- C1 / C2: SIGKILL during saves (subprocesses) ----------------------------------------------


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(extra)
    return env


def _check_after_kill(directory, completed):
    mgr = CheckpointManager(directory)
    latest = mgr.latest_step()
    assert latest is not None
    assert latest in (completed[-1] if completed else 0, (completed[-1] + 1) if completed else 0)
    for step in mgr.all_steps():  # every visible checkpoint is whole
        out, meta = mgr.restore(_template(directory, step), step=step)
        assert meta == {"epoch": step}
        assert np.all(np.asarray(out.params["a"]["kernel"]) == float(step))
    return latest


def _template(directory, step):
    sys.path.insert(0, str(Path(WORKER).parent))
    try:
        from ckpt_worker import state_of
    finally:
        sys.path.pop(0)
    n = json.loads((Path(directory) / f"step_{step}" / ckpt.MANIFEST_FILE).read_text())["tensors"]["params/a/kernel"]["shape"][0]
    return state_of(-1, n * 8 / 2**20)


def test_random_sigkill_never_leaves_a_broken_checkpoint(tmp_path):
    rnd = random.Random(0)
    for trial in range(8):
        d = tmp_path / f"t{trial}"
        p = subprocess.Popen([sys.executable, WORKER, "loop", str(d), "4", "1000"], stdout=subprocess.PIPE,
                             text=True, env=_env())
        completed = []
        try:
            deadline = time.monotonic() + 60
            while not completed and time.monotonic() < deadline:  # at least one save done
                line = p.stdout.readline()
                if line.startswith("saved"):
                    completed.append(int(line.split()[1]))
            time.sleep(rnd.uniform(0.0, 0.3))
        finally:
            p.send_signal(signal.SIGKILL)
            out, _ = p.communicate(timeout=30)
        completed += [int(l.split()[1]) for l in out.splitlines() if l.startswith("saved")]
        _check_after_kill(d, completed)


@pytest.mark.parametrize("point, expect_new", [("after-data", False), ("before-rename", False), ("after-rename", True)])
def test_sigkill_inside_the_writer(tmp_path, point, expect_new):
    ok = subprocess.run([sys.executable, WORKER, "loop", str(tmp_path), "1", "1"], env=_env(),
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    killed = subprocess.run([sys.executable, WORKER, "loop", str(tmp_path), "1", "1"],
                            env=_env(**{ckpt.CRASH_ENV: point}), capture_output=True, text=True, timeout=60)
    assert killed.returncode == -signal.SIGKILL
    mgr = CheckpointManager(tmp_path)
    assert mgr.latest_step() == (1 if expect_new else 0)
    out, meta = mgr.restore(_template(tmp_path, mgr.latest_step()))
    assert np.all(np.asarray(out.params["a"]["kernel"]) == float(mgr.latest_step()))
    assert not [e for e in os.listdir(tmp_path) if e.startswith(".")]  # the dead writer's temp dir went


def test_checkpoint_with_adams_retired_epsilon_schedule_restores(tmp_path):
    # Earlier kerax Adam states held an epsilon schedule (hyperparams['eps'] and its count):
    # such a checkpoint restores into a current Adam train state, those two leaves dropped.
    from kerax import optimizers
    from kerax.optimizers import _keras_adam

    old_tx = optax.inject_hyperparams(lambda learning_rate, eps: _keras_adam(learning_rate, 0.9, 0.999, 1e-7))(
        learning_rate=1e-3, eps=lambda count: 1e-7 / jnp.sqrt(1.0 - 0.999 ** (count + 1.0)))
    old = _trained(_ts(tx=old_tx))
    assert "eps" in old.opt_state.hyperparams_states
    CheckpointManager(tmp_path).save(3, old, {})
    out, _ = CheckpointManager(tmp_path).restore(_ts(value=0.0, tx=optimizers.Adam(1e-3)))
    assert set(out.opt_state.hyperparams) == {"learning_rate"}
    for a, b in zip(jax.tree.leaves((old.step, old.params, old.opt_state.inner_state)),
                    jax.tree.leaves((out.step, out.params, out.opt_state.inner_state))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(out.opt_state.count) == int(old.opt_state.count) == 3
