"""DP-SGD (Abadi et al. 2016): the ``DPSGD`` config and the private gradient of one step.

``model.compile(..., dp=kx.privacy.DPSGD(l2_norm_clip=1.0, noise_multiplier=1.1))`` makes
every training step compute, instead of the batch's mean gradient::

    g_j   = grad of group j's mean loss        (one group per example, or per microbatch)
    g     = (sum_j clip(g_j, C) + N(0, (sigma * C)^2 I)) / G  + grad(weight penalties)

where ``clip`` scales ``g_j`` so that its L2 norm over the whole parameter tree is at most
``C = l2_norm_clip``, ``sigma = noise_multiplier`` and ``G`` is the number of groups holding
real (unmasked) rows. With ``microbatches=m``, the ``r`` real rows of a batch form groups of
``ceil(r / m)`` consecutive real rows (masked padding rows are set aside first, wherever
they sit), so a data-parallel run groups exactly as one device does. The noise key is split
from the step's key (``TrainState.step_key``), so it differs at every step and is
reproducible from the seed. The optimizer then updates the weights as usual. Weight
penalties (``kernel_regularizer``) do not depend on the data, so their gradient is added
after the noise, unclipped.

Training is then differentially private with respect to one example (add or remove one),
with the guarantee computed by :mod:`kerax.privacy.accountant`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import warnings
from typing import Any

import jax
import jax.numpy as jnp

from kerax import errors
from kerax.core.layer import aux_losses
from kerax.core.rng import flat_sample
from kerax.privacy.model_check import check_model
from kerax.privacy.per_example import LossFn, clip_and_aggregate, grouped_grads


def _number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value: Any) -> bool:
    """An int or a NumPy integer (``x.shape[0]``, ``np.int64``), never a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class DPSGD:
    """DP-SGD settings for ``compile(dp=...)`` and ``make_train_step(dp=...)``.

    Args:
      l2_norm_clip: ``C > 0``, the bound on each example's (or microbatch's) gradient norm.
      noise_multiplier: ``sigma >= 0``; Gaussian noise of std ``sigma * C`` is added to the
        sum of clipped gradients. 0 gives no privacy (useful to debug clipping).
      microbatches: None (per-example clipping) or ``m >= 1``: a batch of ``r`` real rows is
        cut into groups of ``k = ceil(r / m)`` consecutive rows (``ceil(r / k)`` groups, the
        last one possibly shorter) whose mean gradients are clipped. ``fit`` requires an ``m``
        below ``batch_size`` to divide it, so a full batch makes exactly ``m`` groups. Cheaper, but
        one example can move its group's clipped gradient by ``2C``, so the accountant
        doubles the sensitivity (unless ``m >= batch_size``: one example per group).
      delta: the ``delta`` that ``fit`` reports epsilon at; pick it below ``1 / n`` (the
        default 1e-5 suits data sets of fewer than 100 000 examples; ``fit`` warns otherwise).

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
        if m is not None and (not _integer(m) or m < 1):
            raise errors.ConfigError(f"DPSGD: microbatches must be None or an int >= 1; received {m!r}")
        if m is not None:  # a NumPy integer becomes an int: static shapes and JSON need one
            object.__setattr__(self, "microbatches", int(m))
        if not _number(self.delta) or not 0 < self.delta < 1:
            raise errors.ConfigError(f"DPSGD: delta must be in (0, 1); received {self.delta!r}")

    def get_config(self) -> dict:
        """The four settings as plain JSON numbers (``compile.json`` of a saved model)."""
        m = self.microbatches
        return {"l2_norm_clip": float(self.l2_norm_clip), "noise_multiplier": float(self.noise_multiplier),
                "microbatches": None if m is None else int(m), "delta": float(self.delta)}

    @classmethod
    def from_config(cls, config: Any) -> "DPSGD":
        """The inverse of :meth:`get_config`.

        Raises:
          ConfigError: not a dict of exactly the four settings, or a value out of range.
        """
        keys = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(config, dict) or not set(config) <= keys or "l2_norm_clip" not in config \
                or "noise_multiplier" not in config:
            got = sorted(config) if isinstance(config, dict) else type(config).__name__
            raise errors.ConfigError(f"DPSGD.from_config: expected a dict with keys {sorted(keys)}; received {got}")
        return cls(**config)

    def group_size(self, rows: int) -> int:
        """Rows per clipped group in a batch of ``rows`` real rows: 1 per example, else ``ceil(rows / m)``."""
        m = self.microbatches
        return 1 if m is None or m >= rows else -(-rows // m)

    def groups(self, rows: int) -> int:
        """How many clipped groups a batch of ``rows`` real rows makes: ``ceil(rows / group_size)``."""
        return -(-rows // self.group_size(rows))

    def check_batch_size(self, batch_size: int, where: str = "fit") -> None:
        """Refuses a ``microbatches`` that does not divide ``batch_size`` (as TensorFlow
        Privacy does): the batches would not make ``microbatches`` equal groups.

        Raises:
          ConfigError: naming both numbers and the nearest divisors.
        """
        m = self.microbatches
        if m is None or m >= batch_size or batch_size % m == 0:  # m >= batch_size: one example per group
            return
        below = max(d for d in range(1, min(m, batch_size) + 1) if batch_size % d == 0)
        raise errors.ConfigError(
            f"{where}: DPSGD(microbatches={m}) must divide batch_size={batch_size} (each full batch is "
            f"cut into microbatches={m} equal groups); received {batch_size} % {m} = {batch_size % m}; "
            f"use e.g. microbatches={below} or a batch_size that is a multiple of {m}")

    def effective_noise(self, batch_size: int) -> float:
        """The noise multiplier relative to the step's sensitivity: ``sigma`` when each group
        holds one example, ``sigma / 2`` for microbatches of several (sensitivity ``2C``).

        ``batch_size`` is the nominal (largest) batch: smaller batches make groups no larger."""
        return self.noise_multiplier if self.group_size(batch_size) == 1 else self.noise_multiplier / 2

    def epsilon(self, n: int, batch_size: int, epochs: float, delta: float | None = None) -> float:
        """The epsilon of ``epochs`` epochs over ``n`` examples in batches of ``batch_size``
        (``ceil(n / batch_size)`` steps per epoch, sample rate ``batch_size / n``), at
        ``delta`` (default: ``self.delta``). Needs ``dp-accounting``.

        Example: ``DPSGD(1.0, 1.1).epsilon(60000, 256, 60)``.

        Raises:
          ConfigError: values out of range, or ``microbatches`` not dividing ``batch_size``.

        Warns:
          UserWarning: ``delta >= 1 / n`` (such a delta allows leaking whole examples).
        """
        from kerax.privacy.accountant import compute_epsilon, delta_warning

        if not _integer(n) or not _integer(batch_size) or not 1 <= batch_size <= n:
            raise errors.ConfigError(
                f"DPSGD.epsilon: expected ints 1 <= batch_size <= n; received n={n!r}, batch_size={batch_size!r}")
        if not _number(epochs) or epochs < 0:
            raise errors.ConfigError(f"DPSGD.epsilon: epochs must be a number >= 0; received {epochs!r}")
        n, batch_size = int(n), int(batch_size)
        self.check_batch_size(batch_size, "DPSGD.epsilon")
        delta = self.delta if delta is None else delta
        message = delta_warning(delta, n)
        if message:
            warnings.warn(message, stacklevel=2)
        steps = int(math.ceil(epochs * math.ceil(n / batch_size)))
        return compute_epsilon(steps, self.effective_noise(batch_size), batch_size / n, delta)


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
    # b may include data-parallel padding: grouped_grads groups the real rows (mask) only,
    # so the groups are those of one device and never mix padding with real rows.
    most = b if dp.microbatches is None else min(dp.microbatches, b)
    g = grouped_grads(model, loss_fn, params, state, x, y, sample_weight, mask, forward_key, most)
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
