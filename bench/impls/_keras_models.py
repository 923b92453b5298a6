"""The workloads as Keras 3 models (JAX backend), holding the neutral initial weights."""

from __future__ import annotations

import os
import time

import numpy as np

from bench import workloads as wl
from bench.impls._common import EpochClock, fit_result, require_peer_support

os.environ.setdefault("KERAS_BACKEND", "jax")  # read once, when keras is first imported
import keras  # noqa: E402

if keras.backend.backend() != "jax":
    raise ImportError(f"keras was imported with the {keras.backend.backend()!r} backend; set KERAS_BACKEND=jax")
from keras import layers  # noqa: E402


def build(w: wl.Workload, weights: list[dict]) -> keras.Model:
    """The Keras model of ``w``, holding ``weights`` (the neutral layout is Keras's)."""
    require_peer_support(w)
    keras.utils.clear_session()
    c = w.classes
    x = inputs = keras.Input(w.input_shape)
    if w.arch == "mlp":
        for u in w.sizes["hidden"]:
            x = layers.Dense(u, activation="relu")(x)
    elif w.arch == "cnn":
        f1, f2 = w.sizes["filters"]
        x = layers.Conv2D(f1, 3, activation="relu")(x)
        x = layers.MaxPooling2D(2)(layers.Conv2D(f2, 3, activation="relu")(x))
        x = layers.Dense(w.sizes["dense"], activation="relu")(layers.Flatten()(x))
    elif w.arch == "lstm":
        x = layers.LSTM(w.sizes["units"])(x)
    elif w.arch == "resmlp":
        for _ in range(w.sizes["blocks"]):
            x = layers.Add()([x, layers.Dense(w.sizes["width"], activation="relu")(x)])
    model = keras.Model(inputs, layers.Dense(c)(x))
    model.set_weights(wl.flat_weights(weights))
    return model


class EpochTimer(EpochClock, keras.callbacks.Callback):
    """Wall time of every epoch, as a keras callback."""


def fit(w: wl.Workload, weights: list[dict], data: tuple[np.ndarray, np.ndarray], steps: int, k: int) -> dict:
    """``model.fit`` on NumPy arrays as Keras users call it; ``k`` = steps_per_execution."""
    started = time.perf_counter()
    model = build(w, weights)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=wl.LEARNING_RATE, beta_1=wl.BETA_1,
                                                  beta_2=wl.BETA_2, epsilon=wl.EPSILON),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), steps_per_execution=k)
    setup = time.perf_counter() - started
    timer = EpochTimer()
    epochs = 1 + max(1, steps // w.steps)
    history = model.fit(*data, batch_size=w.batch, epochs=epochs, shuffle=False, verbose=0, callbacks=[timer])
    return fit_result(setup, timer.times, history.history["loss"], w.steps, k)
