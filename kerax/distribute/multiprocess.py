"""Several processes (machines): ``initialize`` wraps ``jax.distributed.initialize``.

After it, ``jax.devices()`` lists the devices of every process and a
``DataParallel(mode="shard")`` spans them; JAX's own runtime and XLA's collectives carry
everything (on CPU, gloo). Call it once, first thing, in every process.

Cluster environments (SLURM, Open MPI, Kubernetes via the coordinator variables) are
detected by JAX itself when the arguments are left out.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np

from kerax import errors


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, local_device_ids: Sequence[int] | None = None,
               **kwargs: Any) -> None:
    """Joins this process to a multi-process JAX run (see ``jax.distributed.initialize``).

    On CPU it also selects the gloo collectives, without which cross-process all-reduces
    fail. Extra keyword arguments (``initialization_timeout``,
    ``heartbeat_timeout_seconds``, ...) go to JAX.
    """
    if jax.config.jax_platforms in (None, "", "cpu") or "cpu" in str(jax.config.jax_platforms):
        if jax.config.jax_cpu_collectives_implementation in (None, "none", ""):
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes,
        process_id=process_id, local_device_ids=local_device_ids, **kwargs,
    )


def check_collectives() -> None:
    """Raises a clear error when a multi-process CPU run has no cross-process collectives."""
    if jax.process_count() > 1 and jax.default_backend() == "cpu":
        impl = jax.config.jax_cpu_collectives_implementation
        if impl in (None, "none", ""):
            raise errors.ConfigError(
                "multi-process CPU training requires gloo collectives: call "
                "kx.distribute.initialize(...) (it sets jax_cpu_collectives_implementation='gloo') "
                "or set that option before jax.distributed.initialize"
            )


def check_equal_local_sizes(n_local: int, what: str = "samples") -> None:
    """Every process must feed the same number of rows (else the collectives would hang)."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    sizes = np.asarray(multihost_utils.process_allgather(np.array([n_local], np.int64))).reshape(-1)
    if len(set(sizes.tolist())) != 1:
        raise errors.DataError(
            f"each process must give fit the same number of {what}; per process: "
            + ", ".join(f"process {i}: {int(n)}" for i, n in enumerate(sizes))
        )


def is_chief() -> bool:
    """True in the process that prints progress and writes files (process 0)."""
    return jax.process_index() == 0
