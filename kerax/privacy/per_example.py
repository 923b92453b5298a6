"""Per-example and per-microbatch gradients (``jax.vmap(jax.grad(...))``) and their clipping.

A batch of ``B`` rows, ``r`` of them real (``mask``), is regrouped into at most ``G`` groups:
per example (``G = B``) each row is a group of its own; otherwise the real rows, in their
order, form groups of ``ceil(r / G)`` consecutive rows (the last one possibly shorter) and
masked rows (data-parallel padding, wherever it sits) never share a group with real ones.
One ``jax.grad`` of the group's mean loss runs per group under ``jax.vmap``, each group
going through ``model.apply(..., training=True)`` as a batch of its own. Every leaf of the
result gains a leading axis of ``G``::

    grads_fn = kx.privacy.per_example_grads(model, "sparse_categorical_crossentropy")
    g = jax.jit(grads_fn)(params, state, x, y)   # g["dense"]["kernel"]: (B, in, out)

Slots left over in a group repeat a real row (so the forward pass stays finite) and are
masked out of the loss.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from kerax import errors, losses
from kerax.core.layer import aux_losses
from kerax.privacy.model_check import check_model

# (y_true, y_pred, sample_weight, mask, count=None) -> (mean loss, [per-output losses]),
# the signature of the training objectives' loss (kerax.training.objectives).
LossFn = Callable[..., tuple[jax.Array, list]]


def loss_from_spec(loss: Any) -> LossFn:
    """A masked, weighted mean loss ``fn(y_true, y_pred, sample_weight, mask, count=None)``
    from what ``compile`` takes for one output (a name, a ``kx.losses`` object, a function).

    The mean is ``sum(loss * sample_weight * mask) / max(sum(mask), 1)``, as in training.
    """
    loss_obj = losses.get(loss)

    def fn(y_true: Any, y_pred: Any, sample_weight: Any, mask: jax.Array,
           count: Any = None) -> tuple[jax.Array, list]:
        outputs = len(jax.tree.leaves(y_pred))
        if outputs != 1:  # checked while tracing: before the loss meets a list of outputs
            raise errors.ConfigError(
                f"per_example_grads: expected a single-output model; received a model with {outputs} "
                "outputs; train a multi-output model with compile(dp=kx.privacy.DPSGD(...)) instead")
        per = loss_obj.call(y_true, y_pred).astype(jnp.float32)
        per = per.reshape(per.shape[0], -1).mean(axis=1)
        w = mask if sample_weight is None else mask * sample_weight
        count = jnp.maximum(jnp.sum(mask) if count is None else count, 1.0)
        value = jnp.sum(jnp.where(w > 0, per * w, 0.0)) / count
        return value, [value]

    return fn


class GroupGrads(NamedTuple):
    """What :func:`grouped_grads` returns (``G`` groups of ``k`` rows, batch of ``B``)."""

    grads: Any       # params tree, every leaf (G, *param.shape)
    losses: jax.Array  # (G,): each group's mean loss (with its activity penalties)
    y_pred: Any      # model outputs for the B real rows, (B, ...) per leaf
    states: Any      # state tree returned by each group's forward pass, leaves (G, ...)
    mask: jax.Array  # (G, k): 1 for real rows, 0 for masked or filler rows


def _batch_rows(x: Any) -> int:
    leaves = jax.tree.leaves(x)
    if not leaves or jnp.ndim(leaves[0]) == 0:
        raise errors.ShapeError("per-example gradients need inputs with a leading batch axis; "
                                f"received {jax.tree.map(jnp.shape, x)}")
    return int(leaves[0].shape[0])


def _check_rows(tree: Any, b: int, name: str) -> None:
    """Every leaf of ``tree`` has ``b`` rows (a wrong count would be clamped by the gather)."""
    for leaf in jax.tree.leaves(tree):
        shape = jnp.shape(leaf)
        if not shape or shape[0] != b:
            raise errors.ShapeError(
                f"per-example gradients: {name} must have one row per example of x; expected "
                f"{b} rows (x has B={b}); received {name} of shape {tuple(shape)}")


class _Layout(NamedTuple):
    """Where the rows go: slot ``i`` of the ``(G, k)`` groups reads row ``src[i]`` (counted
    when ``valid[i]``), and row ``j``'s output is slot ``place[j]``."""

    src: jax.Array    # (G * k,) int
    valid: jax.Array  # (G * k,) bool
    place: jax.Array  # (B,) int
    k: int


def _layout(mask: jax.Array, groups: int) -> _Layout:
    """Groups of ``ceil(r / groups)`` consecutive real rows, with ``r`` the real rows.

    The shapes are static, the assignment is not: ``k = ceil(B / groups)`` slots per group
    hold a batch without padding, and a padded one fills fewer of them. The real rows are
    first gathered in order (a multi-process batch has each process's padding in its middle),
    so the groups are those of the same rows on one device."""
    b = mask.shape[0]
    if groups == b:  # per example: row i is group i, and a masked row is a masked group
        rows = jnp.arange(b)
        return _Layout(rows, jnp.ones((b,), bool), rows, 1)
    k = -(-b // groups)
    real = mask > 0
    r = jnp.sum(real.astype(jnp.int32))
    size = jnp.maximum(-(-r // groups), 1)  # rows per group, <= k
    order = jnp.argsort(jnp.where(real, 0, 1), stable=True)  # real rows first, in order
    slot = jnp.arange(groups * k)
    group, within = slot // k, slot % k
    compact = group * size + within  # the slot's index among the real rows
    valid = (within < size) & (compact < r)
    src = jnp.where(valid, order[jnp.minimum(compact, b - 1)], order[0])
    pos = jnp.argsort(order)  # each row's index among the real rows (padding: >= r)
    place = jnp.where(pos < r, (pos // size) * k + pos % size, 0)
    return _Layout(src, valid, place, k)


def grouped_grads(model: Any, loss_fn: LossFn, params: Any, state: Any, x: Any, y: Any,
                  sample_weight: Any, mask: jax.Array, rng: jax.Array | None, groups: int) -> GroupGrads:
    """Gradients of each group's mean loss; see the module docstring.

    Args:
      model: any layer or model (``apply(params, state, x, rng=, training=True)``).
      loss_fn: see :data:`LossFn` (e.g. :func:`loss_from_spec`).
      x, y, sample_weight: batches of ``B`` rows (pytrees allowed; ``sample_weight`` may be None).
      mask: (B,) float, 0 for padding rows (they contribute nothing and join no real group).
      rng: the forward pass's key; group ``j`` gets ``fold_in(rng, j)``. None: no randomness.
      groups: ``G`` in ``[1, B]``: ``B`` for per-example gradients, else the ``r`` real rows
        form groups of ``ceil(r / G)`` (``ceil(r / ceil(r / G))`` groups hold real rows).

    Weight penalties (``model.penalty``) are not included: they do not depend on the data.

    Raises:
      ShapeError: ``y`` or ``sample_weight`` without ``B`` rows.
      ConfigError: ``groups`` out of range.
    """
    b = _batch_rows(x)
    if not isinstance(groups, int) or not 1 <= groups <= b:
        raise errors.ConfigError(f"groups must be an int in [1, {b}] (the batch size); received {groups!r}")
    _check_rows(y, b, "y")
    _check_rows(sample_weight, b, "sample_weight")
    mask = jnp.asarray(mask, jnp.float32)
    src, valid, place, k = _layout(mask, groups)

    def regroup(a: Any) -> Any:
        a = jnp.asarray(a)
        return a[src].reshape(groups, k, *a.shape[1:])

    xg, yg = jax.tree.map(regroup, x), jax.tree.map(regroup, y)
    swg = None if sample_weight is None else regroup(sample_weight)
    mg = jnp.where(valid, mask[src], 0.0).reshape(groups, k)
    keys = None if rng is None else jax.vmap(lambda i: jax.random.fold_in(rng, i))(jnp.arange(groups))

    def group_loss(p: Any, xi: Any, yi: Any, swi: Any, mi: jax.Array, key: Any) -> tuple:
        y_pred, new_state = model.apply(p, state, xi, rng=key, training=True)
        total, _ = loss_fn(yi, y_pred, swi, mi)
        return total + aux_losses(new_state), (y_pred, new_state)

    grad_fn = jax.value_and_grad(group_loss, has_aux=True)
    in_axes = (None, 0, 0, None if swg is None else 0, 0, None if keys is None else 0)
    (loss_values, (y_pred, states)), grads = jax.vmap(grad_fn, in_axes=in_axes)(params, xg, yg, swg, mg, keys)
    y_pred = jax.tree.map(lambda a: a.reshape(groups * k, *a.shape[2:])[place], y_pred)
    return GroupGrads(grads, loss_values, y_pred, states, mg)


def per_example_grads(model: Any, loss: Any) -> Callable[..., Any]:
    """A function ``(params, state, x, y, sample_weight=None, rng=None) -> grads`` of
    per-example gradients.

    Example ``i`` runs alone (a batch of one) through ``model.apply(..., training=True)``;
    its gradient is that of ``loss(y[i], y_pred) * sample_weight[i]`` plus its activity
    penalties, with respect to ``params``. Weight penalties are not included. With ``rng``,
    example ``i``'s forward pass gets ``fold_in(rng, i)`` (dropout differs per example).

    Args:
      model: a single-output model or layer.
      loss: what ``compile`` takes for one output: a name (``"mse"``) or a ``kx.losses`` object.

    Shapes: ``x``, ``y``, ``sample_weight``: ``(B, ...)``, ``(B, ...)``, ``(B,)``. Every
    leaf of the result is ``(B, *param.shape)``. The function is pure; wrap it in ``jax.jit``.

    Raises:
      ConfigError: the model holds BatchNormalization (as ``compile(dp=...)``); when called,
        a model with several outputs.
      ShapeError: when called, ``y`` or ``sample_weight`` without as many rows as ``x``.

    Example::

        grads = jax.jit(kx.privacy.per_example_grads(model, "mse"))(params, state, x, y)
    """
    check_model(model)  # a batch of one through BatchNormalization has no meaningful gradient
    loss_fn = loss_from_spec(loss)

    def grads_fn(params: Any, state: Any, x: Any, y: Any, sample_weight: Any = None,
                 rng: jax.Array | None = None) -> Any:
        b = _batch_rows(x)
        return grouped_grads(model, loss_fn, params, state, x, y, sample_weight,
                             jnp.ones((b,), jnp.float32), rng, b).grads

    return grads_fn


def global_norms(grads: Any) -> jax.Array:
    """(G,) L2 norms of each row's gradient over the whole tree (every leaf ``(G, ...)``)."""
    leaves = jax.tree.leaves(grads)
    if not leaves:
        raise errors.ConfigError("global_norms: the gradient tree has no leaves")
    sq = [jnp.sum(jnp.square(g.astype(jnp.float32)).reshape(g.shape[0], -1), axis=1) for g in leaves]
    return jnp.sqrt(sum(sq))


def _check_clip(l2_norm_clip: Any, where: str) -> None:
    """``l2_norm_clip`` must be a finite number > 0 (a traced value is not checked)."""
    if isinstance(l2_norm_clip, jax.core.Tracer):
        return
    number = isinstance(l2_norm_clip, (numbers.Real, np.ndarray, jax.Array)) and not isinstance(l2_norm_clip, bool)
    value = float(l2_norm_clip) if number and np.ndim(l2_norm_clip) == 0 else math.nan
    if not math.isfinite(value) or value <= 0:
        raise errors.ConfigError(f"{where}: l2_norm_clip must be a finite number > 0; received {l2_norm_clip!r}")


def _check_weights(weights: jax.Array, rows: int) -> None:
    """``weights`` must be ``(rows,)`` and, when concrete, in [0, 1] (the sensitivity bound)."""
    if jnp.shape(weights) != (rows,):
        raise errors.ShapeError(f"clip_and_aggregate: weights must have shape ({rows},), one per row of "
                                f"grads; received shape {tuple(jnp.shape(weights))}")
    if isinstance(weights, jax.core.Tracer):
        return
    w = np.asarray(weights, np.float64)
    if not np.all((w >= 0) & (w <= 1)):
        raise errors.ConfigError("clip_and_aggregate: weights must be in [0, 1] (a larger weight multiplies "
                                 f"a row's sensitivity); received min {w.min():g}, max {w.max():g}")


def clip_per_example(grads: Any, l2_norm_clip: float) -> Any:
    """Each row scaled by ``min(1, l2_norm_clip / norm)``: every row's global norm <= clip.

    ``grads``: leaves ``(G, ...)``; returns the same shapes and dtypes.

    Raises:
      ConfigError: ``l2_norm_clip`` not a finite number > 0.
    """
    _check_clip(l2_norm_clip, "clip_per_example")
    return _clip(grads, l2_norm_clip)


def _clip(grads: Any, l2_norm_clip: float) -> Any:
    scale = l2_norm_clip / jnp.maximum(global_norms(grads), l2_norm_clip)  # = min(1, C / norm)
    return jax.tree.map(lambda g: (g * scale.reshape(-1, *([1] * (g.ndim - 1))).astype(g.dtype)), grads)


def clip_and_aggregate(grads: Any, l2_norm_clip: float, weights: jax.Array | None = None) -> Any:
    """``sum_i weights[i] * clip(grads[i])``: leaves ``(G, ...)`` -> ``(...)``.

    ``weights`` (G,), default ones: 0 drops a row (padding). The sum's sensitivity to one
    row is ``l2_norm_clip`` (rows' weights in [0, 1]).

    Raises:
      ConfigError: ``l2_norm_clip`` not a finite number > 0; concrete weights outside [0, 1].
      ShapeError: ``weights`` not of shape ``(G,)``.
    """
    _check_clip(l2_norm_clip, "clip_and_aggregate")
    clipped = _clip(grads, l2_norm_clip)  # raises first for a tree without leaves
    if weights is not None:
        _check_weights(weights, int(jax.tree.leaves(grads)[0].shape[0]))
    if weights is None:
        return jax.tree.map(lambda g: jnp.sum(g, axis=0), clipped)
    w = jnp.asarray(weights)
    # where, not multiply: a dropped row may hold NaN (e.g. a filler row's gradient).
    return jax.tree.map(
        lambda g: jnp.sum(jnp.where(w.reshape(-1, *([1] * (g.ndim - 1))) > 0,
                                    g * w.reshape(-1, *([1] * (g.ndim - 1))).astype(g.dtype), 0), axis=0),
        clipped)
