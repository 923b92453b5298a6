"""Training throughput of the W2 CNN in float32 vs ``mixed_bfloat16``, with ``model.fit``.

Standalone: kerax, JAX, optax and NumPy only, synthetic data, no network, no Keras. Prints
steps/s for each policy and their ratio (mixed / float32). On a GPU with bfloat16 tensor
cores the ratio should exceed 1; on CPU bfloat16 is not faster (expect a ratio <= 1).

    python bench/mixed_precision_gpu.py            # W2: 28x28x1, conv32-conv64-pool-128-10, batch 128
    python bench/mixed_precision_gpu.py --quick    # toy sizes, a few seconds on CPU
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

import kerax as kx
from kerax import layers


def build(policy: str | None, shape: tuple, filters: tuple, dense: int) -> kx.Sequential:
    """The W2 architecture (bench/workloads.py) under ``policy``."""
    return kx.Sequential([
        kx.Input(shape),
        layers.Conv2D(filters[0], 3, activation="relu"),
        layers.Conv2D(filters[1], 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dense(dense, activation="relu"),
        layers.Dense(10),
    ], dtype_policy=policy)


def steps_per_second(policy: str | None, x: np.ndarray, y: np.ndarray, batch: int,
                     epochs: int, size: dict) -> tuple[float, float]:
    """Steps/s over ``epochs`` timed epochs after one warm-up epoch (which compiles); and
    the last epoch's loss (a sanity check that both policies train)."""
    model = build(policy, x.shape[1:], **size)
    model.compile(kx.optimizers.Adam(1e-3), kx.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False, seed=0)
    start = time.perf_counter()
    history = model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0, shuffle=False, seed=0)
    elapsed = time.perf_counter() - start  # fit fetches each epoch's logs: synchronised
    steps = epochs * (len(x) // batch)
    return steps / elapsed, history.history["loss"][-1]


def main(quick: bool = False) -> dict:
    if quick:
        shape, size, batch, n_batches, epochs = (8, 8, 1), {"filters": (4, 8), "dense": 16}, 8, 8, 2
    else:
        shape, size, batch, n_batches, epochs = (28, 28, 1), {"filters": (32, 64), "dense": 128}, 128, 50, 3
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch * n_batches, *shape)).astype(np.float32)
    y = rng.integers(0, 10, len(x)).astype(np.int32)
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}); W2 {shape}, "
          f"batch {batch}, {n_batches} steps/epoch, {epochs} timed epochs")
    out: dict = {}
    for _ in range(2):  # two alternating rounds, best of each: one-time process costs cancel
        for policy in (None, "mixed_bfloat16"):
            rate, loss = steps_per_second(policy, x, y, batch, epochs, size)
            out[policy or "float32"] = max(rate, out.get(policy or "float32", 0.0))
            print(f"{policy or 'float32':>15}: {rate:8.1f} steps/s  (last loss {loss:.4f})")
    out["ratio"] = out["mixed_bfloat16"] / out["float32"]
    print(f"{'ratio':>15}: {out['ratio']:.2f}x (mixed_bfloat16 / float32)")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="toy sizes (a CPU smoke run)")
    main(parser.parse_args().quick)
