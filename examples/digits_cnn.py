"""A small CNN on 8x8 digit-like images (synthetic strokes: offline, no downloads).

Run: python examples/digits_cnn.py   (the real scikit-learn digits come with kx.datasets)
"""

from __future__ import annotations

import numpy as np

import kerax as kx
from kerax import layers


def synthetic_digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Ten stroke templates on an 8x8 grid, shifted by a pixel and noised."""
    templates = np.zeros((10, 8, 8), np.float32)
    r = np.random.default_rng(99)
    for d in range(10):  # each class: a few random strokes, fixed across calls
        for _ in range(3):
            if r.random() < 0.5:
                templates[d, r.integers(1, 7), r.integers(1, 3):r.integers(5, 8)] = 1
            else:
                templates[d, r.integers(1, 3):r.integers(5, 8), r.integers(1, 7)] = 1
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = np.stack([np.roll(templates[c], tuple(rng.integers(-1, 2, 2)), axis=(0, 1)) for c in y])
    x = x + rng.normal(scale=0.3, size=x.shape)
    return x[..., None].astype(np.float32), y.astype(np.int32)


def build() -> kx.Sequential:
    return kx.Sequential([
        kx.Input(shape=(8, 8, 1)),
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.BatchNormalization(momentum=0.9),  # short runs: let the moving statistics catch up
        layers.Conv2D(64, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Dropout(0.25),
        layers.Flatten(),
        layers.Dense(64, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ])


def main(n_train: int = 3000, n_test: int = 600, epochs: int = 5, verbose: str | int = "auto") -> dict:
    kx.utils.set_random_seed(0)  # initial weights (built by summary()), shuffling, dropout
    x_train, y_train = synthetic_digits(n_train, seed=1)
    x_test, y_test = synthetic_digits(n_test, seed=2)
    model = build()
    model.summary()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x_train, y_train, batch_size=64, epochs=epochs, validation_split=0.1,
                        verbose=verbose)
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(f"test_accuracy: {accuracy:.4f}")
    return {"history": history.history, "test_accuracy": accuracy}


if __name__ == "__main__":
    main()
