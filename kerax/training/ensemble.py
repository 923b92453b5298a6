"""Ensembles and hyperparameter sweeps: N copies of a model trained as one compiled program.

Pure level: :func:`vmap_train_step` maps a ``make_train_step`` step over a leading member
axis of a stacked :class:`~kerax.TrainState` (the batch shared or one per member). Shell:
``model.fit(..., ensemble=N, ensemble_hyperparams={"learning_rate": [...]})``, which
this module runs (``Model.fit`` dispatches here); then ``predict(ensemble="mean" | "all")``,
per-member ``evaluate`` and ``model.ensemble_member(i)`` (in :mod:`.ensemble_predict`).

Member ``i`` of ``fit(ensemble=N, seed=s)`` uses the seed ``s + i`` for everything a plain
``fit(seed=s + i)`` seeds: initial weights (``key(s + i)``), dropout
(``fold_in(key(s + i), 1)``) and the epoch shuffles (``epoch_order(n, shuffle, s + i,
epoch)``), so it equals that plain fit of a freshly built model. The data is copied to the
device once and shared; each execution sends per-member index arrays ``(N, K, B)``.

How the member axis is mapped: ``jax.vmap`` in general. XLA:CPU turns a vmapped
convolution (a kernel per member) into one grouped convolution, which it expands into a
dense one with N times the work (measured with jax 0.10.2: the digits CNN step ran ~40x
slower for 8 members, not 8x); there the members are unrolled inside the same compiled
program instead (same numbers), as ``steps_per_execution`` unrolls its steps.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from kerax import errors
from kerax.data import ArrayData, epoch_order
from kerax.training import setup
from kerax.training.callbacks import CallbackList, History, TerminateOnNaN
from kerax.training.callbacks.progress import Progress, resolve_verbose
from kerax.training.objectives import NAN_KEY
from kerax.training.steps import TrainStep, release_free_heap, uses_conv
from kerax.training.train_state import TrainState
from kerax.utils import default_seed

_INJECT = (optax.InjectStatefulHyperparamsState, optax.InjectHyperparamsState)
# Callbacks that act on a single model's weights or optimizer: refused in an ensemble fit.
_REFUSED = ("ModelCheckpoint", "BackupAndRestore", "ReduceLROnPlateau", "LearningRateScheduler")
_MEMBER_KEY = re.compile(r"^(.*)_member_(\d+)$")


# -- mapping the member axis ---------------------------------------------------------------------


def _unroll_default(model: Any) -> bool:
    return uses_conv(model) and jax.default_backend() == "cpu"


def member_map(fn: Callable, in_axes: tuple, unroll: bool) -> Callable:
    """``jax.vmap(fn, in_axes)`` over the member axis, or (``unroll``) a Python loop over the
    members traced into the same program, with the outputs stacked on a leading axis."""
    if not unroll:
        return jax.vmap(fn, in_axes=in_axes)

    def mapped(*args: Any) -> Any:
        n = next(jax.tree.leaves(a)[0].shape[0] for a, ax in zip(args, in_axes) if ax == 0)
        outs = [fn(*[a if ax is None else jax.tree.map(lambda v: v[m], a) for a, ax in zip(args, in_axes)])
                for m in range(n)]
        return jax.tree.map(lambda *o: jnp.stack(o), *outs)

    return mapped


def vmap_train_step(train_step: TrainStep, *, shared_batch: bool = True,
                    unroll: bool | None = None) -> Callable[[TrainState, Any], tuple[TrainState, dict]]:
    """Maps ``train_step`` (from ``kx.make_train_step``) over a leading member axis.

    Args:
      train_step: a step from ``kx.make_train_step`` without ``distribute``.
      shared_batch: True: every member trains on the same ``batch`` (shapes as for
        ``train_step``). False: each leaf of ``batch`` has a leading member axis ``(N, ...)``.
      unroll: loop over the members inside the compiled program instead of ``jax.vmap``
        (same numbers); default: for models with convolutions on CPU (see module doc).

    Returns:
      A jit-compiled ``step(ts, batch) -> (ts, logs)``: ``ts`` is a ``TrainState`` whose
      leaves have a leading axis N (``jax.vmap(create)(keys)``; donated), each log is (N,).

    Example::

        ts = jax.vmap(lambda k: kx.TrainState.create(model, *model.init(k, x[:1]), tx, rng=k))(keys)
        ensemble_step = kx.vmap_train_step(kx.make_train_step(model, loss="mse"))
        ts, logs = ensemble_step(ts, (x, y))      # logs["loss"]: (N,)
    """
    if not isinstance(train_step, TrainStep):
        raise errors.ConfigError("vmap_train_step expects a step from kx.make_train_step; received "
                                 f"train_step={type(train_step).__name__}")
    if train_step.distribute is not None:
        raise errors.ConfigError("vmap_train_step maps one device's step over members; expected a step "
                                 "made without distribute=; received distribute="
                                 f"{type(train_step.distribute).__name__}")
    unroll = _unroll_default(train_step.model) if unroll is None else unroll
    mapped = member_map(train_step._call_impl, (0, None if shared_batch else 0), unroll)
    run = jax.jit(mapped, donate_argnums=(0,))
    names = train_step.objectives.log_names()

    def step(ts: TrainState, batch: Any) -> tuple[TrainState, dict]:
        ts, logs = run(ts, tuple(batch) if isinstance(batch, list) else batch)
        return ts, {k: logs[k] for k in names if k in logs}

    return step


class EnsembleStep:
    """The fit loop's step for N members: ``run(ts, mstate, data, idx)`` with ``ts`` and
    ``mstate`` stacked, ``data`` shared on the device and ``idx`` (N, K, B)."""

    def __init__(self, step: TrainStep) -> None:
        self.step, self.objectives = step, step.objectives
        unroll = _unroll_default(step.model)
        self.run = jax.jit(member_map(step._run, (0, 0, None, 0), unroll), donate_argnums=(0, 1))
        self._compute = jax.jit(jax.vmap(self.objectives.compute))

    def init_metrics(self, members: int) -> dict:
        return jax.tree.map(lambda a: jnp.stack([a] * members), self.objectives.init())

    def compute(self, mstate: dict) -> dict:
        """Per-member logs, each with a leading member axis, in Keras's order."""
        out = self._compute(mstate)
        return {k: out[k] for k in self.objectives.log_names() if k in out}


def host_logs(logs: dict) -> dict:
    """Per-member device logs (N, ...) -> the mean over members under each name, then
    ``<name>_member_<i>`` for every member (Python floats, lists for vector metrics)."""
    values = [np.asarray(v) for v in jax.device_get(list(logs.values()))]
    py = lambda v: float(v) if np.ndim(v) == 0 else np.asarray(v).tolist()
    out = {k: py(v.mean(0)) for k, v in zip(logs, values)}
    for i in range(len(values[0]) if values else 0):
        out.update({f"{k}_member_{i}": py(v[i]) for k, v in zip(logs, values)})
    return out


# -- the held ensemble ---------------------------------------------------------------------------


@dataclasses.dataclass
class Members:
    """What a model holds after ``fit(ensemble=N)``: the stacked train state and its seeds.

    ``published`` is the ``model._params`` object written with it; once something else
    replaces the model's weights (a plain fit, ``set_weights``, ``load_weights``) the
    ensemble no longer describes the model and is ignored."""

    ts: TrainState
    hyperparams: dict
    seeds: list[int]
    published: Any = None
    version: int = 0

    @property
    def size(self) -> int:
        return len(self.seeds)


def held(model: Any) -> Members | None:
    """The model's ensemble, if it still holds the weights the ensemble fit published."""
    members = getattr(model, "_ensemble", None)
    if members is None or members.published is not model._params:
        return None
    return members if members.version == getattr(model, "_weights_version", 0) else None


def _take(tree: Any, i: int) -> Any:
    return jax.tree.map(lambda a: jnp.copy(a[i]), tree)


def _publish(model: Any, members: Members) -> None:
    """Member 0 becomes the model's own weights and train state (== ``fit(seed=s)``)."""
    model._ts = _take(members.ts, 0)
    model._params, model._state = _take(members.ts.params, 0), _take(members.ts.state, 0)
    members.published, members.version = model._params, getattr(model, "_weights_version", 0)
    model._ensemble = members


def _check_members(members: Any) -> int:
    if isinstance(members, bool) or not isinstance(members, (int, np.integer)) or members < 1:
        raise errors.ConfigError(f"ensemble must be a positive int (the number of members); received ensemble={members!r}")
    return int(members)


def _check_hyperparams(hyperparams: Any, members: int) -> dict:
    if hyperparams is None:
        return {}
    if not isinstance(hyperparams, Mapping):
        raise errors.ConfigError("ensemble_hyperparams must be a dict {name: one value per member}; "
                                 f"received {type(hyperparams).__name__}")
    out = {}
    for name, values in hyperparams.items():
        arr = np.asarray(values, np.float64) if not isinstance(values, (str, bytes)) else np.asarray([])
        if arr.shape != (members,) or not np.all(np.isfinite(arr)):
            raise errors.ConfigError(f"ensemble_hyperparams[{name!r}] must hold {members} finite numbers "
                                     f"(one per member, ensemble={members}); received {values!r}")
        out[str(name)] = [float(v) for v in arr]
    return out


def set_hyperparam(opt_state: Any, name: str, value: float) -> Any:
    """``opt_state`` with the injected hyperparameter ``name`` set to ``value``."""
    states = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda s: isinstance(s, _INJECT))
              if isinstance(s, _INJECT)]
    free = lambda s: [k for k in s.hyperparams if k not in getattr(s, "hyperparams_states", {})]
    found = [s for s in states if name in free(s)]
    if len(found) != 1:
        available = sorted({k for s in states for k in free(s)})
        raise errors.ConfigError(
            f"ensemble_hyperparams: expected a constant hyperparameter the optimizer injects "
            f"(available: {available}); received {name!r}. kerax optimizers inject learning_rate; "
            "for others pass e.g. optax.inject_hyperparams(optax.adamw)(learning_rate=1e-3, weight_decay=1e-4)")
    (target,) = found
    old = target.hyperparams[name]
    new = target._replace(hyperparams={**target.hyperparams, name: jnp.asarray(value, jnp.result_type(old))})
    return jax.tree.map(lambda s: new if s is target else s, opt_state, is_leaf=lambda s: isinstance(s, _INJECT))


def _train_state(model: Any, compiled: Any, spec: Any, seeds: list[int], hyper: dict) -> tuple[TrainState, dict]:
    """The stacked train state and its swept hyperparameters: continues a held ensemble of
    the same size, else initialises member i as ``fit(seed=seeds[i])`` does a fresh model."""
    tx, old = compiled.optimizer, held(model)
    if old is not None and old.size == len(seeds):
        if old.ts.tx is tx and (not hyper or hyper == old.hyperparams):
            return old.ts, old.hyperparams
        inits = [(_take(old.ts.params, i), _take(old.ts.state, i)) for i in range(len(seeds))]
    else:
        init = model._init_program(spec)
        inits = jax.block_until_ready([init(jax.random.key(s)) for s in seeds])
        del init
        release_free_heap()  # the init program's memory, as model.build does
    states = []
    for i, (s, (params, state)) in enumerate(zip(seeds, inits)):
        ts = TrainState.create(model, params, state, tx, jax.random.fold_in(jax.random.key(s), 1))
        for name, values in hyper.items():
            ts = ts.replace(opt_state=set_hyperparam(ts.opt_state, name, values[i]))
        states.append(ts)
    return jax.tree.map(lambda *a: jnp.stack(a), *states), hyper


# -- fit -------------------------------------------------------------------------------------------


class EnsembleHistory(History):
    """``fit(ensemble=N)``'s History: ``history["loss"]`` is the mean over members and
    ``history["loss_member_<i>"]`` member i's; ``members[i]["loss"]`` reads the same."""

    def __init__(self, seeds: list[int]) -> None:
        super().__init__()
        self.seeds = list(seeds)

    @property
    def members(self) -> list[dict]:
        out: list[dict] = [{} for _ in self.seeds]
        for key, values in self.history.items():
            match = _MEMBER_KEY.match(key)
            if match:
                out[int(match.group(2))][match.group(1)] = values
        return out

    def best_member_index(self, monitor: str = "val_loss", mode: str = "auto") -> int:
        """The member with the best last-epoch ``monitor`` (non-finite values rank last)."""
        if mode not in ("auto", "min", "max"):
            raise errors.ConfigError(f"best_member: mode must be 'auto', 'min' or 'max'; received {mode!r}")
        found = [m.get(monitor) for m in self.members]
        if any(v is None for v in found) or not found:
            raise errors.ConfigError(f"best_member: {monitor!r} was not recorded per member; "
                                     f"available: {sorted(self.members[0]) if self.members else []}")
        if mode == "auto":
            mode = "max" if any(w in monitor for w in ("acc", "auc", "precision", "recall")) and "loss" not in monitor else "min"
        last = np.array([v[-1] for v in found], np.float64)
        last = np.where(np.isfinite(last), last if mode == "min" else -last, np.inf)
        return int(np.argmin(last))

    def best_member(self, monitor: str = "val_loss", mode: str = "auto") -> Any:
        """A plain model holding the best member's weights (``model.ensemble_member``)."""
        from kerax.training.ensemble_predict import member_model

        return member_model(self.model, self.best_member_index(monitor, mode))


def _check_callbacks(callbacks: list) -> None:
    for cb in callbacks:
        name = type(cb).__name__
        if name in _REFUSED or getattr(cb, "restore_best_weights", False):
            raise errors.ConfigError(
                f"fit(ensemble=...) does not support the callback {name}"
                f"{' with restore_best_weights=True' if name not in _REFUSED else ''}: it acts on one "
                "model's weights or learning rate; expected History, EarlyStopping, CSVLogger, "
                "TerminateOnNaN, TensorBoard or your own callbacks")


def fit(model: Any, members: Any, hyperparams: Any, x: Any, y: Any, batch_size: int | None, epochs: int,
        verbose: Any, callbacks: list | None, validation_split: float, validation_data: Any, shuffle: bool,
        class_weight: dict | None, sample_weight: Any, initial_epoch: int, steps_per_epoch: int | None,
        validation_steps: int | None, validation_batch_size: int | None, validation_freq: int,
        seed: int | None, check_finite_inputs: bool) -> EnsembleHistory:
    """``Model.fit(..., ensemble=members, ensemble_hyperparams=hyperparams)``; see the module doc."""
    from kerax.training.loop import InFlight, _validation, in_flight_depth, index_groups, wake_period

    compiled = setup.require_compiled(model, "fit")
    if members is None:
        raise errors.ConfigError("ensemble_hyperparams needs ensemble=N (one value per member); received ensemble=None")
    members = _check_members(members)
    if compiled.distribute is not None:
        raise errors.ConfigError("fit(ensemble=...) runs on one device; expected compile(distribute=None); "
                                 f"received distribute={type(compiled.distribute).__name__}")
    if getattr(compiled, "dp", None) is not None:
        raise errors.ConfigError("fit(ensemble=...) does not account DP-SGD privacy per member; expected "
                                 f"compile(dp=None); received dp={type(compiled.dp).__name__}")
    hyper = _check_hyperparams(hyperparams, members)
    user_callbacks = list(callbacks or [])
    _check_callbacks(user_callbacks)
    batch_size = 32 if batch_size is None else batch_size
    if not isinstance(batch_size, int) or batch_size < 1:
        raise errors.ConfigError(f"batch_size must be a positive int; received {batch_size!r}")
    if not isinstance(epochs, int) or epochs < 0 or initial_epoch < 0:
        raise errors.ConfigError(f"epochs and initial_epoch must be non-negative ints; received {epochs!r}, {initial_epoch!r}")
    seed = default_seed() if seed is None else int(seed)
    data = setup.prepare(model, x, y, sample_weight, class_weight, "x")
    if not isinstance(data, ArrayData):
        raise errors.DataError("fit(ensemble=...) needs in-memory arrays (x, y); received an iterable "
                               f"of batches ({type(x).__name__}); convert it with numpy first")
    val = None
    if validation_split:
        data, val = data.split(validation_split)
    if validation_data is not None:
        val = _validation(model, validation_data)
    if check_finite_inputs:
        data.check_finite()
    setup.build_if_needed(model, data.x, seed)
    objectives = setup.objectives_for(model, compiled, data.x)
    setup.check_targets(objectives, model, data)
    if isinstance(val, ArrayData):
        setup.check_targets(objectives, model, val)

    on_nan = "stop" if any(isinstance(c, TerminateOnNaN) for c in user_callbacks) else compiled.on_nan
    step = setup.train_step_for(model, compiled, objectives, on_nan)
    key = ("ensemble_train", id(step))
    if key not in model._step_cache:
        model._step_cache[key] = EnsembleStep(step)
    estep = model._step_cache[key]
    seeds = [seed + i for i in range(members)]
    spec = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), data.x)
    ens = Members(*_train_state(model, compiled, spec, seeds, hyper), seeds=seeds)
    _publish(model, ens)

    history = EnsembleHistory(seeds)
    verbose = resolve_verbose(verbose)
    steps_total = -(-data.n // batch_size) if steps_per_epoch is None else min(steps_per_epoch, -(-data.n // batch_size))
    cbs = CallbackList(user_callbacks + [history], model,
                       {"epochs": epochs, "steps": steps_total, "verbose": verbose, "ensemble": members, "seeds": seeds})
    device_data = setup.to_device(data)
    batch_logs, batch_begin = cbs.wants("on_train_batch_end"), cbs.wants("on_train_batch_begin")
    model.stop_training = False
    cbs.on_train_begin(None)
    logs: dict = {}
    for epoch in range(initial_epoch, epochs):
        cbs.on_epoch_begin(epoch, None)
        per_member = [index_groups(epoch_order(data.n, shuffle, s, epoch), batch_size, step.k, steps_per_epoch)
                      for s in seeds]
        groups = jax.device_put([np.stack(g).astype(np.int32) for g in zip(*per_member)])  # each (N, K, B)
        mstate, pending, batch = estep.init_metrics(members), InFlight(in_flight_depth(), wake_period()), 0
        progress = Progress(verbose, sum(g.shape[1] for g in groups), f"Epoch {epoch + 1}/{epochs}")
        mean_logs = lambda: {k: v.mean(0) for k, v in estep.compute(mstate).items()}
        halted = False
        for idx in groups:
            if batch_begin:
                cbs.on_train_batch_begin(batch, None)
            ens.ts, mstate, token = estep.run(ens.ts, mstate, device_data, idx)
            pending.push(token)
            if batch_logs:
                cbs.on_train_batch_end(batch, host_logs(estep.compute(mstate)))
            batch += idx.shape[1]
            progress.update(idx.shape[1], mean_logs)
            if on_nan != "warn" and _nan_halt(mstate, on_nan, compiled.max_consecutive_nonfinite):
                halted = True
                break
        logs = host_logs(estep.compute(mstate))
        bad = np.asarray(jax.device_get(mstate[NAN_KEY]))[:, 0]
        if bad.any() and on_nan == "warn":
            warnings.warn(f"epoch {epoch + 1}: members {np.flatnonzero(bad).tolist()} had non-finite "
                          "losses or gradients", stacklevel=3)
        _publish(model, ens)
        if val is not None and (epoch + 1) % validation_freq == 0 and not halted:
            from kerax.training.ensemble_predict import run_eval

            val_logs = run_eval(model, objectives, val, validation_batch_size or batch_size, validation_steps, 0)
            logs.update({f"val_{k}": v for k, v in val_logs.items()})
        progress.close({k: v for k, v in logs.items() if not _MEMBER_KEY.match(k)})
        cbs.on_epoch_end(epoch, logs)
        if halted:
            print(f"Epoch {epoch + 1}: every member had a non-finite loss; stopped")
            model.stop_training = True
        if model.stop_training:
            break
    cbs.on_train_end(logs)
    return history


def _nan_halt(mstate: dict, on_nan: str, max_bad: int) -> bool:
    """"stop": True once every member froze; "skip": raises when a member hits the limit."""
    counts = np.asarray(jax.device_get(mstate[NAN_KEY]))  # (N, 2): total, consecutive
    if on_nan == "skip" and (counts[:, 1] >= max_bad).any():
        member = int(np.argmax(counts[:, 1]))
        raise errors.NonFiniteLossError(
            f"member {member}: {int(counts[member, 1])} consecutive steps had a non-finite loss or "
            f"gradient (limit max_consecutive_nonfinite={max_bad}); none of them was applied")
    return on_nan == "stop" and bool((counts[:, 0] > 0).all())
