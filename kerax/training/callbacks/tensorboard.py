"""``TensorBoard``: writes the epoch logs, the learning rate and the model summary as
TensorBoard event files (through the optional ``tensorboardX`` package).

The layout and tags are Keras's, so dashboards carry over: ``log_dir/train`` holds
``epoch_<name>`` for every training log and ``epoch_learning_rate``; ``log_dir/validation``
holds ``epoch_<name>`` for every ``val_<name>`` log; the step is the epoch index. With
``update_freq=N`` the train writer also gets ``batch_<name>`` every N batches, at step
``b`` = the number of batches run so far in this ``fit`` (1-based, so steps N, 2N, ...).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

from kerax import errors
from kerax.training.callbacks.base import Callback

_INSTALL_HINT = 'pip install "kerax[tensorboard]"'


class TensorBoard(Callback):
    """Keras's ``TensorBoard`` callback: scalars and the model summary for TensorBoard.

    Args:
      log_dir: the folder of the run; writers go to ``log_dir/train`` and
        ``log_dir/validation`` (created as needed).
      update_freq: ``"epoch"`` (only epoch-level scalars), ``"batch"`` (same as 1) or an
        int N: also write ``batch_<name>`` scalars every N batches. With
        ``steps_per_execution=K`` a "batch" is one execution of K steps, as in Keras.
        Batch-level scalars copy the logs to the host at every step, which costs speed.
      write_graph: write ``model.summary()`` as a text summary at step 0 (TensorBoard's
        Text tab, tag ``graph/text_summary``); kerax has no TensorFlow graph to show.

    Only the chief process (``jax.process_index() == 0``) writes. The learning rate is the
    ``learning_rate`` log when a learning-rate callback put one there (the rate used during
    the epoch), else ``model.optimizer.learning_rate``; optimizers without an injected rate
    (raw optax) get none.

    Raises:
      ImportError: ``tensorboardX`` is not installed.
      ConfigError: ``update_freq`` is neither ``"epoch"``, ``"batch"`` nor an int >= 1.

    Example::

        tb = kx.callbacks.TensorBoard("logs/run1", update_freq=10)
        model.fit(x, y, epochs=5, validation_split=0.2, callbacks=[tb])
        # then: tensorboard --logdir logs
    """

    def __init__(self, log_dir: str | os.PathLike = "logs", update_freq: str | int = "epoch",
                 write_graph: bool = True) -> None:
        super().__init__()
        try:
            from tensorboardX import SummaryWriter
        except ImportError as e:
            raise ImportError(
                f"kx.callbacks.TensorBoard needs the tensorboardX package, which is not "
                f"installed; install it with: {_INSTALL_HINT}"
            ) from e
        self._summary_writer = SummaryWriter
        self.log_dir = os.fspath(log_dir)
        self.update_freq = _check_update_freq(update_freq)
        self.write_graph = bool(write_graph)
        self._writers: dict[str, Any] = {}
        self._global_batch = 0

    def wants(self, hook: str) -> bool:
        # Per-batch logs cost a host copy per step: ask for them only when they are written.
        if hook == "on_train_batch_end":
            return self.update_freq != "epoch" and _is_chief()
        return super().wants(hook)

    def _writer(self, name: str) -> Any:
        if name not in self._writers:
            self._writers[name] = self._summary_writer(logdir=os.path.join(self.log_dir, name))
        return self._writers[name]

    def on_train_begin(self, logs=None):
        self._global_batch = 0
        if not _is_chief():
            return
        writer = self._writer("train")  # made up front, like Keras, so the run shows at once
        if self.write_graph and self.model is not None:
            lines: list[str] = []
            self.model.summary(print_fn=lines.append)
            # A fenced block keeps the table's columns in TensorBoard's Markdown view.
            writer.add_text("graph", "```\n" + "\n".join(lines) + "\n```", global_step=0)

    def on_train_batch_end(self, batch, logs=None):
        self._global_batch += 1
        if self.update_freq == "epoch" or self._global_batch % self.update_freq or not _is_chief():
            return
        writer = self._writer("train")
        for name, value in (logs or {}).items():
            value = _scalar(value)
            if value is not None:
                writer.add_scalar(f"batch_{name}", value, global_step=self._global_batch)

    def on_epoch_end(self, epoch, logs=None):
        if not _is_chief():
            return
        logs = dict(logs or {})
        train = {k: v for k, v in logs.items() if not k.startswith("val_")}
        if "learning_rate" not in train:
            lr = self._learning_rate()
            if lr is not None:
                train["learning_rate"] = lr
        for writer_name, items in (("train", train.items()),
                                   ("validation", ((k[4:], v) for k, v in logs.items() if k.startswith("val_")))):
            wrote = False
            for name, value in items:
                value = _scalar(value)
                if value is not None:
                    self._writer(writer_name).add_scalar(f"epoch_{name}", value, global_step=epoch)
                    wrote = True
            if wrote:
                self._writer(writer_name).flush()  # a live TensorBoard sees each epoch

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.flush()
            writer.close()
        self._writers = {}

    def _learning_rate(self) -> float | None:
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is None:
            return None
        try:
            return float(optimizer.learning_rate)
        except errors.ConfigError:  # no injected learning rate (e.g. a raw optax optimizer)
            return None


def _check_update_freq(update_freq: Any) -> str | int:
    if update_freq == "batch":
        return 1
    if update_freq == "epoch":
        return "epoch"
    if isinstance(update_freq, (int, np.integer)) and not isinstance(update_freq, bool) and update_freq >= 1:
        return int(update_freq)
    raise errors.ConfigError(
        "TensorBoard: update_freq must be 'epoch', 'batch' or an int >= 1; "
        f"received update_freq={update_freq!r}"
    )


def _scalar(value: Any) -> float | None:
    """``value`` as a float if it is a real number or a 0-d numeric array, else None."""
    array = np.asarray(value)
    if array.ndim != 0 or array.dtype.kind not in "biuf":  # bool, int, uint, float
        return None
    return float(array)


def _is_chief() -> bool:
    return jax.process_index() == 0
