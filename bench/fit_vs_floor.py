"""Framework overhead of kerax against hand-written JAX (the floor), one workload at a time.

The floor is a ``jax.jit`` step (``value_and_grad`` + optax, buffers donated) over batches
already on the device: the least any framework can do. kerax runs as users call it:
``model.fit`` on NumPy arrays, ``fit`` with ``steps_per_execution=16``, and the pure
``make_train_step`` loop. All implementations run in this one process, interleaved over
several rounds; the first epoch of each run (compilation) is dropped; medians are
reported with min and max and the ratio to the floor.

    python bench/fit_vs_floor.py --workload mlp      # MLP 784-512-512-10, batch 128 and 8
    python bench/fit_vs_floor.py --workload cnn      # conv32-conv64-maxpool-dense128-dense10
    python bench/fit_vs_floor.py --workload lstm     # LSTM(128) over 32x16 -> Dense 10
    python bench/fit_vs_floor.py --quick             # tiny sizes, a smoke test
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import kerax as kx
from kerax import layers

LOSS = kx.losses.SparseCategoricalCrossentropy(from_logits=True)


def make_model(workload: str) -> tuple[kx.Sequential, tuple]:
    """The model and the shape of one example."""
    if workload == "mlp":
        return kx.Sequential([layers.Dense(512, activation="relu", input_shape=(784,)),
                              layers.Dense(512, activation="relu"), layers.Dense(10)]), (784,)
    if workload == "cnn":
        return kx.Sequential([layers.Conv2D(32, 3, activation="relu", input_shape=(28, 28, 1)),
                              layers.Conv2D(64, 3, activation="relu"), layers.MaxPooling2D(2),
                              layers.Flatten(), layers.Dense(128, activation="relu"), layers.Dense(10)]), (28, 28, 1)
    if workload == "lstm":
        return kx.Sequential([layers.LSTM(128, input_shape=(32, 16)), layers.Dense(10)]), (32, 16)
    raise SystemExit(f"unknown workload {workload!r}")


def data(shape: tuple, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *shape)).astype(np.float32), rng.integers(0, 10, n).astype(np.int32)


def floor_epochs(workload: str, params: dict, x: np.ndarray, y: np.ndarray, batch: int, epochs: int,
                 scan: int = 1) -> list[float]:
    """Hand-written: jit(value_and_grad + optax.adam) over device-resident batches."""
    model, _ = make_model(workload)
    tx = optax.adam(1e-3)

    def loss_fn(p, xb, yb):
        return optax.softmax_cross_entropy_with_integer_labels(model.apply(p, {}, xb)[0], yb).mean()

    def one(carry, b):
        p, o = carry
        loss, g = jax.value_and_grad(loss_fn)(p, *b)
        u, o = tx.update(g, o, p)
        return (optax.apply_updates(p, u), o), loss

    step = jax.jit(lambda p, o, xb, yb: one((p, o), (xb, yb)), donate_argnums=(0, 1))
    step_scan = jax.jit(lambda p, o, xb, yb: jax.lax.scan(one, (p, o), (xb, yb)), donate_argnums=(0, 1))
    nb = len(x) // batch
    xs = jax.device_put(x[: nb * batch].reshape(nb, batch, *x.shape[1:]))
    ys = jax.device_put(y[: nb * batch].reshape(nb, batch))
    p = jax.tree.map(jnp.copy, params)
    o = tx.init(p)
    times = []
    for _ in range(epochs):
        t = time.perf_counter()
        for i in range(0, nb, scan):
            if scan == 1:
                (p, o), loss = step(p, o, xs[i], ys[i])
            else:
                (p, o), loss = step_scan(p, o, xs[i:i + scan], ys[i:i + scan])
        jax.block_until_ready(loss)
        times.append(time.perf_counter() - t)
    return times


class EpochTimer(kx.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self.t = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.t)


def kerax_fit_epochs(workload: str, x, y, batch: int, epochs: int, k: int = 1) -> list[float]:
    model, _ = make_model(workload)
    model.build(seed=0)
    model.compile(optimizer=optax.adam(1e-3), loss=LOSS, steps_per_execution=k)
    timer = EpochTimer()
    model.fit(x, y, batch_size=batch, epochs=epochs, shuffle=False, verbose=0, seed=0, callbacks=[timer])
    return timer.times


def kerax_pure_epochs(workload: str, x, y, batch: int, epochs: int) -> list[float]:
    model, _ = make_model(workload)
    model.build(seed=0)
    ts = kx.TrainState.create(model, model.params, model.state, optax.adam(1e-3), rng=0)
    step = kx.make_train_step(model, loss=LOSS)
    nb = len(x) // batch
    xs = jax.device_put(x[: nb * batch].reshape(nb, batch, *x.shape[1:]))
    ys = jax.device_put(y[: nb * batch].reshape(nb, batch))
    times = []
    for _ in range(epochs):
        t = time.perf_counter()
        for i in range(nb):
            ts, logs = step(ts, (xs[i], ys[i]))
        jax.block_until_ready(logs)
        times.append(time.perf_counter() - t)
    return times


def run(workload: str, batch: int, n_batches: int, epochs: int, rounds: int) -> dict:
    model, shape = make_model(workload)
    model.build(seed=0)
    x, y = data(shape, batch * n_batches)
    impls: dict[str, Callable[[], list[float]]] = {
        "hand-written jit+optax (floor)": lambda: floor_epochs(workload, model.params, x, y, batch, epochs),
        # XLA:CPU runs convolutions inside a rolled scan ~20x slower (jax-ml/jax#12868): skipped for the CNN
        **({} if workload == "cnn" and jax.default_backend() == "cpu" else {
            "hand-written lax.scan x16": lambda: floor_epochs(workload, model.params, x, y, batch, epochs, scan=16)}),
        "kerax fit": lambda: kerax_fit_epochs(workload, x, y, batch, epochs),
        "kerax fit steps_per_execution=16": lambda: kerax_fit_epochs(workload, x, y, batch, epochs, k=16),
        "kerax pure make_train_step": lambda: kerax_pure_epochs(workload, x, y, batch, epochs),
    }
    results: dict[str, list[float]] = {}
    for _ in range(rounds):  # interleaved, so machine noise spreads over all
        for name, fn in impls.items():
            results.setdefault(name, []).extend(fn()[1:])
    floor = statistics.median(results["hand-written jit+optax (floor)"])
    return {name: {"median": statistics.median(t), "min": min(t), "max": max(t),
                   "ratio": statistics.median(t) / floor} for name, t in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workload", default="mlp", choices=["mlp", "cnn", "lstm"])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    epochs, rounds = (3, 1) if args.quick else (4, 3)
    sizes = {"mlp": [(128, 48), (8, 320)], "cnn": [(128, 8)], "lstm": [(64, 24)]}[args.workload]
    if args.quick:
        sizes = [(b, 4) for b, _ in sizes]
    print(f"# {platform.machine()}, {os.cpu_count()} cores, {jax.devices()[0].device_kind}, jax {jax.__version__}")
    for batch, n in sizes:
        print(f"\n## {args.workload}, Adam, batch {batch}, {n} steps/epoch (ms/epoch, median of "
              f"{rounds} rounds x {epochs - 1} epochs)")
        for name, r in run(args.workload, batch, n, epochs, rounds).items():
            print(f"{name:34s} {1000 * r['median']:9.1f}  (min {1000 * r['min']:.1f}, max "
                  f"{1000 * r['max']:.1f})  ratio {r['ratio']:.3f}")


if __name__ == "__main__":
    main()
