"""Ensembles and hyperparameter sweeps: N copies of a model trained as one compiled program.

Pure level: :func:`vmap_train_step` maps a ``make_train_step`` step over a leading member
axis of a stacked :class:`~kerax.TrainState` (the batch shared or one per member). Shell:
``model.fit(..., ensemble=N, ensemble_hyperparams={"learning_rate": [...]})``, which
this module runs (``Model.fit`` dispatches here); then ``predict(ensemble="mean" | "all")``,
per-member ``evaluate`` and ``model.ensemble_member(i)`` (in :mod:`.ensemble_predict`, which
also holds the member-axis map and the :class:`~.ensemble_predict.Members` a model keeps).

Member ``i`` of ``fit(ensemble=N, seed=s)`` uses the seed ``s + i`` for everything a plain
``fit(seed=s + i)`` seeds: initial weights (``key(s + i)``), dropout
(``fold_in(key(s + i), 1)``) and the epoch shuffles (``epoch_order(n, shuffle, s + i,
epoch)``), so it equals that plain fit of a freshly built model. The data is copied to the
device once and shared; each execution sends per-member index arrays ``(N, K, B)``.

Callbacks read the model (member 0) and may stop training; one that assigns the model's
weights or optimizer state is refused when it does (:class:`_GuardedCallbacks`).
``on_nan="stop"`` freezes each member at its first non-finite step for the rest of the fit.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from kerax import errors
from kerax.data import ArrayData, epoch_order
from kerax.training import setup
from kerax.training.callbacks import (
    BackupAndRestore,
    CallbackList,
    LearningRateScheduler,
    ModelCheckpoint,
    ReduceLROnPlateau,
    TerminateOnNaN,
)
from kerax.training.callbacks.base import HOOKS
from kerax.training.callbacks.progress import Progress, resolve_verbose
from kerax.training.ensemble_predict import (  # noqa: F401 - held: also this module's public name
    MEMBER_KEY,
    EnsembleHistory,
    Members,
    held,
    host_logs,
    member_map,
    publish,
    run_eval,
    take_member,
    unroll_default,
)
from kerax.training.objectives import NAN_KEY
from kerax.training.steps import PerMode, TrainStep, release_free_heap
from kerax.training.train_state import TrainState
from kerax.utils import default_seed

_INJECT = (optax.InjectStatefulHyperparamsState, optax.InjectHyperparamsState)
# Callbacks that act on a single model's weights or optimizer: refused in an ensemble fit
# (subclasses too). Other callbacks that assign them are caught when they do (_GuardedCallbacks).
_REFUSED = (ModelCheckpoint, BackupAndRestore, ReduceLROnPlateau, LearningRateScheduler)


# -- the pure level ------------------------------------------------------------------------------


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
    unroll = unroll_default(train_step.model) if unroll is None else unroll
    names = train_step.objectives.log_names()

    def make(debug: bool) -> Callable:
        call = functools.partial(train_step._call_impl, on_nan=train_step.on_nan_for(debug))
        return jax.jit(member_map(call, (0, None if shared_batch else 0), unroll), donate_argnums=() if debug else (0,))

    programs = PerMode(make)

    def step(ts: TrainState, batch: Any) -> tuple[TrainState, dict]:
        batch = tuple(batch) if isinstance(batch, list) else batch
        _check_step_inputs(ts, batch, shared_batch)
        ts, logs = programs.get()(ts, batch)
        return ts, {k: logs[k] for k in names if k in logs}

    return step


def _check_step_inputs(ts: Any, batch: Any, shared_batch: bool) -> None:
    """Clear errors for a ``ts`` or ``batch`` without the member axis (jax.vmap's own
    errors name neither the argument nor the fix)."""
    if not isinstance(ts, TrainState):
        raise errors.ConfigError("vmap_train_step: expected ts to be a kx.TrainState stacked over the "
                                 f"members (jax.vmap(create)(keys)); received ts={type(ts).__name__}")
    shape = np.shape(ts.step)
    if len(shape) != 1:
        raise errors.ShapeError("vmap_train_step: ts must be stacked with a leading member axis "
                                f"(jax.vmap(create)(keys)); received ts.step of shape {shape}")
    if shared_batch:
        return
    members = shape[0]
    for path, leaf in jax.tree_util.tree_leaves_with_path(batch):
        if np.ndim(leaf) == 0 or np.shape(leaf)[0] != members:
            raise errors.ShapeError(
                f"vmap_train_step(shared_batch=False): every batch leaf needs a leading axis of "
                f"N={members} members (ts has {members}); received batch{jax.tree_util.keystr(path)} "
                f"of shape {np.shape(leaf)}; pass shared_batch=True to give every member the same batch")


# -- the fit loop's step and its set-up -----------------------------------------------------------


class EnsembleStep:
    """The fit loop's step for N members: ``run(ts, mstate, data, idx)`` with ``ts`` and
    ``mstate`` stacked, ``data`` shared on the device and ``idx`` (N, K, B)."""

    def __init__(self, step: TrainStep) -> None:
        self.step, self.objectives = step, step.objectives
        self._unroll = unroll_default(step.model)
        self._runs = PerMode(self._make_run)
        self._compute = jax.jit(jax.vmap(self.objectives.compute))

    @property
    def run(self) -> Callable:
        """The members' jitted ``TrainStep._run`` for the current debugging setting."""
        return self._runs.get()

    def _make_run(self, debug: bool) -> Callable:
        one = functools.partial(self.step._run, mask=None, on_nan=self.step.on_nan_for(debug))
        return jax.jit(member_map(one, (0, 0, None, 0), self._unroll), donate_argnums=() if debug else (0, 1))

    def init_metrics(self, members: int, frozen: np.ndarray | None = None) -> dict:
        """Fresh metric states for an epoch, (N, ...) each. ``frozen`` (N,) bool marks the
        members that ``on_nan="stop"`` froze in an earlier epoch: their non-finite count
        starts at 1, so the step keeps refusing their updates (steps.py applies a step only
        while that count is 0), as a plain fit that stopped never trains again."""
        mstate = jax.tree.map(lambda a: jnp.stack([a] * members), self.objectives.init())
        if frozen is not None and frozen.any():
            mstate[NAN_KEY] = mstate[NAN_KEY].at[:, 0].set(jnp.asarray(frozen, jnp.float32))
        return mstate

    def compute(self, mstate: dict) -> dict:
        """Per-member logs, each with a leading member axis, in Keras's order."""
        out = self._compute(mstate)
        return {k: out[k] for k in self.objectives.log_names() if k in out}

    def logs(self, mstate: dict) -> dict:
        """:func:`host_logs` of the members' metric states; a member that applied no step
        (its loss weighs 0: frozen by ``on_nan="stop"``, or every step skipped) is inactive."""
        logs = self.compute(mstate)  # one transfer; a dict through device_get would sort its keys
        values, count = jax.device_get((list(logs.values()), mstate["loss"]["count"]))
        return host_logs(dict(zip(logs, values)), np.asarray(count) > 0)


def _check_members(members: Any) -> int:
    if isinstance(members, bool) or not isinstance(members, (int, np.integer)) or members < 1:
        raise errors.ConfigError(f"ensemble must be a positive int (the number of members); received ensemble={members!r}")
    return int(members)


def _check_fit_args(compiled: Any, members: Any, batch_size: Any, epochs: Any, initial_epoch: Any,
                    steps_per_epoch: Any, validation_steps: Any, validation_freq: Any, seed: Any) -> tuple[int, int]:
    """``fit(ensemble=N)``'s arguments, refused before anything runs; ``(members, batch_size)``."""
    if members is None:
        raise errors.ConfigError("ensemble_hyperparams needs ensemble=N (one value per member); received ensemble=None")
    members = _check_members(members)
    if compiled.distribute is not None:
        raise errors.ConfigError("fit(ensemble=...) runs on one device; expected compile(distribute=None); "
                                 f"received distribute={type(compiled.distribute).__name__}")
    if getattr(compiled, "dp", None) is not None:
        raise errors.ConfigError("fit(ensemble=...) does not account DP-SGD privacy per member; expected "
                                 f"compile(dp=None); received dp={type(compiled.dp).__name__}")
    batch_size = setup.check_fit_args(batch_size, epochs, initial_epoch, steps_per_epoch, validation_steps,
                                      validation_freq, seed)
    return members, batch_size


def _check_hyperparams(hyperparams: Any, members: int) -> dict:
    if hyperparams is None:
        return {}
    if not isinstance(hyperparams, Mapping):
        raise errors.ConfigError("ensemble_hyperparams must be a dict {name: one value per member}; "
                                 f"received {type(hyperparams).__name__}")
    out = {}
    for name, values in hyperparams.items():
        try:
            arr = np.asarray(values, np.float64) if not isinstance(values, (str, bytes)) else np.asarray([])
        except (TypeError, ValueError):  # ragged or not numbers: the error below says what is expected
            arr = np.asarray([])
        if arr.shape != (members,) or not np.all(np.isfinite(arr)):
            raise errors.ConfigError(f"ensemble_hyperparams[{name!r}] must hold {members} finite numbers "
                                     f"(one per member, ensemble={members}); received {values!r}")
        if name == "learning_rate" and np.any(arr < 0):  # as model.optimizer.learning_rate = x refuses
            raise errors.ConfigError(f"ensemble_hyperparams['learning_rate'] must hold rates >= 0 (a negative "
                                     f"rate ascends the loss); received {values!r}")
        out[str(name)] = [float(v) for v in arr]
    return out


def set_hyperparam(opt_state: Any, name: str, value: Any) -> Any:
    """``opt_state`` with the injected hyperparameter ``name`` set to ``value`` (a number,
    or one per member (N,) for a stacked state)."""
    states = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda s: isinstance(s, _INJECT))
              if isinstance(s, _INJECT)]
    free = lambda s: [k for k in s.hyperparams if k not in getattr(s, "hyperparams_states", {})]
    found = [s for s in states if name in free(s)]
    if len(found) != 1:
        raise errors.ConfigError(_hyperparam_problem(states, name, len(found), free))
    (target,) = found
    old = target.hyperparams[name]
    new = target._replace(hyperparams={**target.hyperparams, name: jnp.asarray(value, jnp.result_type(old))})
    return jax.tree.map(lambda s: new if s is target else s, opt_state, is_leaf=lambda s: isinstance(s, _INJECT))


def _hyperparam_problem(states: list, name: str, found: int, free: Callable) -> str:
    """Why ``name`` cannot be swept: injected several times, driven by a schedule, or absent."""
    arg = f"ensemble_hyperparams[{name!r}]"
    if found > 1:
        return (f"{arg}: expected one transformation of the optimizer to inject {name!r}; received an "
                f"optimizer in which {found} do (e.g. optax.multi_transform over several optimizers), so "
                "which one to set is ambiguous; sweep an optimizer with a single injected value")
    if any(name in getattr(s, "hyperparams_states", {}) for s in states):
        return (f"{arg}: expected a constant {name} to sweep; received an optimizer whose {name} follows "
                f"a schedule, which sets it at every step; build the optimizer with a float {name} "
                "(e.g. kx.optimizers.Adam(1e-3)) to sweep it")
    available = sorted({k for s in states for k in free(s)})
    return (f"ensemble_hyperparams: expected a constant hyperparameter the optimizer injects "
            f"(available: {available}); received {name!r}. kerax optimizers inject learning_rate; "
            "for others pass e.g. optax.inject_hyperparams(optax.adamw)(learning_rate=1e-3, weight_decay=1e-4)")


def _train_state(model: Any, compiled: Any, spec: Any, seeds: list[int], hyper: dict) -> tuple[TrainState, dict]:
    """The stacked train state and its swept hyperparameters: continues a held ensemble of
    the same size (new ``hyper`` values only replace those in its optimizer states, as
    ``model.optimizer.learning_rate = x`` does for one model), else initialises member i as
    ``fit(seed=seeds[i])`` does a fresh model."""
    tx, old = compiled.optimizer, held(model)
    if old is not None and old.size == len(seeds) and old.ts.tx is tx:
        _check_optimizer_untouched(model, old)
        ts = old.ts
        for name, values in hyper.items():
            ts = ts.replace(opt_state=set_hyperparam(ts.opt_state, name, np.asarray(values)))
        return ts, {**old.hyperparams, **hyper}
    if old is not None and old.size == len(seeds):  # recompiled: the members' weights, a new optimizer
        inits = [(take_member(old.ts.params, i), take_member(old.ts.state, i)) for i in range(len(seeds))]
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


def _check_optimizer_untouched(model: Any, members: Members) -> None:
    """Refuses to continue members whose published train state the model no longer holds
    (``model.optimizer.learning_rate = ...`` since): the members train on their own
    optimizer states, so the change would be silently dropped. Undoes it first, so that the
    model reports member 0's real rate again and the next call can go on."""
    if model._ts is None or model._ts is members.published_ts:
        return
    publish(model, members)
    raise errors.ConfigError(
        "fit(ensemble=...): the model's optimizer state was set after the ensemble fit (e.g. "
        "model.optimizer.learning_rate = ...); expected the members' own optimizer states, which "
        "that change does not reach, so it was undone. Give every member a value with "
        "ensemble_hyperparams={'learning_rate': [one per member]}, or train one member alone: "
        "model.ensemble_member(i).fit(...)")


# -- fit -------------------------------------------------------------------------------------------


def _check_callbacks(callbacks: list) -> None:
    """Refuses the callbacks that act on one model's weights or learning rate (subclasses too)."""
    for cb in callbacks:
        name = type(cb).__name__
        refused = next((c.__name__ for c in _REFUSED if isinstance(cb, c)), None)
        if refused is not None:
            what = name if refused == name else f"{name} (a {refused})"
        elif getattr(cb, "restore_best_weights", False):
            what = f"{name} with restore_best_weights=True"
        else:
            continue
        raise errors.ConfigError(
            f"fit(ensemble=...) does not support the callback {what}: it acts on one model's weights "
            "or learning rate; expected History, EarlyStopping, CSVLogger, TerminateOnNaN, TensorBoard "
            "or your own callbacks that read the model")


class _GuardedCallbacks(CallbackList):
    """The callbacks of an ensemble fit, each checked after every hook it runs.

    A callback may read the model (member 0, see docs/ensembles.md) and set
    ``model.stop_training``; an assignment to the model's weights or optimizer state (the
    learning rate) would not reach the stacked members, which train on their own states, so
    it is refused instead of silently dropped. ``restore`` re-publishes the members first, so
    the model never reports a rate or weights the members do not use."""

    def __init__(self, callbacks: list, model: Any, params: dict, restore: Callable[[], None]) -> None:
        super().__init__(callbacks, model, params)
        self.model, self.restore = model, restore

    def __getattr__(self, hook: str) -> Any:
        if hook not in HOOKS:
            raise AttributeError(hook)

        def call(*args: Any) -> None:
            for cb in self.callbacks:
                version, ts = self.model._weights_version, self.model._ts
                getattr(cb, hook)(*args)
                if self.model._weights_version != version or self.model._ts is not ts:
                    self._refuse(cb, hook, "weights" if self.model._weights_version != version else
                                 "optimizer state (e.g. model.optimizer.learning_rate)")

        return call

    def _refuse(self, cb: Any, hook: str, what: str) -> None:
        self.restore()
        raise errors.ConfigError(
            f"fit(ensemble=...): the callback {type(cb).__name__} set the model's {what} in {hook}; "
            "expected callbacks that only read the model (member 0) or set model.stop_training: the "
            "members train on their own stacked states, which that assignment does not reach (it was "
            "undone). Sweep learning rates with ensemble_hyperparams={'learning_rate': [...]}, or train "
            "one member alone: model.ensemble_member(i).fit(...)")


def fit(model: Any, members: Any, hyperparams: Any, x: Any, y: Any, batch_size: int | None, epochs: int,
        verbose: Any, callbacks: list | None, validation_split: float, validation_data: Any, shuffle: bool,
        class_weight: dict | None, sample_weight: Any, initial_epoch: int, steps_per_epoch: int | None,
        validation_steps: int | None, validation_batch_size: int | None, validation_freq: int,
        seed: int | None, check_finite_inputs: bool) -> EnsembleHistory:
    """``Model.fit(..., ensemble=members, ensemble_hyperparams=hyperparams)``; see the module doc."""
    from kerax.training.loop import _validation

    compiled = setup.require_compiled(model, "fit")
    members, batch_size = _check_fit_args(compiled, members, batch_size, epochs, initial_epoch, steps_per_epoch,
                                          validation_steps, validation_freq, seed)
    hyper = _check_hyperparams(hyperparams, members)
    user_callbacks = list(callbacks or [])
    _check_callbacks(user_callbacks)
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
    publish(model, ens)

    history = EnsembleHistory(seeds, ens)
    verbose = resolve_verbose(verbose)
    steps_total = -(-data.n // batch_size) if steps_per_epoch is None else min(steps_per_epoch, -(-data.n // batch_size))
    cbs = _GuardedCallbacks(user_callbacks + [history], model, {"epochs": epochs, "steps": steps_total,
                            "verbose": verbose, "ensemble": members, "seeds": seeds}, lambda: publish(model, ens))
    run = _Run(estep, ens, cbs, setup.to_device(data), on_nan, compiled.max_consecutive_nonfinite)
    model.stop_training = False
    cbs.on_train_begin(None)
    logs: dict = {}
    for epoch in range(initial_epoch, epochs):
        cbs.on_epoch_begin(epoch, None)
        orders = [epoch_order(data.n, shuffle, s, epoch) for s in seeds]
        logs, halted, progress = run.epoch(orders, batch_size, steps_per_epoch, f"Epoch {epoch + 1}/{epochs}", verbose)
        publish(model, ens)
        if val is not None and (epoch + 1) % validation_freq == 0 and not halted:
            val_logs = run_eval(model, objectives, val, validation_batch_size or batch_size, validation_steps, 0)
            logs.update({f"val_{k}": v for k, v in val_logs.items()})
        progress.close({k: v for k, v in logs.items() if not MEMBER_KEY.match(k)})
        cbs.on_epoch_end(epoch, logs)
        if halted:
            print(f"Epoch {epoch + 1}: every member had a non-finite loss; stopped")
            model.stop_training = True
        if model.stop_training:
            break
    cbs.on_train_end(logs)
    return history


class _Run:
    """One ``fit(ensemble=N)`` call's epochs: the stacked state ``ens.ts`` advanced by
    ``estep`` over data on the device, and (``on_nan="stop"``) which members are frozen."""

    def __init__(self, estep: EnsembleStep, ens: Members, cbs: CallbackList, device_data: Any,
                 on_nan: str, max_bad: int) -> None:
        self.estep, self.ens, self.cbs, self.data = estep, ens, cbs, device_data
        self.on_nan, self.max_bad = on_nan, max_bad
        self.frozen = np.zeros(ens.size, bool)  # persists across epochs: a frozen member stays frozen

    def epoch(self, orders: list, batch_size: int, steps: int | None, desc: str,
              verbose: int) -> tuple[dict, bool, Progress]:
        """Trains one epoch (member i in ``orders[i]``); its logs, whether every member is
        now stopped (``on_nan="stop"``), and its open progress display."""
        from kerax.training.loop import InFlight, in_flight_depth, index_groups, wake_period

        estep, cbs = self.estep, self.cbs
        per_member = [index_groups(order, batch_size, estep.step.k, steps) for order in orders]
        groups = jax.device_put([np.stack(g).astype(np.int32) for g in zip(*per_member)])  # each (N, K, B)
        mstate = estep.init_metrics(self.ens.size, self.frozen if self.on_nan == "stop" else None)
        pending, batch = InFlight(in_flight_depth(), wake_period()), 0
        progress = Progress(verbose, sum(g.shape[1] for g in groups), desc)
        batch_logs, batch_begin = cbs.wants("on_train_batch_end"), cbs.wants("on_train_batch_begin")
        halted = False
        for idx in groups:
            if batch_begin:
                cbs.on_train_batch_begin(batch, None)
            self.ens.ts, mstate, token = estep.run(self.ens.ts, mstate, self.data, idx)
            pending.push(token)
            if batch_logs:
                cbs.on_train_batch_end(batch, estep.logs(mstate))
            batch += idx.shape[1]
            progress.update(idx.shape[1], lambda: {k: v for k, v in estep.logs(mstate).items()
                                                   if not MEMBER_KEY.match(k)})
            if self.on_nan != "warn" and _nan_halt(mstate, self.on_nan, self.max_bad):
                halted = True
                break
        logs = estep.logs(mstate)
        bad = np.asarray(jax.device_get(mstate[NAN_KEY]))[:, 0] > 0
        if bad.any() and self.on_nan == "warn":
            warnings.warn(f"{desc}: members {np.flatnonzero(bad).tolist()} had non-finite "
                          "losses or gradients", stacklevel=4)
        if self.on_nan == "stop" and (bad & ~self.frozen).any():
            # A member stopped in this epoch logs a NaN loss, as a plain fit does; the mean is
            # over the members that ended the epoch well (NaN once every member stopped).
            for i in np.flatnonzero(bad & ~self.frozen):
                logs[f"loss_member_{i}"] = float("nan")
            finite = [v for v in (logs[f"loss_member_{i}"] for i in range(self.ens.size)) if np.isfinite(v)]
            logs["loss"] = float(np.mean(finite)) if finite else float("nan")
        if self.on_nan == "stop":
            self.frozen = bad
        return logs, halted, progress


def _nan_halt(mstate: dict, on_nan: str, max_bad: int) -> bool:
    """"stop": True once every member froze; "skip": raises when a member hits the limit."""
    counts = np.asarray(jax.device_get(mstate[NAN_KEY]))  # (N, 2): total, consecutive
    if on_nan == "skip" and (counts[:, 1] >= max_bad).any():
        member = int(np.argmax(counts[:, 1]))
        raise errors.NonFiniteLossError(
            f"member {member}: {int(counts[member, 1])} consecutive steps had a non-finite loss or "
            f"gradient (limit max_consecutive_nonfinite={max_bad}); none of them was applied")
    return on_nan == "stop" and bool((counts[:, 0] > 0).all())
