"""Dynamic loss scaling for float16 training: ``LossScaleOptimizer`` (Keras's names).

float16 has a narrow range: small gradients underflow to 0 and large ones overflow to
inf. The training step multiplies the loss by a *scale* before ``jax.grad`` and divides
the gradients by it afterwards (:func:`scaled_value_and_grad`), so the backward pass
runs in a range float16 holds. The scale lives in the optimizer state and adapts, as in
Keras: a step whose gradients are not all finite is skipped (params and inner optimizer
state unchanged) and halves the scale; after ``dynamic_growth_steps`` finite steps in a
row the scale doubles::

    opt = kx.optimizers.LossScaleOptimizer(kx.optimizers.Adam(1e-3))
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy")

``compile`` wraps the optimizer by itself when the model's policy is ``"mixed_float16"``
(as Keras does). The wrapper is an ordinary optax transformation: without a step that
scales the loss it still skips non-finite updates.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp

from kerax import errors


class LossScaleState(NamedTuple):
    """``scale`` (float32), ``good_steps`` (finite steps since the last change), and the
    wrapped optimizer's state."""

    scale: jax.Array
    good_steps: jax.Array
    inner_state: Any


@dataclasses.dataclass(frozen=True, init=False)
class LossScaleOptimizer:
    """Wraps an optimizer with dynamic loss scaling (see the module docstring).

    Args:
      inner_optimizer: a name, a ``kx.optimizers`` object or an optax transformation.
      initial_scale: the first scale (Keras: ``2**15``), a finite number > 0.
      dynamic_growth_steps: finite steps before the scale doubles (Keras: 2000);
        ``growth_interval`` is accepted as another name for it.

    Raises:
      ConfigError: a non-positive scale or growth interval.
    """

    inner_optimizer: Any
    initial_scale: float
    dynamic_growth_steps: int

    def __init__(self, inner_optimizer: Any, initial_scale: float = 2.0**15,
                 dynamic_growth_steps: int = 2000, *, growth_interval: int | None = None) -> None:
        from kerax import optimizers

        if growth_interval is not None:
            dynamic_growth_steps = growth_interval
        if isinstance(inner_optimizer, LossScaleOptimizer):
            raise errors.ConfigError("LossScaleOptimizer: inner_optimizer is already a "
                                     "LossScaleOptimizer; wrap the plain optimizer once")
        ok = isinstance(initial_scale, numbers.Real) and not isinstance(initial_scale, bool)
        if not (ok and math.isfinite(initial_scale) and initial_scale > 0):
            raise errors.ConfigError("LossScaleOptimizer expected initial_scale to be a finite "
                                     f"number > 0; received initial_scale={initial_scale!r}")
        if isinstance(dynamic_growth_steps, bool) or not isinstance(dynamic_growth_steps, int) \
                or dynamic_growth_steps < 1:
            raise errors.ConfigError("LossScaleOptimizer expected dynamic_growth_steps (growth_"
                                     "interval) to be an int >= 1; received "
                                     f"{dynamic_growth_steps!r}")
        object.__setattr__(self, "inner_optimizer", optimizers.get(inner_optimizer))
        object.__setattr__(self, "initial_scale", float(initial_scale))
        object.__setattr__(self, "dynamic_growth_steps", int(dynamic_growth_steps))

    @property
    def learning_rate(self) -> Any:
        """The wrapped optimizer's learning rate (what ``model.optimizer`` shows)."""
        return getattr(self.inner_optimizer, "learning_rate", None)

    def init(self, params: Any) -> LossScaleState:
        return LossScaleState(jnp.asarray(self.initial_scale, jnp.float32),
                              jnp.zeros((), jnp.int32), self.inner_optimizer.init(params))

    def update(self, grads: Any, state: LossScaleState, params: Any = None,
               **extra: Any) -> tuple[Any, LossScaleState]:
        """Updates from *unscaled* gradients; a non-finite step gives zero updates, keeps the
        inner state and halves the scale."""
        finite = all_finite(grads)
        # Zeros stand in for bad gradients so the inner optimizer never sees inf/NaN.
        safe = jax.tree.map(lambda g: jnp.where(finite, g, jnp.zeros_like(g)), grads)
        updates, inner = self.inner_optimizer.update(safe, state.inner_state, params, **extra)
        updates = jax.tree.map(lambda u: jnp.where(finite, u, jnp.zeros_like(u)), updates)
        inner = jax.tree.map(lambda n, o: jnp.where(finite, n, o), inner, state.inner_state)
        good = jnp.where(finite, state.good_steps + 1, 0)
        grow = good >= self.dynamic_growth_steps
        scale = jnp.where(finite, jnp.where(grow, state.scale * 2.0, state.scale), state.scale * 0.5)
        return updates, LossScaleState(scale, jnp.where(grow, 0, good).astype(jnp.int32), inner)

    def get_config(self) -> dict:
        """The constructor arguments, the inner optimizer as its ``{"class_name", "config"}``.

        Raises:
          ConfigError: the inner optimizer is a raw optax transformation (it has no config).
        """
        from kerax import optimizers

        return {"inner_optimizer": optimizers.serialize(self.inner_optimizer),
                "initial_scale": self.initial_scale,
                "dynamic_growth_steps": self.dynamic_growth_steps}

    @classmethod
    def from_config(cls, config: Any) -> "LossScaleOptimizer":
        """Builds the wrapper from ``get_config()`` output or Keras 3's config (its ``name``
        is dropped).

        Raises:
          ConfigError: not a dict, no ``inner_optimizer``, or unknown keys.
        """
        if not isinstance(config, Mapping) or "inner_optimizer" not in config:
            raise errors.ConfigError("LossScaleOptimizer.from_config expected a dict with an "
                                     f"inner_optimizer; received config={config!r}")
        config = dict(config)
        config.pop("name", None)
        valid = ("inner_optimizer", "initial_scale", "dynamic_growth_steps")
        unknown = sorted(set(config) - set(valid))
        if unknown:
            raise errors.ConfigError(f"LossScaleOptimizer expected config keys among {list(valid)}; "
                                     f"received unknown key(s) {unknown}")
        return cls(**config)

    def __repr__(self) -> str:
        return (f"LossScaleOptimizer({self.inner_optimizer!r}, initial_scale={self.initial_scale}, "
                f"dynamic_growth_steps={self.dynamic_growth_steps})")


def all_finite(tree: Any) -> jax.Array:
    """True when every element of every array in ``tree`` is finite."""
    leaves = [jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def current_scale(opt_state: Any) -> jax.Array | None:
    """The loss scale held in ``opt_state``, or ``None`` without a LossScaleOptimizer.

    Raises:
      ConfigError: a LossScaleOptimizer nested inside another transformation
        (``optax.chain(clip, LossScaleOptimizer(...))``, ``optax.MultiSteps``): the step
        only finds the outermost one, so a nested one would never scale the loss (float16
        gradients would underflow to 0 unnoticed), and the transformations before it would
        see scaled gradients.
    """
    is_scaler = lambda s: isinstance(s, LossScaleState)  # noqa: E731
    inner = opt_state.inner_state if is_scaler(opt_state) else opt_state
    # Also under an outer one: compile wraps the optimizer of a mixed_float16 model again.
    if any(is_scaler(s) for s in jax.tree.leaves(inner, is_leaf=is_scaler)):
        raise errors.ConfigError(
            "LossScaleOptimizer must be the outermost optimizer: it was found nested inside "
            "another transformation (optax.chain, MultiSteps, ...), where the loss is never "
            "scaled. Wrap the whole optimizer instead: "
            "LossScaleOptimizer(optax.chain(clip, optimizer))"
        )
    return opt_state.scale if is_scaler(opt_state) else None


def scaled_value_and_grad(loss_fn: Callable[[Any], tuple[Any, Any]], params: Any,
                          scale: jax.Array | None) -> tuple[tuple[Any, Any], Any]:
    """``jax.value_and_grad(loss_fn, has_aux=True)(params)``, with the loss multiplied by
    ``scale`` before differentiation and the gradients divided by it after (in float32).

    Returns the unscaled ``(loss, aux)`` and the unscaled gradients (possibly non-finite:
    the LossScaleOptimizer then skips the step). ``scale=None``: plain value_and_grad.
    """
    if scale is None:
        return jax.value_and_grad(loss_fn, has_aux=True)(params)

    def scaled(p: Any) -> tuple[Any, Any]:
        loss, aux = loss_fn(p)
        return loss * scale.astype(loss.dtype), (loss, aux)

    (_, (loss, aux)), grads = jax.value_and_grad(scaled, has_aux=True)(params)
    # In float32: 1 / 2**25 is 0 in float16, which would zero float16 weights' gradients.
    inv = 1.0 / scale.astype(jnp.float32)
    return (loss, aux), jax.tree.map(lambda g: (g.astype(jnp.float32) * inv).astype(g.dtype), grads)


def maybe_wrap(optimizer: Any, dtype_policy: str | None) -> Any:
    """``optimizer`` wrapped in a LossScaleOptimizer when ``dtype_policy`` is
    ``"mixed_float16"`` and it is not wrapped yet (what Keras's ``compile`` does)."""
    if dtype_policy == "mixed_float16" and not isinstance(optimizer, LossScaleOptimizer):
        return LossScaleOptimizer(optimizer)
    return optimizer

