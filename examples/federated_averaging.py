"""Federated averaging (FedAvg) over 16 simulated clients, each round one vmapped program.

Each client holds a label-skewed shard of the 8x8 digits (about 90% of its rows from 2 or
3 classes; shard sizes differ). A round: every client starts from the global weights and
runs ``local_steps`` minibatch SGD steps on its own shard; the 16 clients' local training
is ONE ``jax.jit``-compiled ``jax.vmap`` over the client axis (the pure core only:
``model.init`` / ``model.apply``, ``jax.vmap``, optax). The server then averages the
clients' weights, weighted by shard size (McMahan et al., 2017).

For comparison the same model is trained centrally on all the rows with the same
optimizer for ``rounds * local_steps`` steps (the budget of one client), and both test
accuracies are printed.

Run: python examples/federated_averaging.py
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import kerax as kx
from kerax import datasets, layers

FEATURES = jax.ShapeDtypeStruct((1, 64), jnp.float32)


def build() -> kx.Sequential:
    return kx.Sequential([layers.Dense(128, activation="relu"), layers.Dense(10)])


def label_skewed_shards(y: np.ndarray, clients: int, seed: int, skew: float = 0.9) -> list[np.ndarray]:
    """Row indices per client: ``skew`` of its rows from its 2-3 main classes, the rest from
    anywhere; shard sizes vary. Every row goes to exactly one client."""
    rng = np.random.default_rng(seed)
    main = [rng.choice(10, size=2 + c % 2, replace=False) for c in range(clients)]
    owners = {k: [c for c in range(clients) if k in main[c]] for k in range(10)}
    shards: list[list[int]] = [[] for _ in range(clients)]
    for row in rng.permutation(len(y)):
        mains = owners[int(y[row])]
        if mains and rng.random() < skew:
            shards[int(rng.choice(mains))].append(int(row))
        else:
            shards[int(rng.integers(clients))].append(int(row))
    return [np.array(sorted(s), np.int64) for s in shards]


def make_round(model: kx.Sequential, tx: optax.GradientTransformation, local_steps: int, batch_size: int):
    """``round(global_params, x, y, sizes, keys) -> client_params`` (leading client axis).

    ``x, y``: every client's shard padded to one length ``(C, L, ...)``; ``sizes`` (C,):
    real rows per client; each local step draws a batch of real rows with the client's key."""

    def loss_fn(params, x, y):
        logits, _ = model.apply(params, {}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def local(params, x, y, size, key):
        opt_state = tx.init(params)

        def step(carry, key):
            params, opt_state = carry
            rows = jax.random.randint(key, (batch_size,), 0, size)
            grads = jax.grad(loss_fn)(params, x[rows], y[rows])
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        (params, _), _ = jax.lax.scan(step, (params, opt_state), jax.random.split(key, local_steps))
        return params

    # Clients share the global weights (in_axes None) and have their own data and keys.
    return jax.jit(jax.vmap(local, in_axes=(None, 0, 0, 0, 0)))


def weighted_average(client_params, sizes: jax.Array):
    """The server's FedAvg update: sum_c n_c * w_c / sum_c n_c."""
    w = sizes / sizes.sum()
    return jax.tree.map(lambda p: jnp.tensordot(w, p, axes=1), client_params)


def accuracy(model: kx.Sequential, params, x: np.ndarray, y: np.ndarray) -> float:
    logits, _ = jax.jit(lambda p, x: model.apply(p, {}, x))(params, x)
    return float(np.mean(np.argmax(logits, -1) == y))


def main(clients: int = 16, rounds: int = 200, local_steps: int = 10, batch_size: int = 32,
         learning_rate: float = 0.05, seed: int = 0) -> dict:
    """Runs FedAvg and the centralised baseline; returns both test accuracies."""
    (x_train, y_train), (x_test, y_test) = datasets.load_digits()
    x_train, x_test = x_train.reshape(len(x_train), -1), x_test.reshape(len(x_test), -1)
    shards = label_skewed_shards(y_train, clients, seed)
    sizes = np.array([len(s) for s in shards])
    length = int(sizes.max())
    # Pad every shard to one length (repeating its rows); the sampler only draws real rows.
    pad = [np.resize(s, length) for s in shards]
    xs, ys = jnp.asarray(x_train[np.stack(pad)]), jnp.asarray(y_train[np.stack(pad)])

    model = build()
    tx = optax.sgd(learning_rate, momentum=0.9)
    params, _ = model.init(jax.random.key(seed), FEATURES)
    fed_round = make_round(model, tx, local_steps, batch_size)
    keys = jax.random.split(jax.random.key(seed + 1), rounds)
    t0 = time.perf_counter()
    for r in range(rounds):
        client_params = fed_round(params, xs, ys, jnp.asarray(sizes), jax.random.split(keys[r], clients))
        params = weighted_average(client_params, jnp.asarray(sizes, jnp.float32))
    jax.block_until_ready(params)
    fed_seconds = time.perf_counter() - t0
    fed_acc = accuracy(model, params, x_test, y_test)

    # Centralised: one "client" holding all the rows, the same optimizer, one client's budget.
    central = make_round(model, tx, rounds * local_steps, batch_size)
    init, _ = model.init(jax.random.key(seed), FEATURES)
    central_params = central(init, jnp.asarray(x_train)[None], jnp.asarray(y_train)[None],
                             jnp.asarray([len(x_train)]), jax.random.split(jax.random.key(seed + 2), 1))
    central_acc = accuracy(model, jax.tree.map(lambda a: a[0], central_params), x_test, y_test)

    main_share = np.mean([np.mean(np.isin(y_train[s], np.argsort(np.bincount(y_train[s], minlength=10))[-3:]))
                          for s in shards])
    print(f"{clients} clients, shard sizes {sizes.min()}-{sizes.max()}, "
          f"{main_share:.0%} of a shard from its top 3 classes")
    print(f"FedAvg: {rounds} rounds x {local_steps} local steps in {fed_seconds:.1f} s -> test accuracy {fed_acc:.4f}")
    print(f"centralised: {rounds * local_steps} steps -> test accuracy {central_acc:.4f} "
          f"(gap {central_acc - fed_acc:+.4f})")
    return {"federated_accuracy": fed_acc, "central_accuracy": central_acc, "shard_sizes": sizes,
            "shards": shards, "main_share": float(main_share), "seconds": fed_seconds}


if __name__ == "__main__":
    main()
