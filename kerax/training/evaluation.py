"""``evaluate`` and ``predict``: compiled passes over data without updates.

The last partial batch is padded to the full batch size and masked (its rows weigh 0),
so every batch has one shape and nothing recompiles; losses and metrics stay exact.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from kerax import errors
from kerax.core import specs
from kerax.data import ArrayData, IterableData
from kerax.training import setup
from kerax.training.callbacks import CallbackList
from kerax.training.callbacks.progress import Progress, resolve_verbose
from kerax.training.memory import data_hints


def padded_groups(n: int, batch_size: int, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(idx, mask)`` of shape (k, batch) covering rows 0..n-1; padding has mask 0."""
    steps = math.ceil(n / batch_size)
    groups = []
    for g in range(0, steps, k):
        idx = np.zeros((k, batch_size), np.int32)
        mask = np.zeros((k, batch_size), np.float32)
        for j in range(min(k, steps - g)):
            rows = np.arange((g + j) * batch_size, min((g + j + 1) * batch_size, n))
            idx[j, : len(rows)], mask[j, : len(rows)] = rows, 1.0
        groups.append((idx, mask))
    return groups


def cut_batches(tree: Any, n: int, batch_size: int, steps: int | None) -> list[tuple[Any, int]]:
    """``(batch, rows)`` per batch of ``tree``'s ``n`` rows (at most ``steps``): full batches
    are views, the last partial one is padded to ``batch_size`` with copies of row 0 (rows
    the model is given anyway; callers mask them out)."""
    count = math.ceil(n / batch_size) if steps is None else min(steps, math.ceil(n / batch_size))
    out = []
    for i in range(count):
        start, end = i * batch_size, min((i + 1) * batch_size, n)
        if end - start == batch_size:
            out.append((jax.tree.map(lambda a: a[start:end], tree), batch_size))
        else:
            rows = np.concatenate([np.arange(start, end), np.zeros(batch_size - (end - start), np.int64)])
            out.append((jax.tree.map(lambda a: np.asarray(a)[rows], tree), end - start))
    return out


class EvalCut:
    """In-memory data cut once into ``evaluate``'s batches on the device: ``(1, batch, ...)``
    each with its ``(1, batch)`` mask (the last batch padded and masked), so a step sends
    nothing and gathers no rows (docs/performance.md). ``fit`` keeps one for its validation
    data across epochs."""

    def __init__(self, data: ArrayData, batch_size: int, steps: int | None, what: str = "the data") -> None:
        sw = data.sample_weight
        host = (data.x, data.y, None if sw is None else np.asarray(sw, np.float32))
        batches = cut_batches(host, data.n, batch_size, steps)
        with data_hints(what, setup.nbytes(data)):
            self.executions = jax.device_put([jax.tree.map(lambda a: a[None], b) for b, _ in batches])
        masks = {rows: (np.arange(batch_size) < rows).astype(np.float32)[None] for _, rows in batches}
        masks = dict(zip(masks, jax.device_put(list(masks.values()))))
        self.masks = [masks[rows] for _, rows in batches]


def run_eval(model: Any, objectives: Any, data: ArrayData | IterableData | EvalCut, batch_size: int,
             steps: int | None, verbose: int, callbacks: CallbackList | None = None) -> dict:
    step = setup.eval_step_for(model, objectives)
    mstate = step.init_metrics()
    params, state = model.params, model.state
    dp = step.distribute
    if dp is not None:
        params, state, mstate = dp.replicate((params, state, mstate))
    if isinstance(data, EvalCut) or (isinstance(data, ArrayData) and dp is None):
        cut = data if isinstance(data, EvalCut) else EvalCut(data, batch_size, steps)
        feed = ((d, None, m) for d, m in zip(cut.executions, cut.masks))
        total = len(cut.masks)
    elif isinstance(data, ArrayData):
        groups = padded_groups(data.n, batch_size, 1)[:steps]
        total = len(groups)
        pick = lambda idx: jax.tree.map(lambda a: a[idx], (data.x, data.y, data.sample_weight))
        feed = (dp.shard_batch(pick(i), m, stacked=True) for i, m in groups)
        feed = ((d, None, m) for d, m in feed)
    else:
        setup.check_targets(objectives, model, data.peek())
        lift = lambda b: jax.tree.map(lambda a: a[None], (b.x, b.y, b.sample_weight))
        if dp is not None:
            feed = ((*dp.shard_batch(lift(b), stacked=True),) for b in data.epoch(steps))
            feed = ((d, None, m) for d, m in feed)
        else:
            feed = ((jax.device_put(lift(b)), None, jnp.ones((1, b.n), jnp.float32)) for b in data.epoch(steps))
        total = steps
    progress = Progress(verbose, total, "")
    for i, (d, idx, mask) in enumerate(feed):
        if callbacks is not None:
            callbacks.on_test_batch_begin(i, None)
        mstate = step.run(params, state, mstate, d, idx, mask)
        progress.update(1, lambda: step.compute(mstate))
        if callbacks is not None and callbacks.wants("on_test_batch_end"):
            callbacks.on_test_batch_end(i, setup.host_logs(step.compute(mstate)))
    logs = setup.host_logs(step.compute(mstate))
    progress.close(logs)
    return logs


def evaluate(model: Any, x: Any = None, y: Any = None, batch_size: int | None = None,
             verbose: Any = "auto", sample_weight: Any = None, steps: int | None = None,
             callbacks: list | None = None, return_dict: bool = False) -> Any:
    """Keras's ``evaluate``: the loss, or ``[loss, *metrics]``, or a dict."""
    compiled = setup.require_compiled(model, "evaluate")
    setup.check_steps("steps", steps)
    data = setup.prepare(model, x, y, sample_weight, None, "x")
    first = data if isinstance(data, ArrayData) else data.peek()
    setup.build_if_needed(model, first.x, None)
    objectives = setup.objectives_for(model, compiled, first.x)
    if isinstance(data, ArrayData):
        setup.check_targets(objectives, model, data)
    cbs = CallbackList(callbacks or [], model, {"steps": steps, "verbose": 0})
    cbs.on_test_begin(None)
    from kerax.training import ensemble_predict  # after fit(ensemble=N): each member, and their means
    from kerax.training.ensemble import held

    runner = ensemble_predict.run_eval if held(model) is not None else run_eval
    try:
        logs = runner(model, objectives, data, batch_size or 32, steps, resolve_verbose(verbose), cbs)
    except errors.KeraxError:
        better = _error_at_callers_shapes(model, data.x) if isinstance(data, ArrayData) else None
        if better is None:
            raise
        raise better from None
    cbs.on_test_end(logs)
    if return_dict:
        return logs
    values = [logs[k] for k in objectives.log_names() if k in logs]
    return values[0] if len(values) == 1 else values


def _predict_fn(model: Any) -> Any:
    key = ("predict",)
    if key not in model._step_cache:
        stepped = setup.step_model(model, getattr(model, "_compiled", None))

        @jax.jit
        def run(params, state, x):
            return stepped.apply(params, state, x, training=False)[0]

        model._step_cache[key] = run
    return model._step_cache[key]


def _check_declared_input(model: Any, x: Any) -> None:
    """``x`` against the model's declared input shapes, before batches are cut: the error
    then shows the caller's shape, not a padded batch's (the model checks again anyway)."""
    core = getattr(model, "core", None)
    declared = getattr(core, "declared_input_shape", None)  # a Sequential
    inputs = getattr(core, "inputs", None)
    names = getattr(core, "input_names", None)
    if declared is not None and not isinstance(x, (list, tuple, dict)):
        expected, leaves, what = [declared], [x], ["input"]
    elif hasattr(inputs, "shape") and not isinstance(x, (list, tuple, dict)):  # one functional input
        expected, leaves, what = [inputs.shape], [x], [f"input {names[0]!r}" if names else "input"]
    elif isinstance(inputs, (list, tuple)) and isinstance(x, (list, tuple)) and len(inputs) == len(x):
        expected, leaves = [getattr(t, "shape", None) for t in inputs], list(x)
        what = [f"input {n!r}" for n in names] if names and len(names) == len(x) else ["input"] * len(x)
    else:
        return  # dicts keyed by name, nested inputs: the model's own check names them
    if any(shape is None or isinstance(a, (list, tuple, dict)) for shape, a in zip(expected, leaves)):
        return
    for shape, a, label in zip(expected, leaves, what):
        try:
            specs.check_input(shape, np.shape(a), label)
        except errors.ShapeError as e:
            name = model.name or type(model).default_name()
            raise errors.ShapeError(e.message, layer_class=type(model).__name__, layer_name=name) from None


def _error_at_callers_shapes(model: Any, x: Any) -> Exception | None:
    """The error the model raises for the caller's whole ``x`` (traced, never run), or None.

    Batches are cut to ``batch_size`` rows and the last one padded, so an error a layer
    raises while the batch is traced shows a batch size the caller never passed: ``(32,
    5)`` for a ``(2, 5)`` input, ``(32, 8, 3)`` for one unbatched ``(8, 8, 3)`` image. Only
    after such an error is the model traced again on ``x``'s own shapes."""
    dtype = lambda a: a.dtype if hasattr(a, "dtype") else np.asarray(a).dtype  # noqa: E731
    spec = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), dtype(a)), x)
    try:
        jax.eval_shape(lambda p, s, v: model.apply(p, s, v, training=False)[0], model.params, model.state, spec)
    except errors.KeraxError as e:
        return e
    return None


def predict(model: Any, x: Any, batch_size: int | None = None, verbose: Any = "auto",
            steps: int | None = None, callbacks: list | None = None) -> Any:
    """Keras's ``predict``: outputs as NumPy arrays (same structure as the model's)."""
    from kerax.data import as_data

    setup.check_steps("steps", steps)
    batch_size = setup.check_batch_size(batch_size)
    setup.check_strict_dtypes(model, x)
    data = as_data(x, None, None, name="x", expand=setup.expand_rank1(model))
    if isinstance(data, IterableData):
        first = data.peek()
        setup.build_if_needed(model, first.x, None)
        batches = [b.x for b in data.epoch(steps)]
        outs = [model.apply(model.params, model.state, jax.device_put(b), training=False)[0] for b in batches]
        return jax.tree.map(lambda *a: np.concatenate([np.asarray(v) for v in a]), *outs)
    setup.build_if_needed(model, data.x, None)
    _check_declared_input(model, data.x)
    run = _predict_fn(model)
    batches = cut_batches(data.x, data.n, batch_size, steps)  # on the device at once: nothing sent per batch
    cbs = CallbackList(callbacks or [], model, {"verbose": 0})
    cbs.on_predict_begin(None)
    progress = Progress(resolve_verbose(verbose), math.ceil(data.n / batch_size), "")
    outs = []
    with data_hints("x", sum(a.nbytes for a in jax.tree.leaves(data.x))):
        on_device = jax.device_put([b for b, _ in batches])
    for i, (x_batch, rows) in enumerate(zip(on_device, [r for _, r in batches])):
        try:
            outs.append((run(model.params, model.state, x_batch), rows))
        except errors.KeraxError:
            better = _error_at_callers_shapes(model, data.x)
            if better is None:
                raise
            raise better from None
        progress.update(1)
        if cbs.wants("on_predict_batch_end"):
            cbs.on_predict_batch_end(i, {"outputs": outs[-1][0]})
    progress.close()
    cbs.on_predict_end(None)
    if not outs:
        raise errors.DataError("predict: no batches to run (steps=0)")
    host = [jax.tree.map(lambda a: np.asarray(a)[:rows], o) for o, rows in outs]
    return jax.tree.map(lambda *a: np.concatenate(a), *host)
