"""Train an ensemble of models at once with ``jax.vmap``: one program, one member axis.

Each member is the same architecture started from its own key (initial weights and
dropout stream) and reading the data in its own order. ``jax.vmap`` of ``model.init``
over the keys gives params with a leading member axis; ``jax.vmap`` of the train step
over that axis, inside one ``jax.jit``, updates every member in a single call. Nothing in
kerax is ensemble-specific: the layers, ``kx.TrainState`` and ``kx.make_train_step`` are
pure, so they vmap as they are.

Member ``m`` is exactly the model one gets by training alone from ``keys[m]`` on data
order ``m`` (the test checks this), and the ensemble (the mean of the members' softmax)
is usually more accurate than its average member.

Data: the 8x8 handwritten digits (``kx.datasets.load_digits()``), 1,437 train / 360 test.

Run: python examples/ensemble_vmap.py
"""

from __future__ import annotations

import time
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax

import kerax as kx
from kerax import datasets, layers

IMAGE = jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32)


def build() -> kx.Sequential:
    return kx.Sequential([
        layers.Conv2D(16, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dense(64, activation="relu"),
        layers.Dropout(0.3),
        layers.Dense(10),
    ])


def create(model: kx.Sequential, tx: optax.GradientTransformation, key: jax.Array) -> kx.TrainState:
    """One member's train state: ``key`` seeds its initial weights and its dropout."""
    init_key, dropout_key = jax.random.split(key)
    params, state = model.init(init_key, IMAGE)
    return kx.TrainState.create(model, params, state, tx, rng=dropout_key)


def batches(n: int, batch_size: int, epochs: int, seeds: list[int]) -> Iterator[np.ndarray]:
    """Index batches ``(members, batch_size)``: each member reads the data in its own order."""
    rngs = [np.random.default_rng(s) for s in seeds]
    for _ in range(epochs):
        orders = np.stack([rng.permutation(n) for rng in rngs])
        for i in range(0, n - batch_size + 1, batch_size):
            yield orders[:, i:i + batch_size]


def main(members: int = 8, epochs: int = 30, batch_size: int = 64, learning_rate: float = 3e-3,
         seed: int = 0, max_steps: int | None = None) -> dict:
    """Trains ``members`` models for ``epochs`` (or ``max_steps`` steps) and evaluates them."""
    (x_train, y_train), (x_test, y_test) = datasets.load_digits()
    model = build()
    tx = optax.adam(learning_rate)
    loss = kx.losses.SparseCategoricalCrossentropy(from_logits=True)
    train_step = kx.make_train_step(model, loss=loss)

    keys = jax.random.split(jax.random.key(seed), members)
    ensemble = jax.jit(jax.vmap(lambda k: create(model, tx, k)))(keys)  # leaves: (members, ...)
    # One jitted program updates all members, each on its own batch.
    ensemble_step = jax.jit(jax.vmap(train_step))

    t0 = time.perf_counter()
    orders = [seed + m for m in range(members)]  # member m's data-order seed
    for i, idx in enumerate(batches(len(x_train), batch_size, epochs, orders)):
        if i == max_steps:
            break
        ensemble, logs = ensemble_step(ensemble, (x_train[idx], y_train[idx]))
    jax.block_until_ready(ensemble)
    train_seconds = time.perf_counter() - t0

    @jax.jit
    def probabilities(params, state, x):
        logits, _ = model.apply(params, state, x)
        return jax.nn.softmax(logits)

    probs = jax.vmap(probabilities, in_axes=(0, 0, None))(ensemble.params, ensemble.state, x_test)
    member_acc = np.asarray(jnp.mean(jnp.argmax(probs, -1) == y_test, axis=1))
    ensemble_acc = float(jnp.mean(jnp.argmax(probs.mean(0), -1) == y_test))

    result = {
        "member_accuracy": [float(a) for a in member_acc],
        "mean_member_accuracy": float(member_acc.mean()),
        "ensemble_accuracy": ensemble_acc,
        "final_loss": [float(v) for v in logs["loss"]],
        "steps": int(ensemble.step[0]),
        "train_seconds": train_seconds,
        "ensemble": ensemble,
        "keys": keys,
    }
    print(f"member test accuracy: {np.round(member_acc, 4)}")
    print(f"mean member: {result['mean_member_accuracy']:.4f} - ensemble: {ensemble_acc:.4f} "
          f"({members} members, {result['steps']} steps in {train_seconds:.1f} s)")
    return result


if __name__ == "__main__":
    main()
