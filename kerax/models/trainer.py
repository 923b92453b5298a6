"""The Keras training methods of a model: compile, fit, evaluate, predict, *_on_batch.

A thin facade over :mod:`kerax.training`; the methods hold no logic of their own beyond
argument plumbing, so the pure step builders and the Keras shell compute the same thing.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable

import jax
import numpy as np

from kerax import errors, loss_scale, optimizers
from kerax.training.memory import memory_hints


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
        self._ensemble = None  # fit(ensemble=N)'s members (kerax.training.ensemble)
        # Optimizer steps fit has executed on this model object, counted on the host (the
        # privacy ledger's step count; a donated train state cannot be read after an error).
        self._steps_executed = 0
        self.stop_training = False

    def compile(self, optimizer: Any = "rmsprop", loss: Any = None, metrics: Any = None,
                loss_weights: Any = None, steps_per_execution: int = 1, jit_compile: bool = True,
                on_nan: str = "warn", max_consecutive_nonfinite: int = 10,
                distribute: Any = None, dp: Any = None, scan_layers: bool = False,
                strict_dtypes: bool = False) -> None:
        """Configures training.

        ``optimizer``: a name (``"adam"``), a ``kx.optimizers`` object or any optax
        transformation. ``loss``: a name, a ``kx.losses`` object or a function; one per
        output as a list or dict for multi-output models (with ``loss_weights``).
        ``metrics``: names or objects (``"accuracy"`` resolves from the loss as in Keras).
        ``steps_per_execution``: optimizer steps per compiled call. ``on_nan``: ``"warn"``
        (apply every update, report non-finite losses), ``"stop"`` or ``"skip"`` (never
        apply a non-finite update; see :mod:`kerax.training.steps`). A model whose ``dtype_policy``
        is ``"mixed_float16"`` wraps ``optimizer`` in ``kx.optimizers.LossScaleOptimizer``. ``dp``: a
        ``kx.privacy.DPSGD`` to train with DP-SGD (``fit`` then reports the epsilon spent).
        ``scan_layers``: run each run of identical consecutive layers of a ``Sequential`` by
        one ``lax.scan`` in the compiled steps (same params and results, faster compiles;
        see :mod:`kerax.core.scan`). ``strict_dtypes``: ``fit``, ``evaluate`` and ``predict``
        refuse input arrays whose dtype is not the model input's (``DTypeError``) instead of
        casting them (ints to the weights' float dtype, float64 to float32), as they do by default.
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
        from kerax.privacy.dpsgd import check_config

        check_config(dp, self, distribute)
        for flag, value in (("scan_layers", scan_layers), ("strict_dtypes", strict_dtypes)):
            if not isinstance(value, bool):
                raise errors.ConfigError(f"compile: {flag} must be True or False; received {value!r}")
        if not isinstance(steps_per_execution, int) or steps_per_execution < 1:
            raise errors.ConfigError(f"compile: steps_per_execution must be a positive int; received {steps_per_execution!r}")
        self._compiled = CompileConfig(
            # A mixed_float16 model gets dynamic loss scaling, as in Keras (kerax.loss_scale).
            optimizer=loss_scale.maybe_wrap(optimizers.get(optimizer), getattr(self, "dtype_policy", None)),
            loss=loss, metrics=metrics, loss_weights=loss_weights,
            steps_per_execution=steps_per_execution, on_nan=on_nan,
            max_consecutive_nonfinite=int(max_consecutive_nonfinite), jit_compile=jit_compile,
            distribute=distribute, dp=dp, scan_layers=scan_layers, strict_dtypes=strict_dtypes,
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
            validation_freq: int = 1, seed: int | None = None, check_finite_inputs: bool = False,
            ensemble: int | None = None, ensemble_hyperparams: dict | None = None):
        """Trains for ``epochs`` epochs; returns a ``History``. Arguments as in Keras, plus
        ``seed`` (weights, shuffling and dropout; default from ``kx.utils.set_random_seed``)
        and ``check_finite_inputs`` (refuse NaN/inf in ``x`` before training).

        ``ensemble=N`` trains N independent members (member i as ``fit(seed=seed + i)``) in
        one compiled program; ``ensemble_hyperparams={"learning_rate": [...]}`` gives each
        its own optimizer hyperparameter. See :mod:`kerax.training.ensemble`."""
        with memory_hints(self, "fit", _batch_rows(x, batch_size)):
            if ensemble is not None or ensemble_hyperparams is not None:
                from kerax.training import ensemble as members

                return members.fit(self, ensemble, ensemble_hyperparams, x, y, batch_size, epochs, verbose,
                                   callbacks, validation_split, validation_data, shuffle, class_weight,
                                   sample_weight, initial_epoch, steps_per_epoch, validation_steps,
                                   validation_batch_size, validation_freq, seed, check_finite_inputs)
            return self._fit(x, y, batch_size, epochs, verbose, callbacks, validation_split, validation_data,
                             shuffle, class_weight, sample_weight, initial_epoch, steps_per_epoch,
                             validation_steps, validation_batch_size, validation_freq, seed, check_finite_inputs)

    def _fit(self, x: Any, y: Any, batch_size: Any, epochs: int, verbose: Any, callbacks: Any,
             validation_split: float, validation_data: Any, shuffle: bool, class_weight: Any, sample_weight: Any,
             initial_epoch: int, steps_per_epoch: Any, validation_steps: Any, validation_batch_size: Any,
             validation_freq: int, seed: Any, check_finite_inputs: bool, whole_groups: bool = True) -> Any:
        """A plain ``fit`` with DP-SGD's accounting. ``whole_groups``: refuse a ``microbatches``
        that does not divide ``batch_size`` (``train_on_batch``'s one batch is not cut into
        epochs' full batches, and takes the grouping rule as it comes)."""
        from kerax.training.loop import fit

        dp = self._compiled.dp if self._compiled is not None else None
        b = 32 if batch_size is None else batch_size
        if whole_groups and dp is not None and _in_memory(x) and isinstance(b, int) and b >= 1:
            dp.check_batch_size(b)  # (a bad batch_size is loop.fit's to refuse)
        # The steps this fit accounts for: those executed from here, at this fit's noise and
        # sample rate (a save or backup during the fit records them: ``accountant.ledger_of``);
        # the rate is worked out once a step ran, when fit has checked its arguments.
        self._fit_steps_base = getattr(self, "_steps_executed", 0)
        self._dp_running = (functools.partial(_dp_segment, self, dp, x, batch_size, validation_split)
                            if dp is not None else None)
        try:
            history = fit(self, x, y, batch_size, epochs, verbose, callbacks, validation_split,
                          validation_data, shuffle, class_weight, sample_weight, initial_epoch,
                          steps_per_epoch, validation_steps, validation_batch_size, validation_freq,
                          seed, check_finite_inputs)
        finally:  # steps taken before an error spent privacy too
            steps = getattr(self, "_steps_executed", 0) - self._fit_steps_base
            running, self._dp_running = self._dp_running, None
            spent = _account_privacy(self, dp, running, steps, verbose)
        if dp is not None:
            history.privacy = spent
        return history

    def evaluate(self, x: Any = None, y: Any = None, batch_size: int | None = None,
                 verbose: Any = "auto", sample_weight: Any = None, steps: int | None = None,
                 callbacks: list | None = None, return_dict: bool = False) -> Any:
        """The loss and metrics on ``(x, y)``: a float, ``[loss, *metrics]``, or a dict."""
        from kerax.training.evaluation import evaluate

        with memory_hints(self, "evaluate", _batch_rows(x, batch_size)):
            return evaluate(self, x, y, batch_size, verbose, sample_weight, steps, callbacks, return_dict)

    def predict(self, x: Any, batch_size: int | None = None, verbose: Any = "auto",
                steps: int | None = None, callbacks: list | None = None, ensemble: str | None = None) -> Any:
        """The outputs on ``x`` as NumPy arrays (``training=False``). After ``fit(ensemble=N)``:
        the members' mean (``ensemble="mean"``, the default) or all of them stacked
        ``(N, rows, ...)`` (``ensemble="all"``)."""
        from kerax.training import ensemble_predict
        from kerax.training.ensemble import held
        from kerax.training.evaluation import predict

        with memory_hints(self, "predict", _batch_rows(x, batch_size)):
            if ensemble is not None or held(self) is not None:
                return ensemble_predict.predict(self, x, batch_size, steps, ensemble,
                                                verbose=0 if verbose == "auto" else verbose, callbacks=callbacks)
            return predict(self, x, batch_size, 0 if verbose == "auto" else verbose, steps, callbacks)

    @property
    def ensemble_size(self) -> int | None:
        """N after ``fit(ensemble=N)`` (while the model holds those members), else None."""
        from kerax.training.ensemble import held

        members = held(self)
        return None if members is None else members.size

    def ensemble_member(self, index: int) -> Any:
        """A plain model with member ``index``'s weights and train state, after ``fit(ensemble=N)``."""
        from kerax.training.ensemble_predict import member_model

        return member_model(self, index)

    def train_on_batch(self, x: Any, y: Any = None, sample_weight: Any = None,
                       class_weight: dict | None = None, return_dict: bool = False) -> Any:
        """One optimizer step on one batch; returns the batch's loss (and metrics)."""
        with memory_hints(self, "fit", _rows(x)):
            history = self._fit(x, y, _rows(x), 1, 0, None, 0.0, None, False, class_weight, sample_weight, 0,
                                None, None, None, 1, None, False, whole_groups=False)
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


def _batch_rows(x: Any, batch_size: Any) -> int | None:
    """The rows of a batch, for an error message (None: unknown, an iterable's)."""
    if not isinstance(batch_size, (int, type(None))) or not _in_memory(x):
        return None
    try:
        return min(batch_size or 32, _rows(x))
    except Exception:  # noqa: BLE001 - malformed x: fit reports it
        return batch_size


def _in_memory(x: Any) -> bool:
    """Arrays (whose rows ``fit`` counts), not an iterable of batches."""
    return isinstance(x, (np.ndarray, list, tuple, dict)) or hasattr(x, "shape")


def _training_rows(model: Any, x: Any, validation_split: float) -> int | None:
    """``n`` of the sample rate: the rows ``fit`` trains on, over all processes (None for an
    iterable). A multi-process ``fit`` gets each process's equal share (``fit`` checks that)
    and a global ``batch_size``, so the data set is ``n_local * process_count`` rows."""
    if not _in_memory(x):
        return None
    n = _rows(x)
    if validation_split:
        n = int(n * (1.0 - validation_split))  # as ArrayData.split cuts each process's rows
    distribute = getattr(getattr(model, "_compiled", None), "distribute", None)
    if distribute is not None and getattr(distribute, "multi_process", False):
        n *= jax.process_count()
    return n


def _dp_segment(model: Any, dp: Any, x: Any, batch_size: Any, validation_split: float) -> tuple:
    """``(noise_multiplier, sample_rate, n)`` of a DP fit's steps (the ledger's segment)."""
    n = _training_rows(model, x, validation_split)
    b = 32 if batch_size is None else batch_size
    rate = min(b / n, 1.0) if n else None
    # The nominal batch: shorter (last, padded) batches make groups no larger (DPSGD.group_size).
    noise = dp.effective_noise(b)
    if n is None and dp.microbatches is not None:  # an iterable's batch sizes are unknown:
        noise = dp.noise_multiplier / 2  # take its groups to hold several examples (2C)
    return noise, rate, n


def _account_privacy(model: Any, dp: Any, running: Callable[[], tuple] | None, steps: int,
                     verbose: Any = 0) -> Any:
    """Appends a DP fit's ``steps`` (executed, counted on the host) at the noise and rate
    ``running()`` gives (``_dp_segment``) to the model's privacy ledger; the (epsilon,
    delta) spent."""
    if dp is None or running is None or steps <= 0:
        return None
    from kerax.privacy import accountant

    noise, rate, n = running()
    model._privacy_ledger = accountant.extend(accountant.ledger_of(model), accountant.Segment(steps, noise, rate))
    message = accountant.delta_warning(dp.delta, n)
    if message:
        warnings.warn(message, stacklevel=3)
    try:
        spent = accountant.privacy_spent(model, dp.delta)
    except (ImportError, errors.ConfigError) as e:  # training is done; accounting is advisory
        warnings.warn(f"DP-SGD: the epsilon spent is unknown: {e}", stacklevel=3)
        return None
    if verbose not in (0, False):
        print(spent)
    return spent


def _as_list(model: Any, logs: dict) -> Any:
    from kerax.training.setup import objectives_for

    names = [k for k in logs]
    values = [logs[k] for k in names]
    return values[0] if len(values) == 1 else values
