"""Per-example gradients with ``jax.vmap(jax.grad(...))``, and DP-SGD by hand.

A kerax model's ``apply`` is a pure function of ``(params, x)``, so the gradient of one
example's loss is ``jax.grad`` of it, and ``jax.vmap`` over the batch gives every
example's gradient at once (a tree whose leaves have a leading batch axis), without a
Python loop. That is what differentially private SGD (Abadi et al., 2016) needs:

1. the gradient of each example, ``g_i``;
2. clip each one to norm at most ``C``: ``g_i * min(1, C / ||g_i||)``;
3. sum them, add Gaussian noise ``N(0, (sigma * C)^2)`` to every coordinate, divide by
   the batch size, and take an optimizer step.

The privacy accounting (how much ``epsilon`` a run spends) is left out.

Run: python examples/per_example_grads.py
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import kerax as kx
from kerax import layers


def blobs(n: int, seed: int = 0, classes: int = 4, dim: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian clusters around fixed random centres: ``x (n, dim)`` float32, ``y (n,)`` int32."""
    centres = np.random.default_rng(42).normal(scale=1.5, size=(classes, dim))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = centres[y] + rng.normal(size=(n, dim))
    return x.astype(np.float32), y.astype(np.int32)


def build(classes: int = 4) -> kx.Sequential:
    return kx.Sequential([layers.Dense(32, activation="tanh"), layers.Dense(classes)])


def make_loss(model: kx.Sequential) -> Callable:
    """``loss(params, x (b, d), y (b,)) -> scalar``: mean cross-entropy over the batch."""
    scce = kx.losses.SparseCategoricalCrossentropy(from_logits=True)

    def loss(params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
        logits, _ = model.apply(params, {}, x)
        return jnp.mean(scce(y, logits))

    return loss


def per_example_grads(loss: Callable, params: Any, x: jax.Array, y: jax.Array) -> Any:
    """Every example's gradient: leaves shaped ``(batch, *param.shape)``.

    Each example is fed as a batch of one (``x[i][None]``), as the model expects a batch axis.
    """
    one = lambda p, xi, yi: loss(p, xi[None], yi[None])  # noqa: E731
    return jax.vmap(jax.grad(one), in_axes=(None, 0, 0))(params, x, y)


def grad_norms(grads: Any) -> jax.Array:
    """The global L2 norm of each example's gradient tree: ``(batch,)``."""
    squares = [jnp.sum(g.reshape(g.shape[0], -1) ** 2, axis=1) for g in jax.tree.leaves(grads)]
    return jnp.sqrt(sum(squares))


def clip(grads: Any, clip_norm: float) -> Any:
    """Scales each example's gradient tree to norm at most ``clip_norm``."""
    scale = jnp.minimum(1.0, clip_norm / jnp.maximum(grad_norms(grads), 1e-12))
    return jax.tree.map(lambda g: g * scale.reshape((-1,) + (1,) * (g.ndim - 1)), grads)


def private_gradient(loss: Callable, params: Any, x: jax.Array, y: jax.Array, key: jax.Array,
                     clip_norm: float, noise_multiplier: float) -> Any:
    """DP-SGD's gradient: clipped per-example gradients, summed, noised, averaged."""
    clipped = clip(per_example_grads(loss, params, x, y), clip_norm)
    leaves, treedef = jax.tree.flatten(clipped)
    keys = jax.random.split(key, len(leaves))
    noisy = [g.sum(0) + noise_multiplier * clip_norm * jax.random.normal(k, g.shape[1:], g.dtype)
             for g, k in zip(leaves, keys)]
    return jax.tree.unflatten(treedef, [g / x.shape[0] for g in noisy])


def main(steps: int = 300, batch_size: int = 64, n_train: int = 4096, n_test: int = 1024,
         clip_norm: float = 5.0, noise_multiplier: float = 1.0, learning_rate: float = 0.05) -> dict:
    x, y = blobs(n_train, seed=0)
    x_test, y_test = blobs(n_test, seed=1)
    model = build()
    params, _ = model.init(jax.random.key(0), jax.ShapeDtypeStruct((1, x.shape[1]), jnp.float32))
    loss = make_loss(model)

    # Look at one batch's per-example gradients before training.
    grads = per_example_grads(loss, params, x[:batch_size], y[:batch_size])
    norms = grad_norms(grads)
    clipped_norms = grad_norms(clip(grads, clip_norm))

    tx = optax.sgd(learning_rate, momentum=0.9)

    @jax.jit
    def dp_step(params, opt_state, xb, yb, key):
        g = private_gradient(loss, params, xb, yb, key, clip_norm, noise_multiplier)
        updates, opt_state = tx.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    @jax.jit
    def accuracy(params, xs, ys):
        logits, _ = model.apply(params, {}, xs)
        return jnp.mean(jnp.argmax(logits, -1) == ys)

    opt_state = tx.init(params)
    rng = np.random.default_rng(0)
    key = jax.random.key(1)
    initial_accuracy = float(accuracy(params, x_test, y_test))
    for _ in range(steps):
        idx = rng.choice(n_train, batch_size, replace=False)
        key, sub = jax.random.split(key)
        params, opt_state = dp_step(params, opt_state, x[idx], y[idx], sub)

    result = {
        "grad_norms": np.asarray(norms),
        "clipped_norms": np.asarray(clipped_norms),
        "fraction_clipped": float(jnp.mean(norms > clip_norm)),
        "initial_test_accuracy": initial_accuracy,
        "test_accuracy": float(accuracy(params, x_test, y_test)),
        "test_loss": float(loss(params, x_test, y_test)),
    }
    print(f"per-example gradient norms (first 6): {np.round(result['grad_norms'][:6], 3)}")
    print(f"after clipping to {clip_norm}: {np.round(result['clipped_norms'][:6], 3)}")
    for k in ("fraction_clipped", "initial_test_accuracy", "test_accuracy", "test_loss"):
        print(f"{k}: {result[k]:.4f}")
    return result


if __name__ == "__main__":
    main()
