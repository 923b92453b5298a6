"""Using a trained ensemble (after ``fit(ensemble=N)``): each member's loss and metrics,
the members' predictions (their mean or all of them), and one member as a plain model.

The training side is :mod:`kerax.training.ensemble`; this module only reads what it holds.
"""

from __future__ import annotations

import copy
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from kerax import errors
from kerax.data import ArrayData, IterableData
from kerax.training import setup
from kerax.training.callbacks import CallbackList
from kerax.training.callbacks.progress import Progress
from kerax.training.ensemble import _MEMBER_KEY, _take, _unroll_default, held, host_logs, member_map
from kerax.training.packed import unpacked



def _mapped(model: Any, key: str, fn: Callable, in_axes: tuple) -> Callable:
    """A cached, jit-compiled member map of ``fn``."""
    cache_key = ("ensemble", key)
    if cache_key not in model._step_cache:
        model._step_cache[cache_key] = jax.jit(member_map(fn, in_axes, _unroll_default(model)))
    return model._step_cache[cache_key]


def run_eval(model: Any, objectives: Any, data: ArrayData | IterableData, batch_size: int,
             steps: int | None, verbose: int, callbacks: CallbackList | None = None) -> dict:
    """``evaluate`` for the held ensemble: each member's loss and metrics (``<name>_member_<i>``)
    and their means under the plain names."""
    from kerax.training.evaluation import padded_groups

    ens = held(model)
    ev = setup.eval_step_for(model, objectives)
    run = _mapped(model, f"eval{id(ev)}", ev._run, (0, 0, 0, None, None, None))
    mstate = jax.tree.map(lambda a: jnp.stack([a] * ens.size), ev.init_metrics())
    if isinstance(data, ArrayData):
        device_data = setup.to_device(data)
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
    progress.close({k: v for k, v in logs.items() if not _MEMBER_KEY.match(k)})
    return logs


@functools.partial(jax.jit, static_argnums=0)
def _member_logs(objectives: Any, mstate: Any) -> dict:
    return jax.vmap(lambda m: objectives.compute(unpacked(m)))(mstate)


def _per_member(ev: Any, mstate: Any) -> dict:
    out = _member_logs(ev.objectives, mstate)
    return {k: out[k] for k in ev.objectives.log_names() if k in out}


def predict(model: Any, x: Any, batch_size: int | None, steps: int | None, mode: str | None) -> Any:
    """The held ensemble's outputs: ``"mean"`` over members (as one model's), or ``"all"``
    stacked with a leading member axis ``(N, rows, ...)``."""
    from kerax.data import as_data
    from kerax.training.evaluation import padded_groups

    mode = "mean" if mode is None else mode
    if mode not in ("mean", "all"):
        raise errors.ConfigError(f"predict: ensemble must be 'mean' or 'all'; received ensemble={mode!r}")
    ens = held(model)
    if ens is None:
        raise errors.ConfigError(f"predict(ensemble={mode!r}) needs a model trained with fit(ensemble=N); "
                                 "this model holds one set of weights")
    data = as_data(x, None, None, name="x", expand=setup.expand_rank1(model))
    apply = lambda p, s, x: model.apply(p, s, x, training=False)[0]
    run = _mapped(model, "predict", lambda p, s, d, i: apply(p, s, jax.tree.map(lambda a: a[i], d)), (0, 0, None, None))
    if isinstance(data, IterableData):
        outs = [(run(ens.ts.params, ens.ts.state, jax.device_put(b.x), jnp.arange(b.n)), b.n) for b in data.epoch(steps)]
    else:
        device_x = jax.device_put(data.x)
        outs = [(run(ens.ts.params, ens.ts.state, device_x, jnp.asarray(i[0])), int(m.sum()))
                for i, m in padded_groups(data.n, batch_size or 32, 1)[:steps]]
    if not outs:
        raise errors.DataError("predict: no batches to run (steps=0)")
    host = [jax.tree.map(lambda a: np.asarray(a)[:, :rows], o) for o, rows in outs]
    stacked = jax.tree.map(lambda *a: np.concatenate(a, axis=1), *host)
    return stacked if mode == "all" else jax.tree.map(lambda a: a.mean(0), stacked)


def member_model(model: Any, index: int) -> Any:
    """A plain model (same architecture and compile settings, no ensemble) holding member
    ``index``'s weights and train state: it predicts, evaluates, saves and keeps training
    (with its own swept hyperparameters) like any model."""
    ens = held(model)
    if ens is None:
        raise errors.ConfigError("ensemble_member needs a model trained with fit(ensemble=N); "
                                 "this model holds one set of weights")
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -ens.size <= index < ens.size:
        raise errors.ConfigError(f"ensemble_member: index must be an int in [0, {ens.size}); received {index!r}")
    clone = copy.copy(model)
    if isinstance(getattr(clone, "_layers", None), list):
        clone._layers = list(clone._layers)
    clone._step_cache, clone._ensemble = {}, None
    clone._ts = _take(ens.ts, int(index))
    clone._params, clone._state = _take(ens.ts.params, int(index)), _take(ens.ts.state, int(index))
    clone.stop_training = False
    return clone
