"""Data-parallel overhead: the MLP workload (784-512-512-10, Adam, global batch 128) on 1, 2
and 4 simulated CPU devices (or the GPUs that exist), both modes.

On a 2-core CPU the simulated devices share the same cores, so this measures the cost of
splitting and all-reducing, not a speed-up. On a multi-GPU machine it measures scaling.

    python bench/data_parallel.py [--quick]
"""

from __future__ import annotations

import os
import sys

if "--gpu" not in sys.argv:
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import statistics  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import kerax as kx  # noqa: E402
from kerax import layers  # noqa: E402


class EpochTimer(kx.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self.t = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.t)


def run(devices: int | None, mode: str, x, y, epochs: int) -> list[float]:
    model = kx.Sequential([layers.Dense(512, activation="relu", input_shape=(784,)),
                           layers.Dense(512, activation="relu"), layers.Dense(10)])
    dp = None if devices is None else kx.distribute.DataParallel(jax.devices()[:devices], mode=mode)
    model.compile(optimizer=optax.adam(1e-3), loss=kx.losses.SparseCategoricalCrossentropy(from_logits=True),
                  distribute=dp)
    timer = EpochTimer()
    model.fit(x, y, batch_size=128, epochs=epochs, shuffle=False, verbose=0, seed=0, callbacks=[timer])
    return timer.times[1:]


def main() -> None:
    quick = "--quick" in sys.argv
    n, epochs, rounds = (128 * 4, 3, 1) if quick else (128 * 32, 4, 3)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 784)).astype(np.float32)
    y = rng.integers(0, 10, n).astype(np.int32)
    configs = [("1 device, no DataParallel", None, "shard")]
    for d in (1, 2, 4):
        if d <= jax.device_count():
            configs += [(f"{d} device(s), shard", d, "shard"), (f"{d} device(s), pmap", d, "pmap")]
    results: dict[str, list[float]] = {}
    for _ in range(rounds):
        for name, d, mode in configs:
            results.setdefault(name, []).extend(run(d, mode, x, y, epochs))
    base = statistics.median(results[configs[0][0]])
    print(f"# {jax.devices()[0].device_kind} x{jax.device_count()}, jax {jax.__version__}; MLP, "
          f"global batch 128, {n // 128} steps/epoch")
    for name, t in results.items():
        print(f"{name:28s} {1000 * statistics.median(t):8.1f} ms/epoch  ratio {statistics.median(t) / base:.2f}")


if __name__ == "__main__":
    main()
