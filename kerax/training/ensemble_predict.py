"""The ensemble a model holds after ``fit(ensemble=N)``, and using it: each member's loss
and metrics, the members' predictions (their mean or all of them), one member as a plain
model, and the ``History`` that ranks the members.

The training side is :mod:`kerax.training.ensemble`, which builds on this module (the held
:class:`Members`, the member-axis map, the logs); this module only reads what it holds.

How the member axis is mapped: ``jax.vmap`` in general. XLA:CPU turns a vmapped
convolution (a kernel per member) into one grouped convolution, which it expands into a
dense one with N times the work (measured with jax 0.10.2: the digits CNN step ran ~40x
slower for 8 members, not 8x); there the members are unrolled inside the same compiled
program instead (same numbers), as ``steps_per_execution`` unrolls its steps.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from kerax import errors
from kerax.data import ArrayData, IterableData
from kerax.training import setup
from kerax.training.callbacks import CallbackList, History
from kerax.training.callbacks.monitor import resolve_mode
from kerax.training.callbacks.progress import Progress, resolve_verbose
from kerax.training.packed import unpacked
from kerax.training.steps import uses_conv
from kerax.training.train_state import TrainState

MEMBER_KEY = re.compile(r"^(.*)_member_(\d+)$")


# -- mapping the member axis ---------------------------------------------------------------------


def unroll_default(model: Any) -> bool:
    """Whether ``member_map`` unrolls the members: convolutional models on XLA:CPU (above)."""
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


def _mapped(model: Any, key: str, fn: Callable, in_axes: tuple) -> Callable:
    """A cached, jit-compiled member map of ``fn``."""
    cache_key = ("ensemble", key)
    if cache_key not in model._step_cache:
        model._step_cache[cache_key] = jax.jit(member_map(fn, in_axes, unroll_default(model)))
    return model._step_cache[cache_key]


# -- the held ensemble ---------------------------------------------------------------------------


@dataclasses.dataclass
class Members:
    """What a model holds after ``fit(ensemble=N)``: the stacked train state and its seeds.

    ``published`` is the ``model._params`` object written with it; once something else
    replaces the model's weights (a plain fit, ``set_weights``, ``load_weights``) the
    ensemble no longer describes the model and is ignored. ``published_ts`` is the
    ``model._ts`` written with it: if that was replaced (``model.optimizer.learning_rate =
    ...``), continuing the ensemble refuses (the members would not use it)."""

    ts: TrainState
    hyperparams: dict
    seeds: list[int]
    published: Any = None
    version: int = 0
    published_ts: Any = None

    @property
    def size(self) -> int:
        return len(self.seeds)


def held(model: Any) -> Members | None:
    """The model's ensemble, if it still holds the weights the ensemble fit published."""
    members = getattr(model, "_ensemble", None)
    if members is None or members.published is not model._params:
        return None
    return members if members.version == getattr(model, "_weights_version", 0) else None


def take_member(tree: Any, i: int) -> Any:
    """Member ``i``'s slice of a stacked tree, as arrays of its own (not views of the stack)."""
    return jax.tree.map(lambda a: jnp.copy(a[i]), tree)


def publish(model: Any, members: Members) -> None:
    """Member 0 becomes the model's own weights and train state (== ``fit(seed=s)``)."""
    model._ts = members.published_ts = take_member(members.ts, 0)
    model._params, model._state = take_member(members.ts.params, 0), take_member(members.ts.state, 0)
    members.published, members.version = model._params, getattr(model, "_weights_version", 0)
    model._ensemble = members


def host_logs(logs: dict, active: np.ndarray | None = None) -> dict:
    """Per-member logs (N, ...) -> the mean over the members under each name, then
    ``<name>_member_<i>`` for every member (Python floats, lists for vector metrics).

    ``active`` (N,) bool: a member that is not active applied no step, so it has no value
    (NaN; its empty metric states would read 0.0 and rank it best) and is left out of the
    mean. A diverged member (NaN values) stays in the mean, which is then NaN."""
    values = [np.asarray(v) for v in jax.device_get(list(logs.values()))]
    members = len(values[0]) if values else 0
    active = np.ones(members, bool) if active is None else np.asarray(active, bool)
    if not active.all():
        values = [np.where(active.reshape((-1,) + (1,) * (v.ndim - 1)), v, np.nan)
                  .astype(np.result_type(v.dtype, np.float32)) for v in values]
    mean = lambda v: v[active].mean(0) if active.any() else np.full(v.shape[1:], np.nan, v.dtype)
    py = lambda v: float(v) if np.ndim(v) == 0 else np.asarray(v).tolist()
    out = {k: py(mean(v)) for k, v in zip(logs, values)}
    for i in range(members):
        out.update({f"{k}_member_{i}": py(v[i]) for k, v in zip(logs, values)})
    return out


# -- evaluate and predict ------------------------------------------------------------------------


def run_eval(model: Any, objectives: Any, data: ArrayData | IterableData, batch_size: int,
             steps: int | None, verbose: int, callbacks: CallbackList | None = None) -> dict:
    """``evaluate`` for the held ensemble: each member's loss and metrics (``<name>_member_<i>``)
    and their means under the plain names."""
    from kerax.training.evaluation import padded_groups

    setup.check_steps("steps", steps)
    ens = held(model)
    ev = setup.eval_step_for(model, objectives)
    run = _mapped(model, f"eval{id(ev)}", ev._run, (0, 0, 0, None, None, None))
    mstate = jax.tree.map(lambda a: jnp.stack([a] * ens.size), ev.init_metrics())
    if isinstance(data, ArrayData):
        device_data = setup.to_device(data, "the evaluation data")
        feed = [(device_data, jnp.asarray(i), jnp.asarray(m)) for i, m in padded_groups(data.n, batch_size, 1)[:steps]]
    else:
        setup.check_targets(objectives, model, data.peek())
        lift = lambda b: jax.device_put(jax.tree.map(lambda a: a[None], (b.x, b.y, b.sample_weight)))
        feed = ((lift(b), None, jnp.ones((1, b.n), jnp.float32)) for b in data.epoch(steps))
    progress = Progress(verbose, len(feed) if isinstance(feed, list) else steps, "")
    for i, (d, idx, mask) in enumerate(feed):
        if callbacks is not None:
            callbacks.on_test_batch_begin(i, None)
        mstate = run(ens.ts.params, ens.ts.state, mstate, d, idx, mask)
        progress.update(1)
        if callbacks is not None and callbacks.wants("on_test_batch_end"):
            callbacks.on_test_batch_end(i, host_logs(_per_member(ev, mstate)))
    logs = host_logs(_per_member(ev, mstate))
    progress.close({k: v for k, v in logs.items() if not MEMBER_KEY.match(k)})
    return logs


@functools.partial(jax.jit, static_argnums=0)
def _member_logs(objectives: Any, mstate: Any) -> dict:
    return jax.vmap(lambda m: objectives.compute(unpacked(m)))(mstate)


def _per_member(ev: Any, mstate: Any) -> dict:
    out = _member_logs(ev.objectives, mstate)
    return {k: out[k] for k in ev.objectives.log_names() if k in out}


def predict(model: Any, x: Any, batch_size: int | None, steps: int | None, mode: str | None,
            verbose: Any = 0, callbacks: list | None = None) -> Any:
    """The held ensemble's outputs: ``"mean"`` over members (as one model's), or ``"all"``
    stacked with a leading member axis ``(N, rows, ...)``. ``callbacks`` get Keras's predict
    hooks, ``on_predict_batch_end`` with ``{"outputs": ...}`` of the batch as returned
    (``(N, batch, ...)`` or the mean; the last batch padded); ``verbose`` shows progress."""
    from kerax.data import as_data
    from kerax.training.evaluation import padded_groups

    mode = "mean" if mode is None else mode
    if mode not in ("mean", "all"):
        raise errors.ConfigError(f"predict: ensemble must be 'mean' or 'all'; received ensemble={mode!r}")
    ens = held(model)
    if ens is None:
        raise errors.ConfigError(f"predict(ensemble={mode!r}) needs a model trained with fit(ensemble=N); "
                                 "this model holds one set of weights")
    setup.check_steps("steps", steps)
    batch_size = setup.check_batch_size(batch_size)
    data = as_data(x, None, None, name="x", expand=setup.expand_rank1(model))
    apply = lambda p, s, x: model.apply(p, s, x, training=False)[0]
    run = _mapped(model, "predict", lambda p, s, d, i: apply(p, s, jax.tree.map(lambda a: a[i], d)), (0, 0, None, None))
    if isinstance(data, IterableData):
        feed = ((jax.device_put(b.x), jnp.arange(b.n), b.n) for b in data.epoch(steps))
        total = steps
    else:
        device_x = jax.device_put(data.x)
        groups = padded_groups(data.n, batch_size, 1)[:steps]
        feed = ((device_x, jnp.asarray(i[0]), int(m.sum())) for i, m in groups)
        total = len(groups)
    cbs = CallbackList(callbacks or [], model, {"verbose": 0})
    cbs.on_predict_begin(None)
    progress, outs = Progress(resolve_verbose(verbose), total, ""), []
    for i, (d, idx, rows) in enumerate(feed):
        outs.append((run(ens.ts.params, ens.ts.state, d, idx), rows))
        progress.update(1)
        if cbs.wants("on_predict_batch_end"):
            batch = outs[-1][0] if mode == "all" else jax.tree.map(lambda a: a.mean(0), outs[-1][0])
            cbs.on_predict_batch_end(i, {"outputs": batch})
    progress.close()
    cbs.on_predict_end(None)
    if not outs:
        raise errors.DataError("predict: no batches to run (steps=0)")
    host = [jax.tree.map(lambda a: np.asarray(a)[:, :rows], o) for o, rows in outs]
    stacked = jax.tree.map(lambda *a: np.concatenate(a, axis=1), *host)
    return stacked if mode == "all" else jax.tree.map(lambda a: a.mean(0), stacked)


# -- one member ----------------------------------------------------------------------------------


def member_model(model: Any, index: int) -> Any:
    """A plain model (same architecture and compile settings, no ensemble) holding member
    ``index``'s weights and train state: it predicts, evaluates, saves and keeps training
    (with its own swept hyperparameters) like any model."""
    ens = held(model)
    if ens is None:
        raise errors.ConfigError("ensemble_member needs a model trained with fit(ensemble=N); "
                                 "this model holds one set of weights")
    return _member_of(model, ens, index)


def _member_of(model: Any, ens: Members, index: int) -> Any:
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -ens.size <= index < ens.size:
        raise errors.ConfigError(f"ensemble_member: index must be an int in [0, {ens.size}); received {index!r}")
    clone = copy.copy(model)
    if isinstance(getattr(clone, "_layers", None), list):
        clone._layers = list(clone._layers)
    clone._step_cache, clone._ensemble = {}, None
    clone._ts = take_member(ens.ts, int(index))
    clone._params, clone._state = take_member(ens.ts.params, int(index)), take_member(ens.ts.state, int(index))
    clone.stop_training = False
    return clone


class EnsembleHistory(History):
    """``fit(ensemble=N)``'s History: ``history["loss"]`` is the mean over members and
    ``history["loss_member_<i>"]`` member i's; ``members[i]["loss"]`` reads the same.
    ``ensemble`` is the :class:`Members` it recorded (which ``best_member`` picks from)."""

    def __init__(self, seeds: list[int], ensemble: Members | None = None) -> None:
        super().__init__()
        self.seeds, self.ensemble = list(seeds), ensemble

    @property
    def members(self) -> list[dict]:
        out: list[dict] = [{} for _ in self.seeds]
        for key, values in self.history.items():
            match = MEMBER_KEY.match(key)
            if match:
                out[int(match.group(2))][match.group(1)] = values
        return out

    def best_member_index(self, monitor: str = "val_loss", mode: str = "auto") -> int:
        """The member with the best last-epoch ``monitor`` (non-finite values rank last).

        ``mode="auto"`` decides as ``EarlyStopping`` does (larger is better for accuracy,
        AUC, precision, recall and F1 names, smaller otherwise).

        Raises:
          ConfigError: ``monitor`` was not recorded per member, is not one number per
            member (a vector metric), or is non-finite for every member; a bad ``mode``.
        """
        mode = resolve_mode(monitor, mode, "best_member")
        found = [m.get(monitor) for m in self.members]
        if any(v is None for v in found) or not found:
            raise errors.ConfigError(f"best_member: {monitor!r} was not recorded per member; "
                                     f"available: {sorted(self.members[0]) if self.members else []}")
        last = [np.asarray(v[-1], np.float64) for v in found]
        if any(v.ndim for v in last):
            raise errors.ConfigError(
                f"best_member: expected monitor {monitor!r} to be one number per member; received a value "
                f"of shape {last[0].shape} per member (a vector metric, e.g. F1Score(average=None)); "
                "monitor a scalar metric (e.g. average='macro') or the loss")
        last = np.array(last)
        if not np.isfinite(last).any():
            raise errors.ConfigError(f"best_member: no member has a finite last-epoch {monitor!r} (received "
                                     f"{last.tolist()}); pick one with model.ensemble_member(i)")
        return int(np.argmin(np.where(np.isfinite(last), last if mode == "min" else -last, np.inf)))

    def best_member(self, monitor: str = "val_loss", mode: str = "auto") -> Any:
        """A plain model holding the best member's weights (``model.ensemble_member``), from
        the ensemble this History recorded.

        Raises:
          ConfigError: the model no longer holds that ensemble (a later fit or new weights
            replaced it); and as :meth:`best_member_index`.
        """
        index = self.best_member_index(monitor, mode)
        if self.ensemble is None or held(self.model) is not self.ensemble:
            raise errors.ConfigError(
                "best_member: the model no longer holds the ensemble this History recorded (a later "
                "fit, or new weights, replaced it); call history.best_member(...) before training the "
                "model again, or keep the member you need: best = history.best_member(...)")
        return _member_of(self.model, self.ensemble, index)
