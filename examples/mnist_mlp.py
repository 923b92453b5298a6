"""The Keras MNIST MLP example: two Dense(512) layers with dropout, trained with RMSprop.

``kx.datasets.mnist.load_data(path)`` returns what ``keras.datasets.mnist.load_data()`` does:
uint8 images ``(60000, 28, 28)`` and labels. The files come from ``path`` (a directory of
the four IDX files, or ``mnist.npz``), else the cache ``~/.kerax/datasets/mnist``, else a
download. With no files and no network, this prints where to put them and exits with 2.

Run: python examples/mnist_mlp.py [PATH]   (about 45 s on 2 CPU cores: 20 epochs of ~2 s,
as in Keras's original, which reaches ~98.4% test accuracy)
"""

from __future__ import annotations

import os
import sys

import kerax as kx
from kerax import layers

NUM_CLASSES = 10


def build() -> kx.Sequential:
    return kx.Sequential([
        layers.Dense(512, activation="relu", input_shape=(784,)),
        layers.Dropout(0.2),
        layers.Dense(512, activation="relu"),
        layers.Dropout(0.2),
        layers.Dense(NUM_CLASSES, activation="softmax"),
    ])


def main(path: str | os.PathLike | None = None, epochs: int = 20, limit: int | None = None,
         batch_size: int = 128, verbose: str | int = "auto") -> dict:
    """Trains on MNIST; ``limit`` keeps only the first ``limit`` training images."""
    try:
        (x_train, y_train), (x_test, y_test) = kx.datasets.mnist.load_data(path)
    except kx.errors.DatasetNotFoundError as e:
        # The loader's message already says which files are missing and where they go.
        print(e, file=sys.stderr)
        raise SystemExit(2) from None
    if limit is not None:
        x_train, y_train = x_train[:limit], y_train[:limit]

    x_train = x_train.reshape(len(x_train), 784).astype("float32") / 255
    x_test = x_test.reshape(len(x_test), 784).astype("float32") / 255
    print(f"{len(x_train)} train samples, {len(x_test)} test samples")
    y_train = kx.utils.to_categorical(y_train, NUM_CLASSES)
    y_test = kx.utils.to_categorical(y_test, NUM_CLASSES)

    kx.utils.set_random_seed(0)
    model = build()
    model.summary()
    model.compile(loss="categorical_crossentropy", optimizer=kx.optimizers.RMSprop(),
                  metrics=["accuracy"])
    history = model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs,
                        verbose=verbose, validation_data=(x_test, y_test))
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(f"Test loss: {loss:.4f}\nTest accuracy: {accuracy:.4f}")
    return {"history": history.history, "test_loss": loss, "test_accuracy": accuracy,
            "n_train": len(x_train)}


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
