"""Callbacks that watch a logged quantity: ``EarlyStopping``, ``ReduceLROnPlateau``,
``TerminateOnNaN``, ``LearningRateScheduler``."""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable

import numpy as np

from kerax import errors
from kerax.training.callbacks.base import Callback

_MAX_WORDS = ("acc", "auc", "precision", "recall", "f1", "fmeasure")


def resolve_mode(monitor: str, mode: str, who: str) -> str:
    """``"min"`` or ``"max"``: whether a smaller or a larger ``monitor`` is better.

    ``mode="auto"`` picks "max" for accuracy-like names (``_MAX_WORDS``, not losses), else
    "min". Every caller that ranks a logged quantity uses this, so that they all agree.

    Raises:
      ConfigError: ``mode`` is not "auto", "min" or "max" (``who`` names the caller).
    """
    if mode not in ("auto", "min", "max"):
        raise errors.ConfigError(f"{who}: mode must be 'auto', 'min' or 'max'; received {mode!r}")
    if mode == "auto":
        return "max" if any(w in monitor for w in _MAX_WORDS) and "loss" not in monitor else "min"
    return mode


class _Monitor(Callback):
    """Tracks the best value of ``monitor`` with ``mode`` ("min", "max" or "auto")."""

    def __init__(self, monitor: str, mode: str, min_delta: float) -> None:
        super().__init__()
        mode = resolve_mode(monitor, mode, type(self).__name__)
        self.monitor, self.mode, self.min_delta = monitor, mode, abs(float(min_delta))
        self.best = math.inf if mode == "min" else -math.inf

    def current(self, logs: dict | None) -> float | None:
        value = (logs or {}).get(self.monitor)
        if value is None:
            warnings.warn(
                f"{type(self).__name__}: the monitored quantity {self.monitor!r} is not in the "
                f"logs (available: {sorted(logs or {})})", stacklevel=3,
            )
            return None
        return float(np.asarray(value))

    def improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta


class EarlyStopping(_Monitor):
    """Stops training when ``monitor`` has not improved for ``patience`` epochs.

    ``restore_best_weights=True`` puts back the weights of the best epoch when it stops
    (and at the end of training if the last epoch was not the best).
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0,
                 verbose: int = 0, mode: str = "auto", baseline: float | None = None,
                 restore_best_weights: bool = False, start_from_epoch: int = 0) -> None:
        super().__init__(monitor, mode, min_delta)
        self.patience, self.verbose, self.baseline = int(patience), verbose, baseline
        self.restore_best_weights, self.start_from_epoch = restore_best_weights, start_from_epoch

    def on_train_begin(self, logs=None):
        self.wait, self.stopped_epoch, self.best_epoch = 0, 0, 0
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_weights = None

    def on_epoch_end(self, epoch, logs=None):
        value = self.current(logs)
        if value is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = (self.model.params, self.model.state)
        self.wait += 1
        if self.improved(value):
            self.best, self.best_epoch = value, epoch
            if self.restore_best_weights:
                self.best_weights = (self.model.params, self.model.state)
            if self.baseline is None or self.improved_over_baseline(value):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def improved_over_baseline(self, value: float) -> bool:
        return value < self.baseline if self.mode == "min" else value > self.baseline

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose:
                print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
            self.model.params, self.model.state = self.best_weights
        if self.stopped_epoch and self.verbose:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")


class ReduceLROnPlateau(_Monitor):
    """Multiplies the learning rate by ``factor`` when ``monitor`` stops improving.

    Works with kerax optimizers (``kx.optimizers.Adam(...)``, or names like ``"adam"``),
    whose learning rate is an injected hyperparameter of the optimizer state.
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 verbose: int = 0, mode: str = "auto", min_delta: float = 1e-4, cooldown: int = 0,
                 min_lr: float = 0.0) -> None:
        if not 0 < factor < 1:
            raise errors.ConfigError(f"ReduceLROnPlateau: factor must be in (0, 1); received {factor!r}")
        super().__init__(monitor, mode, min_delta)
        self.factor, self.patience, self.verbose = float(factor), int(patience), verbose
        self.cooldown, self.min_lr = int(cooldown), float(min_lr)

    def on_train_begin(self, logs=None):
        self.wait = self.cooldown_counter = 0
        self.best = math.inf if self.mode == "min" else -math.inf

    def on_epoch_end(self, epoch, logs=None):
        value = self.current(logs)
        if logs is not None:
            logs["learning_rate"] = self.model.optimizer.learning_rate
        if value is None:
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self.improved(value):
            self.best, self.wait = value, 0
        elif self.cooldown_counter <= 0:
            self.wait += 1
            if self.wait >= self.patience:
                old = self.model.optimizer.learning_rate
                new = max(old * self.factor, self.min_lr)
                if old - new > 1e-12 * max(old, 1e-30):
                    self.model.optimizer.learning_rate = new
                    if self.verbose:
                        print(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new:.4g}.")
                    self.cooldown_counter, self.wait = self.cooldown, 0


class LearningRateScheduler(Callback):
    """Sets the learning rate at the start of each epoch: ``schedule(epoch, lr) -> new lr``."""

    def __init__(self, schedule: Callable[..., float], verbose: int = 0) -> None:
        super().__init__()
        self.schedule, self.verbose = schedule, verbose

    def on_epoch_begin(self, epoch, logs=None):
        try:
            lr = self.schedule(epoch, self.model.optimizer.learning_rate)
        except TypeError:
            lr = self.schedule(epoch)
        lr = float(lr)
        if not math.isfinite(lr):
            raise errors.ConfigError(f"LearningRateScheduler: schedule returned {lr} for epoch {epoch}")
        self.model.optimizer.learning_rate = lr
        if self.verbose:
            print(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to {lr:.4g}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = self.model.optimizer.learning_rate


class TerminateOnNaN(Callback):
    """Stops training at the first non-finite loss, *before* that update is applied.

    Its presence makes ``fit`` run its steps with ``on_nan="stop"``: a step whose loss or
    gradients are not finite leaves the weights as they were, so the model keeps the
    weights of the last good step.
    """

    on_nan = "stop"

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):  # fit has said so already
            self.model.stop_training = True
