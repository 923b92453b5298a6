"""Adam exactly as Keras computes it, as an optax transformation, for the optax users.

Keras adds epsilon to ``sqrt(v)`` *before* the bias correction::

    m += (g - m) * (1 - beta_1);  v += (g * g - v) * (1 - beta_2)
    w -= lr * sqrt(1 - beta_2**t) / (1 - beta_1**t) * m / (sqrt(v) + epsilon)

``optax.adam(eps=1e-7)`` adds it after, which is a different optimizer when gradients are
tiny: at batch 8 the two move the epoch losses apart by about 1e-3, the agreement
tolerance. kerax's ``kx.optimizers.Adam`` and Keras compute the formula above, so every
optax user here (hand-written, kerax's pure level, Flax, Equinox) gets it too, at the cost
of optax's own Adam (the same elementwise work).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from bench import workloads as wl


class KerasAdamState(NamedTuple):
    count: jax.Array
    mu: Any
    nu: Any


def keras_adam(learning_rate: float = wl.LEARNING_RATE, beta_1: float = wl.BETA_1, beta_2: float = wl.BETA_2,
               epsilon: float = wl.EPSILON) -> optax.GradientTransformation:
    """Keras's Adam update (see the module docstring) as an ``optax.GradientTransformation``."""

    def init(params: Any) -> KerasAdamState:
        return KerasAdamState(jnp.zeros([], jnp.int32), jax.tree.map(jnp.zeros_like, params),
                              jax.tree.map(jnp.zeros_like, params))

    def update(grads: Any, state: KerasAdamState, params: Any = None) -> tuple[Any, KerasAdamState]:
        count = state.count + 1
        t = count.astype(jnp.float32)
        mu = jax.tree.map(lambda m, g: m + (g - m) * (1 - beta_1), state.mu, grads)
        nu = jax.tree.map(lambda v, g: v + (g * g - v) * (1 - beta_2), state.nu, grads)
        alpha = learning_rate * jnp.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
        updates = jax.tree.map(lambda m, v: -alpha * m / (jnp.sqrt(v) + epsilon), mu, nu)
        return updates, KerasAdamState(count, mu, nu)

    return optax.GradientTransformation(init, update)
