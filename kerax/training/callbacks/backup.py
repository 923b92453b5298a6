"""``BackupAndRestore``: resume an interrupted ``fit`` exactly where its last backup was.

At each epoch end (or every ``save_freq`` batches) the callback writes the whole train state
(params, non-trainable state, optimizer state, step, rng) and the epoch/batch position to
``backup_dir`` with :class:`kerax.checkpoint.CheckpointManager`. When ``fit`` starts and a
backup exists, it is restored into ``model._ts`` and the loop continues at the next epoch
(or the next batch of the interrupted epoch), so the result equals an uninterrupted run
(bitwise on CPU with the same ``fit(seed=...)``). A ``fit`` that ends normally deletes the
backup (``delete_checkpoint=True``); one that ends in an exception, or with a non-finite
loss, keeps it. An epoch that ends with a non-finite loss is not backed up at its end: the
epoch-end backup stays that of the last epoch that ended well (mid-epoch backups are not
checked).
"""

from __future__ import annotations

import math
import shutil
import warnings
from typing import Any

from kerax import errors
from kerax.saving.checkpoint import CheckpointManager
from kerax.training.callbacks.base import Callback


class BackupAndRestore(Callback):
    """Keras's ``BackupAndRestore``: back up the train state; restore it when ``fit`` restarts.

    Args:
        backup_dir: directory of the backups (one per ``fit`` run: do not share it).
        save_freq: ``"epoch"`` or a positive int (back up every that many batches; resuming
            mid-epoch needs in-memory data, whose batch order is recomputed from the seed).
        double_checkpoint: keep the two newest backups instead of one.
        delete_checkpoint: delete the backups when ``fit`` ends normally.

    Example::

        model.fit(x, y, epochs=10, seed=0, callbacks=[kx.callbacks.BackupAndRestore("backup")])
        # killed during epoch 6? run the same line again: it continues from epoch 6.
    """

    def __init__(self, backup_dir: str, save_freq: Any = "epoch", double_checkpoint: bool = False,
                 delete_checkpoint: bool = True) -> None:
        super().__init__()
        if not backup_dir:
            raise errors.ConfigError(f"BackupAndRestore: backup_dir must be a directory path; received {backup_dir!r}")
        if save_freq != "epoch" and (isinstance(save_freq, bool) or not isinstance(save_freq, int) or save_freq < 1):
            raise errors.ConfigError(
                f"BackupAndRestore: save_freq must be 'epoch' or a positive int; received {save_freq!r}"
            )
        self.backup_dir, self.save_freq = str(backup_dir), save_freq
        self.double_checkpoint, self.delete_checkpoint = bool(double_checkpoint), bool(delete_checkpoint)
        self._manager: CheckpointManager | None = None
        self._epoch = 0
        self._saved_at = 0  # the batch of the current epoch the last backup was taken before

    @property
    def manager(self) -> CheckpointManager:
        if self._manager is None:
            self._manager = CheckpointManager(self.backup_dir, max_to_keep=2 if self.double_checkpoint else 1)
        return self._manager

    def on_train_begin(self, logs=None):
        self._manager = None  # a fresh listing (and dead writers' temp dirs removed)
        if self.manager.latest_step() is None:
            return
        template = getattr(self.model, "_ts", None)
        if template is None:
            raise errors.ConfigError("BackupAndRestore: the model has no train state to restore into")
        ts, meta = self.manager.restore(template)
        self.model._ts = ts
        if meta.get("privacy") is not None:
            self._restore_ledger(meta["privacy"])
        elif _dp(self.model) is not None:
            warnings.warn(f"BackupAndRestore: the backup in {self.backup_dir} holds no privacy record (written "
                          "by an older kerax or by a fit without dp=): the DP-SGD steps before it are not in "
                          "the privacy ledger, and epsilon counts only the steps from here", stacklevel=2)
        epoch, batch = int(meta["epoch"]), meta.get("batch")
        if batch is None:  # an epoch-end backup: continue with the next epoch
            self.model._resume_epoch = epoch + 1
        else:  # a mid-epoch backup: the same epoch, after the batches already done
            self.model._resume_epoch = epoch
            self.model._resume_batch = int(batch)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._saved_at = getattr(self.model, "_resume_batch", None) or 0

    def on_train_batch_begin(self, batch, logs=None):
        # Backs up the state *before* batch ``batch`` (all earlier batches applied): exact
        # with any steps_per_execution. Data parallel runs back up at epoch ends only.
        if self.save_freq == "epoch" or getattr(self.model._compiled, "distribute", None) is not None:
            return
        if batch - self._saved_at >= self.save_freq:
            self._saved_at = batch
            self._backup({"epoch": self._epoch, "batch": int(batch), "metrics": {}})

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not _isfinite(loss):
            # Not a state to resume from: NaN weights (on_nan="warn"), an epoch stopped part-way
            # or one whose every step was skipped (its loss is NaN then). The last one stays.
            return
        self._backup({"epoch": epoch, "batch": None, "metrics": _finite(logs)})

    def on_train_end(self, logs=None):
        loss = (logs or {}).get("loss")
        finite = loss is None or _isfinite(loss)
        if self.delete_checkpoint and finite:
            shutil.rmtree(self.backup_dir, ignore_errors=True)
        self._manager = None

    def _backup(self, meta: dict) -> None:
        from kerax.privacy import accountant

        ts = self.model._ts
        ledger = accountant.ledger_of(self.model)
        if ledger or _dp(self.model) is not None:  # the DP-SGD steps behind these weights (kx.privacy)
            meta["privacy"] = {"ledger": accountant.ledger_to_json(ledger)}
        self.manager.save(int(ts.step), ts, meta)

    def _restore_ledger(self, saved: Any) -> None:
        """The privacy ledger behind the backed-up weights (the steps of the backed-up run
        included, at its own noise and rate): the resumed ``fit`` adds its own steps, in this
        process or a new one; those an interrupted attempt took after the backup, dropped
        with their weights, are not counted."""
        from kerax.privacy import accountant

        try:
            ledger = accountant.ledger_from_json(saved.get("ledger") if isinstance(saved, dict) else None)
        except errors.ConfigError as e:
            raise errors.CorruptFileError(f"BackupAndRestore: {self.backup_dir}: malformed privacy record ({e})") from None
        self.model._privacy_ledger = ledger
        self.model._fit_steps_base = getattr(self.model, "_steps_executed", 0)  # this fit's steps: from here

    def wants(self, hook: str) -> bool:
        if hook == "on_train_batch_begin":  # per-batch hooks only when asked for
            return self.save_freq != "epoch"
        return super().wants(hook)


def _dp(model: Any) -> Any:
    return getattr(getattr(model, "_compiled", None), "dp", None)


def _isfinite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return True


def _finite(logs: Any) -> dict:
    """Scalar logs as JSON numbers (non-finite values as strings)."""
    out = {}
    for k, v in (logs or {}).items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        out[k] = f if math.isfinite(f) else str(f)
    return out
