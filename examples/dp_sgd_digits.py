"""Differentially private training (DP-SGD) of a small MLP on the 8x8 digits.

Every step clips each example's gradient to L2 norm ``l2_norm_clip``, adds Gaussian noise
of std ``noise_multiplier * l2_norm_clip`` to their sum and averages; ``fit`` then reports
the ``(epsilon, delta)`` spent (RDP accounting, ``pip install "kerax[privacy]"``). A
non-private run of the same model is trained alongside for comparison.

Run: python examples/dp_sgd_digits.py   (about 20 s on 2 CPU cores)
"""

from __future__ import annotations

import time

import optax

import kerax as kx
from kerax import layers


def build() -> kx.Sequential:
    """A small MLP; no BatchNormalization (DP-SGD refuses layers that mix examples)."""
    return kx.Sequential([
        kx.Input(shape=(8, 8, 1)),
        layers.Flatten(),
        layers.Dense(64, activation="tanh"),
        layers.Dense(10),
    ], name="digits_mlp")


def _train(dp, x, y, x_test, y_test, epochs, batch_size, learning_rate, seed, verbose):
    model = build()
    loss = kx.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=optax.sgd(learning_rate, momentum=0.9), loss=loss, metrics=["accuracy"], dp=dp)
    history = model.fit(x, y, batch_size=batch_size, epochs=epochs, seed=seed, verbose=verbose)
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    return float(accuracy), history


def main(epochs: int = 15, batch_size: int = 64, l2_norm_clip: float = 1.0, noise_multiplier: float = 1.1,
         learning_rate: float = 0.1, delta: float = 1e-4, seed: int = 0, verbose: str | int = 0) -> dict:
    start = time.perf_counter()
    (x_train, y_train), (x_test, y_test) = kx.datasets.load_digits()
    # delta below 1 / n (n = 1437 training digits): the usual rule for a meaningful guarantee.
    dp = kx.privacy.DPSGD(l2_norm_clip=l2_norm_clip, noise_multiplier=noise_multiplier, delta=delta)
    dp_acc, history = _train(dp, x_train, y_train, x_test, y_test, epochs, batch_size, learning_rate, seed, verbose)
    plain_acc, _ = _train(None, x_train, y_train, x_test, y_test, epochs, batch_size, learning_rate, seed, 0)
    spent = history.privacy
    # The same number from the closed-form settings, without a model.
    planned = dp.epsilon(len(x_train), batch_size, epochs)
    seconds = time.perf_counter() - start
    print(f"DP-SGD test accuracy {dp_acc:.4f}   non-private {plain_acc:.4f}")
    print(f"{spent}   (planned epsilon {planned:.4g})   seconds: {seconds:.1f}")
    return {"dp_accuracy": dp_acc, "plain_accuracy": plain_acc, "epsilon": spent.epsilon,
            "delta": spent.delta, "steps": spent.steps, "planned_epsilon": planned, "seconds": seconds}


if __name__ == "__main__":
    main()
