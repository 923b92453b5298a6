"""``DataParallel``: the same training step on several devices, each with a slice of the batch.

Two modes, one result (equal to one device on the same global batch):

* ``mode="shard"`` (default): ``jax.jit`` over arrays laid out with ``NamedSharding`` on a
  1-D ``Mesh`` axis (``"data"``): the train state replicated, every batch split along its
  leading axis. XLA partitions the program and inserts the all-reduce itself.
* ``mode="pmap"``: the train state replicated with a leading device axis; ``jax.pmap`` runs
  the step per device and the gradients, losses and metric states are summed with
  ``lax.psum`` (BatchNormalization with ``synchronized=True`` averages its batch moments).

A global batch that does not split evenly is padded to a multiple of the device count;
padded rows have weight 0, so losses and metrics stay exact (said once in the log). In a
multi-process run the devices of all processes form the mesh, ``batch_size`` is global and
each process feeds its own share (built into global arrays with
``jax.make_array_from_process_local_data``).
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from kerax import errors

log = logging.getLogger("kerax")
MODES = ("shard", "pmap")


class DataParallel:
    """Data parallelism over ``devices`` (default: all devices of all processes).

    Example::

        dp = kx.distribute.DataParallel()              # every device, mode="shard"
        model.compile(optimizer="adam", loss="mse", distribute=dp)
    """

    def __init__(self, devices: Sequence[Any] | None = None, mode: str = "shard", axis_name: str = "data") -> None:
        if mode not in MODES:
            raise errors.ConfigError(f"DataParallel: mode must be one of {list(MODES)}; received {mode!r}")
        if not isinstance(axis_name, str) or not axis_name:
            raise errors.ConfigError(f"DataParallel: axis_name must be a non-empty string; received {axis_name!r}")
        if devices is None:
            devices = jax.local_devices() if mode == "pmap" else jax.devices()
        devices = list(devices)
        if not devices:
            raise errors.ConfigError("DataParallel: no devices given")
        if mode == "pmap" and any(d.process_index != jax.process_index() for d in devices):
            raise errors.ConfigError(
                "DataParallel(mode='pmap') runs on the local devices of one process; the device "
                f"list spans processes {sorted({d.process_index for d in devices})}. Use "
                "mode='shard' for several processes"
            )
        self.devices, self.mode, self.axis_name = devices, mode, axis_name
        self.mesh = Mesh(np.array(devices), (axis_name,))
        self._warned = False

    def __repr__(self) -> str:
        return f"DataParallel(mode={self.mode!r}, devices={len(self.devices)}, axis_name={self.axis_name!r})"

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    @property
    def multi_process(self) -> bool:
        return len({d.process_index for d in self.devices}) > 1

    def sharding(self, *spec: Any) -> NamedSharding:
        """A ``NamedSharding`` on this mesh: ``dp.sharding("data")`` splits the leading axis."""
        for s in spec:
            if s is not None and s != self.axis_name:
                raise errors.ConfigError(
                    f"DataParallel: axis {s!r} is not in the mesh; its only axis is {self.axis_name!r}"
                )
        return NamedSharding(self.mesh, P(*spec))

    # -- placing values --------------------------------------------------------------------

    def replicate(self, tree: Any) -> Any:
        """A full copy of ``tree`` on every device (a leading device axis in pmap mode)."""
        if self.mode == "pmap":  # a leading device axis, one slice per device
            n = self.num_devices
            stacked = jax.tree.map(lambda a: jnp.broadcast_to(jnp.asarray(a)[None], (n, *jnp.shape(a))), tree)
            return jax.device_put(stacked, self.sharding(self.axis_name))
        sharding = self.sharding()
        if self.multi_process:
            return jax.tree.map(lambda a: _global(sharding, a), tree)
        return jax.device_put(tree, sharding)

    def unreplicate(self, tree: Any) -> Any:
        """One copy of a replicated tree, on this process (device 0's in pmap mode)."""
        if self.mode == "pmap":
            return jax.tree.map(lambda a: a[0], tree)
        return jax.tree.map(lambda a: a if a.is_fully_addressable else a.addressable_data(0), tree)

    def check_batch_size(self, batch_size: int) -> None:
        """A configured batch must give every device at least one row."""
        local = self.num_devices // (jax.process_count() if self.multi_process else 1)
        if batch_size < local:
            raise errors.ConfigError(
                f"batch_size={batch_size} is smaller than the {local} devices of {self!r}; every "
                f"device needs rows: use batch_size >= {local}"
            )

    def shard_batch(self, batch: Any, mask: np.ndarray | None = None, stacked: bool = False) -> tuple[Any, Any]:
        """Splits a host batch over the devices: ``(device batch, device mask)``.

        ``batch`` leaves have the rows on axis 0 (axis 1 with ``stacked=True``: a leading
        axis of steps). Rows are padded to a multiple of the device count; ``mask`` marks
        the real ones. In a multi-process run each process passes its own rows.
        """
        axis = 1 if stacked else 0
        leaves = [a for a in jax.tree.leaves(batch)]
        rows = int(leaves[0].shape[axis])
        if mask is None:
            mask = np.ones(leaves[0].shape[: axis + 1], np.float32)
        local_devices = self.num_devices // jax.process_count() if self.multi_process else self.num_devices
        pad = (-rows) % local_devices
        if pad:
            if not self._warned:
                log.warning("a batch of %d rows does not split over %d devices: padded with %d masked "
                            "rows (losses and metrics stay exact)", rows, local_devices, pad)
                self._warned = True
            widths = lambda a: [(0, 0)] * axis + [(0, pad)] + [(0, 0)] * (a.ndim - axis - 1)
            batch = jax.tree.map(lambda a: np.pad(a, widths(a)), batch)
            mask = np.pad(mask, widths(mask))
        if self.mode == "pmap":
            split = lambda a: np.moveaxis(a.reshape(*a.shape[:axis], self.num_devices, -1, *a.shape[axis + 1:]), axis, 0)
            put = lambda a: jax.device_put(split(a), self.sharding(self.axis_name))
            return jax.tree.map(put, batch), put(mask)
        spec = (None, self.axis_name) if stacked else (self.axis_name,)
        sharding = self.sharding(*spec)
        if self.multi_process:
            put = lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a))
        else:
            put = lambda a: jax.device_put(np.asarray(a), sharding)
        return jax.tree.map(put, batch), put(mask)


def _global(sharding: NamedSharding, a: Any) -> Any:
    """A global array from this process's copy (random keys travel as their key data)."""
    if hasattr(a, "dtype") and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
        data = jax.make_array_from_process_local_data(sharding, np.asarray(jax.random.key_data(a)))
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(a))
    return jax.make_array_from_process_local_data(sharding, np.asarray(a))


def replicate(tree: Any, devices: Sequence[Any] | None = None) -> Any:
    """``DataParallel(devices, mode="pmap").replicate(tree)``: a leading device axis."""
    return DataParallel(devices, mode="pmap").replicate(tree)


def unreplicate(tree: Any) -> Any:
    """The first device's copy of a pmap-replicated tree."""
    return jax.tree.map(lambda a: a[0], tree)


def shard_batch(batch: Any, devices: Sequence[Any] | None = None) -> Any:
    """Splits a batch's leading axis over the local devices (pmap layout ``(devices, rows/devices, ...)``)."""
    dp = DataParallel(devices, mode="pmap")
    rows = int(jax.tree.leaves(batch)[0].shape[0])
    if rows % dp.num_devices:
        raise errors.ShapeError(
            f"shard_batch: {rows} rows do not split over {dp.num_devices} devices; use a batch size "
            f"divisible by {dp.num_devices} (fit pads and masks for you)"
        )
    return dp.shard_batch(batch)[0]
