"""A worker process for the multi-process tests (tests/test_distribute_multiprocess.py).

Usage: python mp_worker.py PROCESS_ID NUM_PROCESSES PORT SCENARIO OUT_DIR
Each process has 2 simulated CPU devices. Scenarios: fit (train + evaluate, save params),
uneven (process 1 holds fewer rows), exit_early (process 1 exits before training),
no_collectives (cross-process collectives disabled), preempt / preempt_resume (SIGTERM).
"""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["JAX_PLATFORMS"] = "cpu"

pid, nproc, port, scenario, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]

import jax  # noqa: E402
import numpy as np  # noqa: E402

if scenario == "no_collectives":
    jax.config.update("jax_cpu_collectives_implementation", None)
import kerax as kx  # noqa: E402
from kerax import layers  # noqa: E402

if scenario == "no_collectives":
    jax.distributed.initialize(f"127.0.0.1:{port}", nproc, pid, initialization_timeout=20)
else:
    kx.distribute.initialize(f"127.0.0.1:{port}", nproc, pid,
                             initialization_timeout=int(os.environ.get("MP_INIT_TIMEOUT", "20")),
                             heartbeat_timeout_seconds=5)


def global_data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(64, 4)).astype(np.float32), rng.integers(0, 3, 64).astype(np.int32)


def local_share(x, y, local_batch=8):
    """Rows of this process: its half of every global batch (global batch = p0 rows, p1 rows)."""
    rows = np.arange(len(x)).reshape(-1, nproc, local_batch)[:, pid].reshape(-1)
    return x[rows], y[rows]


def model():
    m = kx.Sequential([layers.Dense(8, activation="relu", input_shape=(4,)), layers.Dense(3)])
    m.compile(optimizer="adam", loss=kx.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"], distribute=kx.distribute.DataParallel())
    return m


if scenario == "pmap_span":
    try:
        kx.distribute.DataParallel(jax.devices(), mode="pmap")
    except Exception as e:
        with open(os.path.join(out, f"error{pid}.txt"), "w") as f:
            f.write(f"{type(e).__name__}: {e}")
    sys.exit(0)
if scenario == "ckpt_restore":  # E5: a new 2-process run restores what the last one saved
    m = model()
    m.build(seed=0)
    template = kx.TrainState.create(m, m.params, m.state, m._compiled.optimizer, rng=0)
    ts, meta = kx.checkpoint.CheckpointManager(os.path.join(out, "ckpt")).restore(template)
    np.savez(os.path.join(out, f"restored{pid}.npz"), *[np.asarray(a) for a in jax.tree.leaves(ts.params)],
             step=np.asarray(ts.step), epoch=np.asarray(meta["epoch"]))
    if os.path.isdir(os.path.join(out, "ckpt1")):  # E6: what one process saved, restored by two
        ts, meta = kx.checkpoint.CheckpointManager(os.path.join(out, "ckpt1")).restore(template)
        np.savez(os.path.join(out, f"restored1to2_{pid}.npz"),
                 *[np.asarray(a) for a in jax.tree.leaves(ts.params)], step=np.asarray(ts.step))
    sys.exit(0)
if scenario in ("preempt", "preempt_resume"):  # C16: SIGTERM to one process, or to each at its own time
    from kerax.experiments.preemption import Preempted, StopOnSignal, sigterm_flag

    x, y = local_share(*global_data())
    m = model()
    with sigterm_flag() as stop:
        backup = kx.callbacks.BackupAndRestore(os.path.join(out, "backup"))
        said = kx.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: print(f"epoch {e + 1} done", flush=True))
        epochs = 300 if scenario == "preempt" else int(os.environ["MP_EPOCHS"])
        try:
            m.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0, seed=0,
                  callbacks=[backup, said, StopOnSignal(stop, backup)])
        except Preempted as e:
            print(f"preempted at step {e.step}", flush=True)
            sys.exit(143)
    np.savez(os.path.join(out, f"params{pid}.npz"), *m.get_weights())
    sys.exit(0)
x, y = local_share(*global_data())
if scenario == "uneven" and pid == 1:
    x, y = x[:-3], y[:-3]
if scenario == "exit_early" and pid == 1:
    os._exit(0)
m = model()
try:
    history = m.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, seed=0)
    logs = m.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
except Exception as e:  # report the error text for the parent to check
    with open(os.path.join(out, f"error{pid}.txt"), "w") as f:
        f.write(f"{type(e).__name__}: {e}")
    sys.exit(3)
if scenario == "ckpt_save":  # E5: process 0 writes, the others wait for the commit
    kx.checkpoint.CheckpointManager(os.path.join(out, "ckpt")).save(int(m._ts.step), m._ts, {"epoch": 2})
    np.savez(os.path.join(out, f"tsparams{pid}.npz"), *[np.asarray(a) for a in jax.tree.leaves(m._ts.params)])
np.savez(os.path.join(out, f"params{pid}.npz"), *m.get_weights(),
         loss=np.array(history.history["loss"]), eval_loss=np.array(logs["loss"]),
         eval_acc=np.array(logs["accuracy"]))
