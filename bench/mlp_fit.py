"""Framework overhead of ``model.fit`` against a hand-written JAX loop (the floor).

Workload: MLP 784-512-512-10, Adam(1e-3), MNIST-shaped synthetic data. The floor is a
``jax.jit`` + optax step with donated buffers over batches already on the device, which is
the least any framework can do. Both run in this one process, alternating, and the median
epoch time of each is reported with the ratio kerax / floor.

    python bench/mlp_fit.py                # batch 128, and batch 8 with steps_per_execution
    python bench/mlp_fit.py --quick        # tiny sizes, for a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import kerax as kx
from kerax import layers


def data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 784)).astype(np.float32), rng.integers(0, 10, n).astype(np.int32)


def model() -> kx.Sequential:
    return kx.Sequential([
        layers.Dense(512, activation="relu", input_shape=(784,)),
        layers.Dense(512, activation="relu"),
        layers.Dense(10),
    ])


def floor_epochs(params: dict, x: np.ndarray, y: np.ndarray, batch: int, epochs: int, scan: int = 1) -> list[float]:
    """Hand-written: jit(value_and_grad + optax.adam) over device-resident batches."""
    mlp = model()
    tx = optax.adam(1e-3)

    def loss_fn(p, xb, yb):
        logits, _ = mlp.apply(p, {}, xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    def one(carry, b):
        p, o = carry
        loss, g = jax.value_and_grad(loss_fn)(p, *b)
        u, o = tx.update(g, o, p)
        return (optax.apply_updates(p, u), o), loss

    @jax.jit
    def step(p, o, xb, yb):
        return one((p, o), (xb, yb))

    @jax.jit
    def step_scan(p, o, xb, yb):
        return jax.lax.scan(one, (p, o), (xb, yb))

    step = jax.jit(step.__wrapped__, donate_argnums=(0, 1))
    step_scan = jax.jit(step_scan.__wrapped__, donate_argnums=(0, 1))
    nb = len(x) // batch
    xs = jax.device_put(x[: nb * batch].reshape(nb, batch, 784))
    ys = jax.device_put(y[: nb * batch].reshape(nb, batch))
    p = jax.tree.map(jnp.copy, params)
    o = tx.init(p)
    times = []
    for _ in range(epochs):
        t = time.perf_counter()
        if scan == 1:
            for i in range(nb):
                (p, o), loss = step(p, o, xs[i], ys[i])
        else:
            for i in range(0, nb, scan):
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


def kerax_epochs(x: np.ndarray, y: np.ndarray, batch: int, epochs: int, k: int = 1, shuffle: bool = False) -> list[float]:
    m = model()
    m.build(seed=0)
    m.compile(optimizer=kx.optimizers.Adam(1e-3), loss=kx.losses.SparseCategoricalCrossentropy(from_logits=True),
              steps_per_execution=k)
    timer = EpochTimer()
    m.fit(x, y, batch_size=batch, epochs=epochs, shuffle=shuffle, verbose=0, seed=0, callbacks=[timer])
    return timer.times


def run(batch: int, n_batches: int, epochs: int, rounds: int) -> dict:
    x, y = data(batch * n_batches)
    ref = model()
    ref.build(seed=0)
    results: dict[str, list[float]] = {}
    impls = {
        "hand-written jit+optax (floor)": lambda: floor_epochs(ref.params, x, y, batch, epochs),
        "hand-written lax.scan x16": lambda: floor_epochs(ref.params, x, y, batch, epochs, scan=16),
        "kerax fit": lambda: kerax_epochs(x, y, batch, epochs),
        "kerax fit shuffle=True": lambda: kerax_epochs(x, y, batch, epochs, shuffle=True),
        "kerax fit steps_per_execution=16": lambda: kerax_epochs(x, y, batch, epochs, k=16),
    }
    for _ in range(rounds):  # interleaved so machine noise spreads over all
        for name, fn in impls.items():
            results.setdefault(name, []).extend(fn()[1:])  # epoch 0 includes compilation
    floor = statistics.median(results["hand-written jit+optax (floor)"])
    return {
        name: {"median_epoch_s": statistics.median(t), "min": min(t), "max": max(t),
               "ratio_to_floor": statistics.median(t) / floor}
        for name, t in results.items()
    }


def main() -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    epochs, rounds = (3, 1) if args.quick else (5, 3)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {jax.devices()[0].device_kind}, jax {jax.__version__}"
    report = {"machine": machine}
    for batch, n_batches in ((128, 8 if args.quick else 48), (8, 32 if args.quick else 320)):
        report[f"batch {batch}"] = run(batch, n_batches, epochs, rounds)
    print(f"# {machine}")
    for section, rows in report.items():
        if section == "machine":
            continue
        print(f"\n## MLP 784-512-512-10, Adam, {section}")
        for name, r in rows.items():
            print(f"{name:36s} {1000 * r['median_epoch_s']:9.1f} ms/epoch  (min {1000 * r['min']:.1f}, max {1000 * r['max']:.1f})  ratio {r['ratio_to_floor']:.3f}")
    print(json.dumps(report, indent=1), file=open(os.devnull, "w"))
    return report


if __name__ == "__main__":
    main()
