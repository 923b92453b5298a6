"""The ``Callback`` base class and ``CallbackList``: Keras's hook names and order.

Hooks: ``on_train_begin/end(logs)``, ``on_epoch_begin/end(epoch, logs)``,
``on_train_batch_begin/end(batch, logs)``, ``on_test_begin/end``,
``on_test_batch_begin/end``, ``on_predict_begin/end``, ``on_predict_batch_begin/end``.
A callback sees the model (``self.model``) and the fit parameters (``self.params``:
``epochs``, ``steps``, ``verbose``). Setting ``self.model.stop_training = True`` ends
``fit`` after the current epoch.

Per-batch hooks make the fit loop copy the logs to the host every step, which costs speed;
the loop calls them only when some callback overrides them.
"""

from __future__ import annotations

from typing import Any, Iterable

HOOKS = (
    "on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end",
    "on_train_batch_begin", "on_train_batch_end", "on_test_begin", "on_test_end",
    "on_test_batch_begin", "on_test_batch_end", "on_predict_begin", "on_predict_end",
    "on_predict_batch_begin", "on_predict_batch_end",
)
BATCH_HOOKS = tuple(h for h in HOOKS if "batch" in h)


class Callback:
    """Base class: override the hooks you need (all do nothing by default)."""

    def __init__(self) -> None:
        self.model: Any = None
        self.params: dict = {}

    def set_model(self, model: Any) -> None:
        self.model = model

    def set_params(self, params: dict) -> None:
        self.params = params

    def wants(self, hook: str) -> bool:
        """Whether this callback needs ``hook`` called (default: it overrides it)."""
        return overrides(self, hook)

    def on_train_begin(self, logs=None): ...
    def on_train_end(self, logs=None): ...
    def on_epoch_begin(self, epoch, logs=None): ...
    def on_epoch_end(self, epoch, logs=None): ...
    def on_train_batch_begin(self, batch, logs=None): ...
    def on_train_batch_end(self, batch, logs=None): ...
    def on_test_begin(self, logs=None): ...
    def on_test_end(self, logs=None): ...
    def on_test_batch_begin(self, batch, logs=None): ...
    def on_test_batch_end(self, batch, logs=None): ...
    def on_predict_begin(self, logs=None): ...
    def on_predict_end(self, logs=None): ...
    def on_predict_batch_begin(self, batch, logs=None): ...
    def on_predict_batch_end(self, batch, logs=None): ...


def overrides(callback: Callback, hook: str) -> bool:
    return hook in vars(callback) or getattr(type(callback), hook, None) is not getattr(Callback, hook)


class CallbackList:
    """Calls a hook on every callback, in order."""

    def __init__(self, callbacks: Iterable[Callback], model: Any, params: dict) -> None:
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(
                    f"callbacks must be kx.callbacks.Callback instances; received {type(cb).__name__}"
                )
            cb.set_model(model)
            cb.set_params(params)

    def wants(self, hook: str) -> bool:
        """True if some callback overrides ``hook`` (the loop skips host copies otherwise)."""
        return any(cb.wants(hook) for cb in self.callbacks)

    def __getattr__(self, hook: str) -> Any:
        if hook not in HOOKS:
            raise AttributeError(hook)

        def call(*args: Any) -> None:
            for cb in self.callbacks:
                getattr(cb, hook)(*args)

        return call
