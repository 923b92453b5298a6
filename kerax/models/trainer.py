"""The Keras training methods of a model: compile, fit, evaluate, predict, *_on_batch.

A thin facade over :mod:`kerax.training`; the methods hold no logic of their own beyond
argument plumbing, so the pure step builders and the Keras shell compute the same thing.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from kerax import errors, optimizers


class OptimizerHandle:
    """``model.optimizer``: Keras's view of the optimizer, with a live ``learning_rate``."""

    def __init__(self, model: Any) -> None:
        self._model = model

    @property
    def transformation(self) -> Any:
        return self._model._compiled.optimizer

    @property
    def learning_rate(self) -> float:
        ts = getattr(self._model, "_ts", None)
        if ts is None:
            opt = self.transformation
            lr = getattr(opt, "learning_rate", None)
            if isinstance(lr, (int, float)):
                return float(lr)
            raise errors.ConfigError("the learning rate is known once training has started")
        return float(optimizers.get_learning_rate(ts.opt_state))

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        ts = getattr(self._model, "_ts", None)
        if ts is None:
            raise errors.ConfigError("set the learning rate in compile(), or during fit (callbacks)")
        self._model._ts = ts.replace(opt_state=optimizers.set_learning_rate(ts.opt_state, float(value)))

    def __repr__(self) -> str:
        return f"<optimizer {self.transformation!r}>"


class TrainingMethods:
    """Mixed into ``kx.Model``: Keras's compile/fit/evaluate/predict API."""

    def _init_training(self) -> None:
        self._compiled = None
        self._ts = None
        self._step_cache: dict = {}
        self.stop_training = False

    def compile(self, optimizer: Any = "rmsprop", loss: Any = None, metrics: Any = None,
                loss_weights: Any = None, steps_per_execution: int = 1, jit_compile: bool = True,
                on_nan: str = "warn", max_consecutive_nonfinite: int = 10,
                distribute: Any = None) -> None:
        """Configures training.

        ``optimizer``: a name (``"adam"``), a ``kx.optimizers`` object or any optax
        transformation. ``loss``: a name, a ``kx.losses`` object or a function; one per
        output as a list or dict for multi-output models (with ``loss_weights``).
        ``metrics``: names or objects (``"accuracy"`` resolves from the loss as in Keras).
        ``steps_per_execution``: optimizer steps per compiled call. ``on_nan``: ``"warn"``
        (apply every update, report non-finite losses), ``"stop"`` or ``"skip"`` (never
        apply a non-finite update; see :mod:`kerax.training.steps`).
        """
        from kerax import losses
        from kerax.training.setup import CompileConfig
        from kerax.training.steps import ON_NAN

        if loss is None:
            raise errors.ConfigError("compile: loss= is required (e.g. loss='mse')")
        for spec in loss.values() if isinstance(loss, dict) else loss if isinstance(loss, (list, tuple)) else [loss]:
            if spec is not None:
                losses.get(spec)  # fail now on unknown names, listing the valid ones
        if on_nan not in ON_NAN:
            raise errors.ConfigError(f"compile: on_nan must be one of {list(ON_NAN)}; received {on_nan!r}")
        if not jit_compile:
            raise errors.ConfigError("compile: jit_compile=False is not supported; kerax always compiles with XLA")
        from kerax.training.steps import _checked

        _checked(distribute)
        if not isinstance(steps_per_execution, int) or steps_per_execution < 1:
            raise errors.ConfigError(f"compile: steps_per_execution must be a positive int; received {steps_per_execution!r}")
        self._compiled = CompileConfig(
            optimizer=optimizers.get(optimizer), loss=loss, metrics=metrics, loss_weights=loss_weights,
            steps_per_execution=steps_per_execution, on_nan=on_nan,
            max_consecutive_nonfinite=int(max_consecutive_nonfinite), jit_compile=jit_compile,
            distribute=distribute,
        )
        self._ts = None
        self._step_cache = {}

    @property
    def optimizer(self) -> OptimizerHandle:
        if self._compiled is None:
            raise errors.NotCompiledError("the model has no optimizer until compile() is called")
        return OptimizerHandle(self)

    @property
    def compiled(self) -> bool:
        return self._compiled is not None

    def fit(self, x: Any = None, y: Any = None, batch_size: int | None = None, epochs: int = 1,
            verbose: Any = "auto", callbacks: list | None = None, validation_split: float = 0.0,
            validation_data: Any = None, shuffle: bool = True, class_weight: dict | None = None,
            sample_weight: Any = None, initial_epoch: int = 0, steps_per_epoch: int | None = None,
            validation_steps: int | None = None, validation_batch_size: int | None = None,
            validation_freq: int = 1, seed: int | None = None, check_finite_inputs: bool = False):
        """Trains for ``epochs`` epochs; returns a ``History``. Arguments as in Keras, plus
        ``seed`` (weights, shuffling and dropout; default from ``kx.utils.set_random_seed``)
        and ``check_finite_inputs`` (refuse NaN/inf in ``x`` before training)."""
        from kerax.training.loop import fit

        return fit(self, x, y, batch_size, epochs, verbose, callbacks, validation_split,
                   validation_data, shuffle, class_weight, sample_weight, initial_epoch,
                   steps_per_epoch, validation_steps, validation_batch_size, validation_freq,
                   seed, check_finite_inputs)

    def evaluate(self, x: Any = None, y: Any = None, batch_size: int | None = None,
                 verbose: Any = "auto", sample_weight: Any = None, steps: int | None = None,
                 callbacks: list | None = None, return_dict: bool = False) -> Any:
        """The loss and metrics on ``(x, y)``: a float, ``[loss, *metrics]``, or a dict."""
        from kerax.training.evaluation import evaluate

        return evaluate(self, x, y, batch_size, verbose, sample_weight, steps, callbacks, return_dict)

    def predict(self, x: Any, batch_size: int | None = None, verbose: Any = "auto",
                steps: int | None = None, callbacks: list | None = None) -> Any:
        """The outputs on ``x`` as NumPy arrays (``training=False``)."""
        from kerax.training.evaluation import predict

        return predict(self, x, batch_size, 0 if verbose == "auto" else verbose, steps, callbacks)

    def train_on_batch(self, x: Any, y: Any = None, sample_weight: Any = None,
                       class_weight: dict | None = None, return_dict: bool = False) -> Any:
        """One optimizer step on one batch; returns the batch's loss (and metrics)."""
        history = self.fit(x, y, batch_size=_rows(x), epochs=1, verbose=0, shuffle=False,
                           sample_weight=sample_weight, class_weight=class_weight)
        logs = {k: v[-1] for k, v in history.history.items()}
        return logs if return_dict else _as_list(self, logs)

    def test_on_batch(self, x: Any, y: Any = None, sample_weight: Any = None, return_dict: bool = False) -> Any:
        """The loss (and metrics) of one batch, without updating."""
        return self.evaluate(x, y, batch_size=_rows(x), verbose=0, sample_weight=sample_weight,
                             return_dict=return_dict)

    def save_weights(self, path: str) -> None:
        """Writes the held weights to a safetensors file keyed by weight path."""
        from kerax.saving import save_weights

        save_weights(self, path)

    def load_weights(self, path: str, skip_mismatch: bool = False) -> None:
        """Loads weights saved by :meth:`save_weights` (names, shapes, dtypes checked first)."""
        from kerax.saving import load_weights

        load_weights(self, path, skip_mismatch)
        if getattr(self, "_ts", None) is not None:
            self._ts = None  # the optimizer state belonged to the old weights

    def save(self, path: str, include_optimizer: bool = True) -> None:
        """Writes the whole model (architecture, weights, optimizer state) to one ``.kerax`` file."""
        from kerax.saving.model_file import save_model

        save_model(self, path, include_optimizer=include_optimizer)

    def predict_on_batch(self, x: Any) -> Any:
        """The outputs of one batch as NumPy arrays."""
        return self.predict(x, batch_size=_rows(x), verbose=0)


def _rows(x: Any) -> int:
    leaves = jax.tree.leaves(x)
    return max(int(np.shape(leaves[0])[0]) if leaves and np.ndim(leaves[0]) else len(x), 1)


def _as_list(model: Any, logs: dict) -> Any:
    from kerax.training.setup import objectives_for

    names = [k for k in logs]
    values = [logs[k] for k in names]
    return values[0] if len(values) == 1 else values
