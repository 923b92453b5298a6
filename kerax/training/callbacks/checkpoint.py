"""``ModelCheckpoint``: saves the model's weights (or the whole model) during training."""

from __future__ import annotations

import math
from typing import Any

from kerax import errors
from kerax.training.callbacks.monitor import _Monitor


class ModelCheckpoint(_Monitor):
    """Saves after every epoch (or every ``save_freq`` batches), optionally only the best.

    ``filepath`` may hold format fields filled from the epoch (1-based) and the logs:
    ``"ckpt-{epoch:02d}-{val_loss:.3f}.weights.safetensors"``. With
    ``save_weights_only=True`` the file is ``model.save_weights(...)``'s, else
    ``model.save(...)``'s.
    """

    def __init__(self, filepath: str, monitor: str = "val_loss", verbose: int = 0,
                 save_best_only: bool = False, save_weights_only: bool = False, mode: str = "auto",
                 save_freq: Any = "epoch", initial_value_threshold: float | None = None) -> None:
        super().__init__(monitor, mode, 0.0)
        if save_freq != "epoch" and not (isinstance(save_freq, int) and save_freq > 0):
            raise errors.ConfigError(
                f"ModelCheckpoint: save_freq must be 'epoch' or a positive int; received {save_freq!r}"
            )
        self.filepath, self.verbose = str(filepath), verbose
        self.save_best_only, self.save_weights_only = save_best_only, save_weights_only
        self.save_freq = save_freq
        if initial_value_threshold is not None:
            self.best = float(initial_value_threshold)
        self._batches = 0
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.save_freq == "epoch":
            return
        self._batches += 1
        if self._batches % self.save_freq == 0:
            self._save(self._epoch, logs or {}, batch=batch)

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            self._save(epoch, logs or {})

    def _save(self, epoch: int, logs: dict, batch: int | None = None) -> None:
        fields = {k: float(v) for k, v in logs.items() if _number(v)}
        try:
            path = self.filepath.format(epoch=epoch + 1, batch=batch, **fields)
        except KeyError as e:
            raise errors.ConfigError(
                f"ModelCheckpoint: filepath {self.filepath!r} names {e} which is not in the logs "
                f"{sorted(fields)}"
            ) from None
        if self.save_best_only:
            value = self.current(logs)
            if value is None or not self.improved(value):
                return
            self.best = value
        if self.verbose:
            print(f"Epoch {epoch + 1}: saving model to {path}")
        (self.model.save_weights if self.save_weights_only else self.model.save)(path)

    def wants(self, hook: str) -> bool:
        # Per-batch saving only when asked: keeps fit free of per-step host copies.
        if hook == "on_train_batch_end":
            return self.save_freq != "epoch"
        return super().wants(hook)


def _number(v: Any) -> bool:
    try:
        return math.isfinite(float(v)) or True
    except (TypeError, ValueError):
        return False
