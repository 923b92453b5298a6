"""Stopping a run cleanly on SIGTERM (a scheduler's preemption): back up, then leave.

:func:`sigterm_flag` installs a handler that only records the signal; the
:class:`StopOnSignal` callback notices it at the next batch boundary, has the run's
:class:`~kerax.callbacks.BackupAndRestore` write the train state at that step, and raises
:class:`Preempted`. The command turns that into exit code 143 (128 + SIGTERM), and running
it again with the same output directory continues from the saved step.

Across processes (``jax.distributed``) a scheduler signals each process at its own moment,
or only one of them. At every epoch end the processes exchange their flags (one small
all-gather, the same call in every process), so all of them stop after the same epoch,
whose backup process 0 has written once, and none waits in a collective for a process
that left. Python's SIGTERM handler replaces the one JAX's preemption service installs,
so ``multihost_utils.reached_preemption_sync_point`` is not used: the agreement is the
same, at epoch granularity (the granularity of data-parallel backups).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

import jax
import numpy as np

from kerax.training.callbacks import BackupAndRestore, Callback


class Preempted(Exception):
    """Training stopped on a signal after backing up its state at ``step``."""

    def __init__(self, step: int, backup_dir: str) -> None:
        super().__init__(f"SIGTERM at step {step}; the train state is saved in {backup_dir}")
        self.step, self.backup_dir = step, backup_dir


@contextlib.contextmanager
def sigterm_flag() -> Iterator[threading.Event]:
    """Within the block, SIGTERM sets the yielded event instead of killing the process
    (main thread only; elsewhere the event is never set). The old handler comes back after."""
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: event.set())
    try:
        yield event
    finally:
        signal.signal(signal.SIGTERM, previous)


class StopOnSignal(Callback):
    """Backs up through ``backup`` and raises :class:`Preempted` once ``event`` is set:
    before the next batch (single device; resumes mid-epoch), or at the end of the epoch
    (data parallel, whose backups are taken at epoch ends). Put it after ``backup``."""

    def __init__(self, event: threading.Event, backup: BackupAndRestore) -> None:
        super().__init__()
        self.event, self.backup = event, backup
        self._epoch = 0

    def _parallel(self) -> bool:
        """Data parallel, or several processes each with its own model: stop at epoch ends,
        where every process checks in."""
        return getattr(self.model._compiled, "distribute", None) is not None or jax.process_count() > 1

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.event.is_set() and not self._parallel():
            self.backup._backup({"epoch": self._epoch, "batch": int(batch), "metrics": {}})
            raise Preempted(int(self.model._ts.step), self.backup.backup_dir)

    def on_epoch_end(self, epoch, logs=None):
        if self._signalled_anywhere():  # the backup callback, earlier in the list, has saved this epoch
            raise Preempted(int(self.model._ts.step), self.backup.backup_dir)

    def _signalled_anywhere(self) -> bool:
        """Whether any process has been signalled; every process asks at the same epoch end."""
        if jax.process_count() == 1:
            return self.event.is_set()
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.array([self.event.is_set()], np.int32))
        return bool(np.asarray(flags).any())

    def wants(self, hook: str) -> bool:
        return hook in ("on_epoch_begin", "on_train_batch_begin", "on_epoch_end") or super().wants(hook)
