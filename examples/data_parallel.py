"""Data-parallel training on every local device: 4 simulated CPU devices here, real GPUs
unchanged.

Run on CPU:  XLA_FLAGS=--xla_force_host_platform_device_count=4 python examples/data_parallel.py
Run on GPUs: python examples/data_parallel.py            (uses every visible GPU)

The result equals one-device training on the same global batches (up to float rounding);
the script checks it.
"""

from __future__ import annotations

import os

if "XLA_FLAGS" not in os.environ and os.environ.get("JAX_PLATFORMS", "cpu") == "cpu":
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

import jax  # noqa: E402
import numpy as np  # noqa: E402

import kerax as kx  # noqa: E402
from kerax import layers  # noqa: E402


def make_model() -> kx.Sequential:
    return kx.Sequential([
        kx.Input(shape=(16, 16, 1)),
        layers.Conv2D(8, 3, use_bias=False),
        layers.BatchNormalization(synchronized=True),  # batch statistics over all devices
        layers.Activation("relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dense(10),
    ])


def main(mode: str = "shard", epochs: int = 2, n: int = 1024) -> dict:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 16, 16, 1)).astype(np.float32)
    y = (x[:, :8].mean(axis=(1, 2, 3)) > 0).astype(np.int32) + 2 * (x[:, :, :8].mean(axis=(1, 2, 3)) > 0)
    loss = kx.losses.SparseCategoricalCrossentropy(from_logits=True)
    results = {}
    for name, dp in (("1 device", None), (f"{jax.device_count()} devices ({mode})", kx.distribute.DataParallel(mode=mode))):
        model = make_model()
        model.compile(optimizer="adam", loss=loss, metrics=["accuracy"], distribute=dp)
        history = model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, seed=0)
        results[name] = (model, history.history)
        print(f"{name}: " + ", ".join(f"{k}={v[-1]:.4f}" for k, v in history.history.items()))
    (m1, h1), (m4, h4) = results.values()
    diff = max(float(np.abs(a - b).max()) for a, b in zip(m1.get_weights(), m4.get_weights()))
    print(f"largest weight difference between 1 and {jax.device_count()} devices: {diff:.2e}")
    return {"history_1": h1, "history_n": h4, "max_weight_diff": diff}


if __name__ == "__main__":
    main()
