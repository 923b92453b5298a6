"""Callbacks that record: ``History``, ``CSVLogger``, ``LambdaCallback``."""

from __future__ import annotations

import csv
import math
from typing import Any, Callable

import numpy as np

from kerax.training.callbacks.base import Callback


class History(Callback):
    """Records the logs of every epoch: ``history.history["loss"]`` is a list per epoch.

    ``fit`` returns its History. ``history.epoch`` lists the epoch indices.
    """

    def __init__(self) -> None:
        super().__init__()
        self.history: dict[str, list] = {}
        self.epoch: list[int] = []

    def on_train_begin(self, logs=None):
        self.epoch = [] if not self.history else self.epoch

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)


class CSVLogger(Callback):
    """Writes one CSV row per epoch (``epoch`` then the logs, sorted) to ``filename``."""

    def __init__(self, filename: str, separator: str = ",", append: bool = False) -> None:
        super().__init__()
        self.filename, self.separator, self.append = str(filename), separator, append
        self._file = None
        self._writer = None
        self._keys: list[str] | None = None

    def on_train_begin(self, logs=None):
        self._file = open(self.filename, "a" if self.append else "w", newline="")
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self._writer is None:
            self._keys = sorted(logs)
            self._writer = csv.DictWriter(self._file, ["epoch", *self._keys], delimiter=self.separator)
            if not self.append or self._file.tell() == 0:
                self._writer.writeheader()
        row = {"epoch": epoch}
        for k in self._keys:
            v = logs.get(k, "NA")
            row[k] = v if isinstance(v, str) else (repr(float(v)) if np.isscalar(v) or np.ndim(v) == 0 else str(v))
        self._writer.writerow(row)
        self._file.flush()

    def on_train_end(self, logs=None):
        if self._file is not None:
            self._file.close()
            self._file = None


class LambdaCallback(Callback):
    """A callback from plain functions: ``LambdaCallback(on_epoch_end=lambda e, logs: ...)``."""

    def __init__(self, **hooks: Callable[..., Any]) -> None:
        super().__init__()
        from kerax.training.callbacks.base import HOOKS

        unknown = sorted(set(hooks) - set(HOOKS))
        if unknown:
            raise TypeError(f"LambdaCallback: unknown hooks {unknown}; valid hooks: {list(HOOKS)}")
        for name, fn in hooks.items():
            setattr(self, name, fn)


def is_finite_number(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False
