"""Several processes on one machine (127.0.0.1), each with 2 CPU devices: RELIABILITY C16, E3,
E4, E7-E10. Every test bounds its own time and kills its processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).parent / "mp_worker.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(scenario: str, tmp_path: Path, nproc: int = 2, start: tuple = (0, 1), timeout: float = 120,
            init_timeout: int = 20, **env_extra: str):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["MP_INIT_TIMEOUT"] = str(init_timeout)
    env.update(env_extra)
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(i), str(nproc), str(port), scenario, str(tmp_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
             for i in start]
    t0 = time.time()
    outputs = []
    try:
        for p in procs:
            remaining = max(1.0, timeout - (time.time() - t0))
            out, _ = p.communicate(timeout=remaining)
            outputs.append((p.returncode, out.decode(errors="replace")))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return outputs, time.time() - t0


def _reference(epochs=2):
    """One process, one device, over the same global batches."""
    import kerax as kx
    from kerax import layers

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 4)).astype(np.float32), rng.integers(0, 3, 64).astype(np.int32)
    m = kx.Sequential([layers.Dense(8, activation="relu", input_shape=(4,)), layers.Dense(3)])
    m.compile(optimizer="adam", loss=kx.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    history = m.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0, seed=0)
    return m.get_weights(), history.history["loss"], m.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)


def test_e3_e4_two_processes_train_like_one(tmp_path):
    outputs, _ = _launch("fit", tmp_path)
    for code, text in outputs:
        assert code == 0, text[-3000:]
    got = [np.load(tmp_path / f"params{i}.npz") for i in range(2)]
    weights, losses, logs = _reference()
    for i, w in enumerate(weights):
        np.testing.assert_array_equal(got[0][f"arr_{i}"], got[1][f"arr_{i}"])  # E3: bitwise equal
        np.testing.assert_allclose(got[0][f"arr_{i}"], w, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[0]["loss"], losses, rtol=1e-5)
    assert float(got[0]["eval_loss"]) == float(got[1]["eval_loss"])  # E4: identical on both
    assert float(got[0]["eval_loss"]) == pytest.approx(logs["loss"], abs=1e-6)
    assert float(got[0]["eval_acc"]) == pytest.approx(logs["accuracy"], abs=1e-6)


def test_e9_uneven_local_data_is_an_error_not_a_hang(tmp_path):
    outputs, elapsed = _launch("uneven", tmp_path, timeout=90)
    assert all(code == 3 for code, _ in outputs), [t[-2000:] for _, t in outputs]
    text = (tmp_path / "error0.txt").read_text()
    assert "same number of samples" in text and "process 0: 32" in text and "process 1: 29" in text


def test_e8_missing_process_times_out(tmp_path):
    outputs, elapsed = _launch("fit", tmp_path, start=(0,), timeout=60, init_timeout=5)
    code, text = outputs[0]
    assert code != 0 and elapsed < 5 + 15


def test_e7_process_exiting_early_does_not_hang(tmp_path):
    outputs, elapsed = _launch("exit_early", tmp_path, timeout=75)
    assert outputs[0][0] != 0 and elapsed < 30  # E7: heartbeat 5 s + start-up; measured 7 s


def test_e10_without_collectives_a_clear_error(tmp_path):
    outputs, _ = _launch("no_collectives", tmp_path, timeout=90)
    texts = [(tmp_path / f"error{i}.txt").read_text() for i in range(2) if (tmp_path / f"error{i}.txt").exists()]
    assert texts and all("requires gloo collectives" in t for t in texts), [o[1][-1500:] for o in outputs]


def test_pmap_over_devices_of_several_processes_is_refused(tmp_path):
    outputs, _ = _launch("pmap_span", tmp_path, timeout=90)
    assert all(code == 0 for code, _ in outputs), [o[1][-1500:] for o in outputs]
    text = (tmp_path / "error0.txt").read_text()
    assert "ConfigError" in text and "spans processes [0, 1]" in text


def test_e5_e6_checkpoint_across_process_counts(tmp_path):
    outputs, _ = _launch("ckpt_save", tmp_path)
    assert all(code == 0 for code, _ in outputs), [o[1][-2000:] for o in outputs]
    steps = [p.name for p in (tmp_path / "ckpt").iterdir()]
    assert steps == ["step_8"], steps  # only finalized checkpoints, written once
    saved = np.load(tmp_path / "tsparams0.npz")
    import jax  # E6: one process restores what two saved, and saves for two to restore

    import kerax as kx
    from kerax import layers

    m = kx.Sequential([layers.Dense(8, activation="relu", input_shape=(4,)), layers.Dense(3)])
    m.build(seed=0)
    template = kx.TrainState.create(m, m.params, m.state, kx.optimizers.get("adam"), rng=0)
    ts, meta = kx.checkpoint.CheckpointManager(tmp_path / "ckpt").restore(template)
    for i, leaf in enumerate(jax.tree.leaves(ts.params)):
        np.testing.assert_array_equal(np.asarray(leaf), saved[f"arr_{i}"])
    one = ts.replace(step=ts.step + 1, params=jax.tree.map(lambda a: a + 1.0, ts.params))
    kx.checkpoint.CheckpointManager(tmp_path / "ckpt1").save(9, one, {"epoch": 3})
    outputs, _ = _launch("ckpt_restore", tmp_path)  # E5: a new 2-process run; E6: 1 -> 2
    assert all(code == 0 for code, _ in outputs), [o[1][-2000:] for o in outputs]
    for pid in range(2):
        restored = np.load(tmp_path / f"restored{pid}.npz")
        assert int(restored["step"]) == 8 and int(restored["epoch"]) == 2
        for i in range(len(saved.files)):
            np.testing.assert_array_equal(restored[f"arr_{i}"], saved[f"arr_{i}"])
        restored = np.load(tmp_path / f"restored1to2_{pid}.npz")
        assert int(restored["step"]) == 9
        for i, leaf in enumerate(jax.tree.leaves(one.params)):
            np.testing.assert_array_equal(restored[f"arr_{i}"], np.asarray(leaf))


def test_c16_sigterm_to_one_process_stops_all_at_the_same_epoch_and_resumes(tmp_path):
    """SIGTERM reaches process 0 only, mid-run. Both processes must stop after the same epoch
    (exit 143, the same step), with one backup written at that step, well inside 60 s; a new
    two-process run then finishes from it with the weights of an uninterrupted run."""
    import signal

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["MP_INIT_TIMEOUT"] = "20"
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(i), "2", str(port), "preempt", str(tmp_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env) for i in range(2)]
    try:
        seen = b""
        while b"epoch 2 done" not in seen:  # training is under way in process 0
            chunk = procs[0].stdout.read1(4096)
            assert chunk, seen.decode(errors="replace")[-3000:]
            seen += chunk
        t0 = time.time()
        procs[0].send_signal(signal.SIGTERM)
        texts = []
        for i, p in enumerate(procs):
            rest, _ = p.communicate(timeout=60)
            texts.append(((seen if i == 0 else b"") + rest).decode(errors="replace"))
        elapsed = time.time() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [143, 143], [t[-2000:] for t in texts]
    steps = {int(t.split("preempted at step ")[1].split()[0]) for t in texts}
    assert len(steps) == 1 and elapsed < 60, (steps, elapsed)
    step = steps.pop()
    assert step % 4 == 0 and step >= 8  # an epoch end (4 global batches an epoch), after epoch 2
    assert [d.name for d in (tmp_path / "backup").iterdir() if d.name.startswith("step_")][-1] == f"step_{step}"
    epochs = step // 4 + 1
    outputs, _ = _launch("preempt_resume", tmp_path, MP_EPOCHS=str(epochs))
    assert [code for code, _ in outputs] == [0, 0], [t[-2000:] for _, t in outputs]
    weights = _reference(epochs)[0]
    for pid in range(2):
        got = np.load(tmp_path / f"params{pid}.npz")
        for i, w in enumerate(weights):
            np.testing.assert_allclose(got[f"arr_{i}"], w, rtol=1e-5, atol=1e-5)
