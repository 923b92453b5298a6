"""Subprocess helper for the checkpoint crash and resume tests (run as a script).

Modes:
  ``loop DIR MB N``: saves steps 0..N-1 of a ~MB-sized train state whose every leaf equals
      the step, printing ``saved <step>`` after each; the parent kills it at random.
      ``KERAX_TEST_CKPT_CRASH`` (see kerax/saving/checkpoint.py) makes it kill itself
      inside the writer instead.
  ``fit DIR EPOCHS KILL_AFTER``: trains the test model with ``BackupAndRestore(DIR)`` and
      SIGKILLs itself at the end of epoch KILL_AFTER (0-based; -1: never); prints the
      SHA-256 of the final weights.
"""

from __future__ import annotations

import os
import signal
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402


def state_of(step: int, mb: float):
    """A train state of about ``mb`` MB whose float leaves all hold ``step``."""
    from kerax.training.train_state import TrainState

    n = max(1, int(mb * 2**20 / 4 / 2))
    params = {"a": {"kernel": jnp.full((n,), float(step), jnp.float32)}, "b": jnp.full((4,), float(step))}
    ts = TrainState.create(None, params, {}, optax.sgd(0.1), jax.random.key(step))
    return ts.replace(step=jnp.asarray(step, jnp.int32))


def loop(directory: str, mb: float, n: int) -> None:
    from kerax.checkpoint import CheckpointManager

    mgr = CheckpointManager(directory, max_to_keep=2)
    latest = mgr.latest_step()
    start = 0 if latest is None else latest + 1
    for step in range(start, start + n):
        mgr.save(step, state_of(step, mb), {"epoch": step})
        print(f"saved {step}", flush=True)


def model_and_data():
    """The small dropout MLP and blobs data the resume tests train."""
    import kerax as kx

    rng = np.random.default_rng(0)
    centers = rng.normal(scale=3.0, size=(3, 4))
    y = rng.integers(0, 3, 80).astype(np.int32)
    x = (centers[y] + rng.normal(size=(80, 4))).astype(np.float32)
    model = kx.Sequential([kx.layers.Dense(16, activation="relu", input_shape=(4,)),
                           kx.layers.Dropout(0.3), kx.layers.Dense(3)])
    model.compile(optimizer=kx.optimizers.Adam(0.01),
                  loss=kx.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model, x, y


def weights_hash(model) -> str:
    """SHA-256 of the weights and of the whole train state: step, optimizer state, rng (C8)."""
    import hashlib

    import jax

    h = hashlib.sha256()
    for w in model.get_weights():
        h.update(np.ascontiguousarray(np.asarray(w)).tobytes())
    ts = model._ts
    for leaf in jax.tree.leaves((ts.step, ts.opt_state, jax.random.key_data(ts.rng))):
        h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return h.hexdigest()


def fit(directory: str, epochs: int, kill_after: int) -> None:
    import kerax as kx
    from kerax.training.callbacks.backup import BackupAndRestore

    class Kill(kx.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)

    model, x, y = model_and_data()
    model.fit(x, y, batch_size=16, epochs=epochs, verbose=0, seed=7,
              callbacks=[BackupAndRestore(directory), Kill()])
    print(f"hash {weights_hash(model)}", flush=True)


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "loop":
        loop(args[0], float(args[1]), int(args[2]))
    elif mode == "fit":
        fit(args[0], int(args[1]), int(args[2]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
