"""The pure core with plain JAX: init/apply under jit, an ensemble with vmap, and
per-example gradients with vmap(grad). No Keras shell involved.

Run: python examples/pure_core.py
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

import kerax as kx
from kerax import layers


def two_moons(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A small two-class data set that a linear model cannot separate."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, np.pi, n)
    label = rng.integers(0, 2, n)
    x = np.stack([np.cos(t) + label, np.sin(t) * (1 - 2 * label) + 0.5 * label], axis=1)
    return (x + rng.normal(scale=0.1, size=x.shape)).astype(np.float32), label.astype(np.int32)


def main(steps: int = 300, members: int = 8) -> dict:
    x, y = two_moons(512)
    model = kx.Sequential([
        layers.Dense(32, activation="relu"),
        layers.Dense(32, activation="relu"),
        layers.Dense(2),
    ])

    def loss_fn(params, x, y):
        logits, _ = model.apply(params, {}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    tx = optax.adam(1e-2)

    @jax.jit
    def train(key):
        params, _ = model.init(key, jax.ShapeDtypeStruct((1, 2), jnp.float32))
        opt_state = tx.init(params)

        def step(carry, _):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, _), losses = jax.lax.scan(step, (params, opt_state), None, length=steps)
        return params, losses

    # One model, then an ensemble of `members` models trained as one vmapped program.
    params, losses = train(jax.random.key(0))
    keys = jax.random.split(jax.random.key(1), members)
    ensemble, ensemble_losses = jax.jit(jax.vmap(train))(keys)

    def accuracy(params):
        logits, _ = model.apply(params, {}, x)
        return jnp.mean(jnp.argmax(logits, -1) == y)

    member_acc = jax.vmap(accuracy)(ensemble)
    mean_logits = jax.vmap(lambda p: model.apply(p, {}, x)[0])(ensemble).mean(0)
    ensemble_acc = jnp.mean(jnp.argmax(mean_logits, -1) == y)

    # Per-example gradients: one gradient tree per example, without a Python loop.
    per_example = jax.vmap(jax.grad(loss_fn), in_axes=(None, 0, 0))(params, x[:16, None], y[:16, None])
    norms = jnp.sqrt(sum(jnp.sum(g.reshape(16, -1) ** 2, axis=1) for g in jax.tree.leaves(per_example)))

    result = {
        "first_loss": float(losses[0]),
        "final_loss": float(losses[-1]),
        "accuracy": float(accuracy(params)),
        "member_accuracy": [round(float(a), 3) for a in member_acc],
        "ensemble_accuracy": float(ensemble_acc),
        "per_example_grad_norms": [round(float(n), 4) for n in norms[:4]],
    }
    for k, v in result.items():
        print(f"{k}: {v}")
    return result


if __name__ == "__main__":
    main()
