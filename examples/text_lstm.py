"""Sentiment-style text classification with an Embedding + LSTM, on synthetic token data.

Sequences of word ids (0 = padding) whose label depends on which of two word groups
dominates; padding is masked (``Embedding(mask_zero=True)``) so the LSTM skips it.

Run: python examples/text_lstm.py   (a real text corpus comes with kx.datasets)
"""

from __future__ import annotations

import numpy as np

import kerax as kx
from kerax import layers

VOCAB, MAXLEN = 200, 24


def synthetic_reviews(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Ids 1-20 are "positive" words, 21-40 "negative", the rest neutral; padded at the end."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, MAXLEN), np.int32)
    y = rng.integers(0, 2, n).astype(np.int32)
    for i in range(n):
        length = rng.integers(8, MAXLEN + 1)
        words = rng.integers(41, VOCAB, length)
        k = rng.integers(2, 5)
        lo = 1 if y[i] else 21
        words[rng.choice(length, k, replace=False)] = rng.integers(lo, lo + 20, k)
        x[i, :length] = words
    return x, y


def build() -> kx.Sequential:
    return kx.Sequential([
        kx.Input(shape=(MAXLEN,), dtype="int32"),
        layers.Embedding(VOCAB, 32, mask_zero=True),
        layers.Bidirectional(layers.LSTM(32)),
        layers.Dense(1, activation="sigmoid"),
    ])


def main(n_train: int = 2000, n_test: int = 500, epochs: int = 4, verbose: str | int = "auto") -> dict:
    kx.utils.set_random_seed(0)
    x_train, y_train = synthetic_reviews(n_train, seed=1)
    x_test, y_test = synthetic_reviews(n_test, seed=2)
    model = build()
    model.summary()
    model.compile(optimizer=kx.optimizers.Adam(3e-3), loss="binary_crossentropy", metrics=["accuracy"])
    history = model.fit(x_train, y_train, batch_size=64, epochs=epochs, validation_split=0.1, verbose=verbose)
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(f"test_accuracy: {accuracy:.4f}")
    return {"history": history.history, "test_accuracy": accuracy}


if __name__ == "__main__":
    main()
