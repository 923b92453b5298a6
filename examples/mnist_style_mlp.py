"""The Keras MNIST MLP, on synthetic MNIST-shaped data (28x28 grey images, 10 classes).

Run: python examples/mnist_style_mlp.py  (real MNIST comes with kx.datasets later)
"""

from __future__ import annotations

import numpy as np

import kerax as kx
from kerax import layers


def synthetic_mnist(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Ten fixed random prototype images plus heavy noise: learnable, MNIST-shaped, offline."""
    prototypes = np.random.default_rng(1234).uniform(0, 1, size=(10, 28, 28)).astype(np.float32)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = prototypes[y] + rng.normal(scale=1.0, size=(n, 28, 28)).astype(np.float32)
    return np.clip(x, 0, 1).astype(np.float32), y.astype(np.int32)


def main(n_train: int = 6000, n_test: int = 1000, epochs: int = 3, verbose: str | int = "auto") -> dict:
    kx.utils.set_random_seed(0)
    x_train, y_train = synthetic_mnist(n_train, seed=1)
    x_test, y_test = synthetic_mnist(n_test, seed=2)
    model = kx.Sequential([
        kx.Input(shape=(28, 28)),
        layers.Flatten(),
        layers.Dense(512, activation="relu"),
        layers.Dropout(0.2),
        layers.Dense(512, activation="relu"),
        layers.Dropout(0.2),
        layers.Dense(10, activation="softmax"),
    ])
    model.summary()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x_train, y_train, batch_size=128, epochs=epochs, validation_split=0.1, verbose=verbose)
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(f"test_loss: {loss:.4f}\ntest_accuracy: {accuracy:.4f}")
    return {"history": history.history, "test_loss": loss, "test_accuracy": accuracy}


if __name__ == "__main__":
    main()
