"""DP-SGD (Abadi et al. 2016): the ``DPSGD`` config and the private gradient of one step.

``model.compile(..., dp=kx.privacy.DPSGD(l2_norm_clip=1.0, noise_multiplier=1.1))`` makes
every training step compute, instead of the batch's mean gradient::

    g_j   = grad of group j's mean loss        (one group per example, or per microbatch)
    g     = (sum_j clip(g_j, C) + N(0, (sigma * C)^2 I)) / G  + grad(weight penalties)

where ``clip`` scales ``g_j`` so that its L2 norm over the whole parameter tree is at most
``C = l2_norm_clip``, ``sigma = noise_multiplier`` and ``G`` is the number of groups holding
real (unmasked) rows. The noise key is split from the step's key (``TrainState.step_key``),
so it differs at every step and is reproducible from the seed. The optimizer then updates
the weights as usual. Weight penalties (``kernel_regularizer``) do not depend on the data,
so their gradient is added after the noise, unclipped.

Training is then differentially private with respect to one example (add or remove one),
with the guarantee computed by :mod:`kerax.privacy.accountant`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp

from kerax import errors
from kerax.core.layer import Layer, aux_losses, snake_case
from kerax.core.rng import flat_sample
from kerax.privacy.per_example import LossFn, clip_and_aggregate, grouped_grads


def _number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


@dataclasses.dataclass(frozen=True)
class DPSGD:
    """DP-SGD settings for ``compile(dp=...)`` and ``make_train_step(dp=...)``.

    Args:
      l2_norm_clip: ``C > 0``, the bound on each example's (or microbatch's) gradient norm.
      noise_multiplier: ``sigma >= 0``; Gaussian noise of std ``sigma * C`` is added to the
        sum of clipped gradients. 0 gives no privacy (useful to debug clipping).
      microbatches: None (per-example clipping) or ``m >= 1``: the batch is split into ``m``
        groups (``min(m, batch)``; the last group padded when ``m`` does not divide the batch)
        whose mean gradients are clipped. Cheaper, but one example can move its group's
        clipped gradient by ``2C``, so the accountant doubles the sensitivity.
      delta: the ``delta`` that ``fit`` reports epsilon at; pick it below ``1 / n``.

    Raises:
      ConfigError: a value out of range.
    """

    l2_norm_clip: float
    noise_multiplier: float
    microbatches: int | None = None
    delta: float = 1e-5

    def __post_init__(self) -> None:
        if not _number(self.l2_norm_clip) or self.l2_norm_clip <= 0:
            raise errors.ConfigError(f"DPSGD: l2_norm_clip must be a finite number > 0; received {self.l2_norm_clip!r}")
        if not _number(self.noise_multiplier) or self.noise_multiplier < 0:
            raise errors.ConfigError(
                f"DPSGD: noise_multiplier must be a finite number >= 0; received {self.noise_multiplier!r}")
        m = self.microbatches
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
            raise errors.ConfigError(f"DPSGD: microbatches must be None or an int >= 1; received {m!r}")
        if not _number(self.delta) or not 0 < self.delta < 1:
            raise errors.ConfigError(f"DPSGD: delta must be in (0, 1); received {self.delta!r}")

    def groups(self, batch_size: int) -> int:
        """How many clipped groups a batch of ``batch_size`` rows is split into."""
        return batch_size if self.microbatches is None else min(self.microbatches, batch_size)

    def effective_noise(self, batch_size: int) -> float:
        """The noise multiplier relative to the step's sensitivity: ``sigma`` when each group
        holds one example, ``sigma / 2`` for microbatches of several (sensitivity ``2C``)."""
        return self.noise_multiplier if self.groups(batch_size) >= batch_size else self.noise_multiplier / 2

    def epsilon(self, n: int, batch_size: int, epochs: float, delta: float | None = None) -> float:
        """The epsilon of ``epochs`` epochs over ``n`` examples in batches of ``batch_size``
        (``ceil(n / batch_size)`` steps per epoch, sample rate ``batch_size / n``), at
        ``delta`` (default: ``self.delta``). Needs ``dp-accounting``.

        Example: ``DPSGD(1.0, 1.1).epsilon(60000, 256, 60)``.
        """
        from kerax.privacy.accountant import compute_epsilon

        if not isinstance(n, int) or not isinstance(batch_size, int) or not 1 <= batch_size <= n:
            raise errors.ConfigError(
                f"DPSGD.epsilon: expected ints 1 <= batch_size <= n; received n={n!r}, batch_size={batch_size!r}")
        if not _number(epochs) or epochs < 0:
            raise errors.ConfigError(f"DPSGD.epsilon: epochs must be a number >= 0; received {epochs!r}")
        steps = int(math.ceil(epochs * math.ceil(n / batch_size)))
        return compute_epsilon(steps, self.effective_noise(batch_size), batch_size / n,
                               self.delta if delta is None else delta)


def _children(layer: Any) -> list[tuple[str, Any]]:
    """A layer's sub-layers with their names (containers, facades, wrappers)."""
    core = getattr(layer, "core", None)
    if isinstance(core, Layer) and core is not layer:
        return [("", core)]
    out = []
    kids = getattr(layer, "layers", None)
    if isinstance(kids, (list, tuple)):
        namer = getattr(layer, "layer_name", None)
        names = getattr(layer, "names", None)
        for i, child in enumerate(kids):
            if callable(namer):
                out.append((namer(child), child))
            elif isinstance(names, tuple) and len(names) == len(kids):
                out.append((names[i], child))
    if dataclasses.is_dataclass(layer):
        for f in dataclasses.fields(layer):
            value = getattr(layer, f.name, None)
            if isinstance(value, Layer):  # wrappers: TimeDistributed, Bidirectional, ...
                out.append((value.name or snake_case(type(value).__name__), value))
    return out


def check_model(model: Any) -> None:
    """Refuses models whose layers mix the examples of a batch (BatchNormalization).

    Raises:
      ConfigError: naming the first such layer and what to use instead.
    """
    from kerax.layers.normalization import BatchNormalization

    todo, seen = [("", model)], set()
    while todo:
        path, layer = todo.pop(0)
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, BatchNormalization):
            raise errors.ConfigError(
                f"DP-SGD cannot train layer {path!r} (BatchNormalization): its batch statistics "
                "mix the examples of a batch, so one example's gradient is not defined and the "
                "moving statistics would leak data; use GroupNormalization or LayerNormalization")
        todo.extend((f"{path}/{name}" if path and name else name or path, child) for name, child in _children(layer))


def check_config(dp: Any, model: Any, distribute: Any = None) -> None:
    """What ``compile(dp=...)`` and the train step check before anything compiles."""
    if dp is None:
        return
    if not isinstance(dp, DPSGD):
        raise errors.ConfigError(f"dp= expects a kx.privacy.DPSGD; received {type(dp).__name__}")
    if distribute is not None and getattr(distribute, "mode", None) == "pmap":
        raise errors.ConfigError(
            "dp= does not support DataParallel(mode='pmap') (each device would need its share "
            "of the noise); received mode='pmap'; use DataParallel(mode='shard')")
    check_model(model)


def add_noise(tree: Any, std: float, key: jax.Array) -> Any:
    """``tree + N(0, std^2)`` on every entry, one independent key per leaf."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, max(len(leaves), 1))
    noise = [flat_sample(lambda n, k=k: jax.random.normal(k, n, jnp.float32), g.shape) for g, k in zip(leaves, keys)]
    noisy = [g + std * z.astype(g.dtype) for g, z in zip(leaves, noise)]
    return jax.tree.unflatten(treedef, noisy)


def _merge_states(states: Any, weights: jax.Array) -> Any:
    """One state from the groups' states: the weighted mean of float leaves (activity
    penalties are per-batch means), the first group's value for the others."""
    w = weights / jnp.maximum(jnp.sum(weights), 1.0)

    def merge(a: jax.Array) -> jax.Array:
        if not jnp.issubdtype(a.dtype, jnp.inexact):
            return a[0]
        return jnp.tensordot(w.astype(a.dtype), a, axes=1)

    return jax.tree.map(merge, states)


def dp_value_and_grad(dp: DPSGD, model: Any, loss_fn: LossFn, params: Any, state: Any, x: Any,
                      y: Any, sample_weight: Any, mask: jax.Array, rng: jax.Array) -> tuple:
    """One step's private gradient, in the form of the train step's normal path.

    Args:
      loss_fn: ``(y_true, y_pred, sample_weight, mask, count=None) -> (total, parts)``.
      mask: (B,) 0 for padding rows. rng: the step's key (split into dropout and noise keys).

    Returns:
      ``(total_loss, parts, y_pred, new_state, grads)``: the batch's loss (as the normal
      path reports it, from the same forward passes) and the noised, clipped mean gradient.
    """
    b = int(jax.tree.leaves(x)[0].shape[0])
    forward_key, noise_key = jax.random.split(rng)
    g = grouped_grads(model, loss_fn, params, state, x, y, sample_weight, mask, forward_key, dp.groups(b))
    real = (jnp.sum(g.mask, axis=1) > 0).astype(jnp.float32)  # groups with at least one real row
    summed = clip_and_aggregate(g.grads, dp.l2_norm_clip, real)
    if dp.noise_multiplier > 0:
        summed = add_noise(summed, dp.noise_multiplier * dp.l2_norm_clip, noise_key)
    denom = jnp.maximum(jnp.sum(real), 1.0)
    penalty, penalty_grads = jax.value_and_grad(lambda p: jnp.asarray(model.penalty(p), jnp.float32))(params)
    grads = jax.tree.map(lambda s, pg: (s / denom).astype(s.dtype) + pg, summed, penalty_grads)
    new_state = _merge_states(g.states, real)
    total, parts = loss_fn(y, g.y_pred, sample_weight, mask)
    total = total + penalty + aux_losses(new_state)
    return total, parts, g.y_pred, new_state, grads
