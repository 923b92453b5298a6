"""A small CNN on real handwritten digits: the 8x8 scans that scikit-learn ships.

``kx.datasets.load_digits()`` reads them from the scikit-learn install, so this runs offline:
1437 training and 360 test images, float32 ``(n, 8, 8, 1)`` in [0, 1], int32 labels.
The model is the Keras MNIST convnet, shrunk to the 8x8 input; it reaches about 98% test
accuracy in 20 epochs.

Run: python examples/digits_cnn.py   (about 10 s on 2 CPU cores, half of it compiling)
"""

from __future__ import annotations

import time

import kerax as kx
from kerax import layers


def build() -> kx.Sequential:
    return kx.Sequential([
        kx.Input(shape=(8, 8, 1)),
        # padding="same": an 8x8 image has no pixels to spare at the borders.
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.Conv2D(64, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Dropout(0.25),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.Dropout(0.5),
        layers.Dense(10, activation="softmax"),
    ])


def main(epochs: int = 20, batch_size: int = 32, seed: int = 0,
         verbose: str | int = "auto") -> dict:
    start = time.perf_counter()
    kx.utils.set_random_seed(seed)  # initial weights, shuffling and dropout
    (x_train, y_train), (x_test, y_test) = kx.datasets.load_digits()
    model = build()
    model.summary()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    # As Keras's MNIST convnet, watch the test set while training (nothing is tuned on it).
    history = model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs,
                        validation_data=(x_test, y_test), verbose=verbose)
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    seconds = time.perf_counter() - start
    print(f"test_loss: {loss:.4f}\ntest_accuracy: {accuracy:.4f}\nseconds: {seconds:.1f}")
    return {"history": history.history, "test_loss": loss, "test_accuracy": accuracy,
            "seconds": seconds}


if __name__ == "__main__":
    main()
