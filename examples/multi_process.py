"""Data-parallel training across processes (machines) with jax.distributed.

Two processes on one machine, 2 CPU devices each (4 devices in all):

    python examples/multi_process.py --process-id 0 --num-processes 2 &
    python examples/multi_process.py --process-id 1 --num-processes 2

N machines (one process per machine; same command everywhere, its own id on each):

    python examples/multi_process.py --coordinator HOST0:1234 --num-processes N --process-id I

Under SLURM or Open MPI leave out the three flags: JAX reads them from the environment.
``batch_size`` is the global batch; each process passes ``fit`` its own share of the data
(here: every other block of rows), and each global batch is the processes' local batches
concatenated in process order. Only process 0 prints and would write files.
"""

from __future__ import annotations

import argparse
import os


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--coordinator", default="127.0.0.1:12355")
    parser.add_argument("--num-processes", type=int, default=None)
    parser.add_argument("--process-id", type=int, default=None)
    parser.add_argument("--local-cpu-devices", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={args.local_cpu_devices}")

    import jax
    import numpy as np

    import kerax as kx
    from kerax import layers

    kx.distribute.initialize(args.coordinator if args.num_processes else None,
                             args.num_processes, args.process_id)
    rank, size = jax.process_index(), jax.process_count()

    rng = np.random.default_rng(0)  # the same global data set in every process ...
    x = rng.normal(size=(4096, 20)).astype(np.float32)
    y = (x @ rng.normal(size=(20, 4))).argmax(1).astype(np.int32)
    local_batch = 128 // size  # ... of which each process feeds its share of every batch
    rows = np.arange(len(x)).reshape(-1, size, local_batch)[:, rank].reshape(-1)

    model = kx.Sequential([layers.Dense(64, activation="relu", input_shape=(20,)), layers.Dense(4)])
    model.compile(optimizer="adam", loss=kx.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], distribute=kx.distribute.DataParallel())
    history = model.fit(x[rows], y[rows], batch_size=128, epochs=3, seed=0)
    if kx.distribute.is_chief():
        print(f"{size} processes, {jax.device_count()} devices: final accuracy "
              f"{history.history['accuracy'][-1]:.4f}")


if __name__ == "__main__":
    main()
