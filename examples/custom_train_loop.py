"""A custom training loop on the pure level: TrainState + make_train_step, no Keras shell.

Everything is a plain JAX value: the params are a dict, the step is a jitted function,
and the loop is ordinary Python you can change (here: a learning-rate warm-up read from
the optimizer state, and evaluation every epoch).

Run: python examples/custom_train_loop.py
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

import kerax as kx
from kerax import layers


def main(epochs: int = 5, batch_size: int = 64) -> dict:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2048, 16)).astype(np.float32)
    true_w = rng.normal(size=(16, 4)).astype(np.float32)
    y = np.argmax(x @ true_w, axis=1).astype(np.int32)
    x_train, y_train, x_val, y_val = x[:1792], y[:1792], x[1792:], y[1792:]

    model = kx.Sequential([layers.Dense(64, activation="gelu"), layers.Dropout(0.1), layers.Dense(4)])
    params, state = model.init(jax.random.key(0), jax.ShapeDtypeStruct((1, 16), jnp.float32))
    schedule = optax.warmup_cosine_decay_schedule(0.0, 3e-3, 20, epochs * len(x_train) // batch_size)
    tx = optax.adamw(schedule)
    ts = kx.TrainState.create(model, params, state, tx, rng=jax.random.key(1))

    loss = kx.losses.SparseCategoricalCrossentropy(from_logits=True)
    train_step = kx.make_train_step(model, loss=loss, metrics=["accuracy"])
    eval_step = kx.make_eval_step(model, loss=loss, metrics=["accuracy"])

    history = []
    for epoch in range(epochs):
        order = np.random.default_rng(epoch).permutation(len(x_train))
        for i in range(0, len(order) - batch_size + 1, batch_size):
            idx = order[i:i + batch_size]
            ts, logs = train_step(ts, (x_train[idx], y_train[idx]))
        val = eval_step(ts, (x_val, y_val))
        history.append({k: float(v) for k, v in {**logs, **{f"val_{k}": v for k, v in val.items()}}.items()})
        print(f"epoch {epoch + 1}: " + " - ".join(f"{k}: {v:.4f}" for k, v in history[-1].items()))
    return {"history": history, "steps": int(ts.step)}


if __name__ == "__main__":
    main()
