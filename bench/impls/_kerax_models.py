"""The workloads as kerax models, holding the neutral initial weights."""

from __future__ import annotations

import time

import kerax as kx
from kerax import layers

from bench import workloads as wl
from bench.impls._common import EpochClock, Unsupported, fit_result

def loss() -> kx.losses.SparseCategoricalCrossentropy:
    return kx.losses.SparseCategoricalCrossentropy(from_logits=True)


def _block(w: wl.Workload, h):
    """One residual block of ``w`` on the symbolic tensor ``h``."""
    width = w.sizes["width"]
    if w.arch == "resmlp":
        return layers.Add()([h, layers.Dense(width, activation="relu")(h)])
    z = layers.Dense(w.sizes["hidden"], activation="gelu")(layers.LayerNormalization()(h))
    return layers.Add()([h, layers.Dense(width)(z)])


def _residual_blocks(w: wl.Workload, h, remat: bool):
    if not w.scanned:
        for _ in range(w.sizes["blocks"]):
            h = _block(w, h)
        return h
    # The scanned variant: one block, repeated by lax.scan inside a Repeat layer.
    x = kx.Input((w.sizes["width"],))
    return layers.Repeat(kx.Model(x, _block(w, x)), w.sizes["blocks"], remat=remat)(h)


def build(w: wl.Workload, weights: list[dict], remat: bool = False) -> kx.Model:
    """The kerax model of ``w``, built, holding ``weights`` (the neutral layout);
    ``remat``: the scanned workloads' ``Repeat(remat=...)``."""
    c = w.classes
    if w.arch == "mlp":
        model = kx.Sequential([kx.Input(w.input_shape)]
                              + [layers.Dense(u, activation="relu") for u in w.sizes["hidden"]] + [layers.Dense(c)])
    elif w.arch == "cnn":
        f1, f2 = w.sizes["filters"]
        model = kx.Sequential([kx.Input(w.input_shape), layers.Conv2D(f1, 3, activation="relu"),
                               layers.Conv2D(f2, 3, activation="relu"), layers.MaxPooling2D(2), layers.Flatten(),
                               layers.Dense(w.sizes["dense"], activation="relu"), layers.Dense(c)])
    elif w.arch == "lstm":
        model = kx.Sequential([kx.Input(w.input_shape), layers.LSTM(w.sizes["units"]), layers.Dense(c)])
    elif w.arch in ("resmlp", "prenorm"):
        x = kx.Input(w.input_shape)
        h = _residual_blocks(w, x, remat)
        model = kx.Model(x, layers.Dense(c)(h if w.arch == "resmlp" else layers.LayerNormalization()(h)))
    else:
        raise ValueError(f"unknown architecture {w.arch!r}")
    model.build(seed=0)
    # A Repeat's get_weights / set_weights list its blocks one by one (repeat/block_i/...), so
    # the scanned model takes the neutral per-layer list as the unrolled one does.
    flat = wl.flat_weights(weights)
    held = [a.shape for a in model.get_weights()]
    if held != [a.shape for a in flat]:
        raise Unsupported(f"kerax weight shapes {held} differ from the neutral ones {[a.shape for a in flat]}")
    model.set_weights(flat)
    return model


class EpochTimer(EpochClock, kx.callbacks.Callback):
    """Wall time of every epoch, as a kx callback."""


def fit(w: wl.Workload, weights: list[dict], data: tuple, steps: int, k: int) -> dict:
    """``model.fit`` on NumPy arrays as users call it; ``k`` = steps_per_execution."""
    started = time.perf_counter()
    model = build(w, weights)
    model.compile(optimizer=kx.optimizers.Adam(learning_rate=wl.LEARNING_RATE, beta_1=wl.BETA_1, beta_2=wl.BETA_2,
                                               epsilon=wl.EPSILON),
                  loss=loss(), steps_per_execution=k)
    setup = time.perf_counter() - started
    timer = EpochTimer()
    epochs = 1 + max(1, steps // w.steps)
    history = model.fit(*data, batch_size=w.batch, epochs=epochs, shuffle=False, verbose=0, seed=0,
                        callbacks=[timer])
    return fit_result(setup, timer.times, history.history["loss"], w.steps, k)
