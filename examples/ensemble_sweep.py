"""A learning-rate sweep and a deep ensemble in one ``fit``: ``fit(ensemble=N)``.

``model.fit(..., ensemble=4, ensemble_hyperparams={"learning_rate": [...]})`` trains four
copies of the model, member i with the seed ``seed + i`` and its own learning rate, as one
compiled program. The History holds every member's curves (``loss_member_<i>``,
``val_loss_member_<i>``) and their means; ``history.best_member("val_loss")`` is a plain
model with the best member's weights, which saves and loads like any other. Then a
second ensemble of 4 members at the chosen rate shows the deep-ensemble gain:
``predict(x)`` averages the members.

For the pure level (``jax.vmap`` of a ``make_train_step`` step) see
``examples/ensemble_vmap.py`` and ``kx.vmap_train_step``.

Data: the 8x8 handwritten digits (``kx.datasets.load_digits()``), 1,437 train / 360 test.

Run: python examples/ensemble_sweep.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

import kerax as kx
from kerax import datasets, layers

RATES = [1e-4, 1e-3, 3e-3, 1.0]


def build() -> kx.Sequential:
    model = kx.Sequential([
        kx.Input((8, 8, 1)),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.Dropout(0.3),
        layers.Dense(10),
    ])
    model.compile(optimizer=kx.optimizers.Adam(1e-3), metrics=["accuracy"],
                  loss=kx.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def main(epochs: int = 30, rates: list[float] = RATES, members: int = 4, seed: int = 0) -> dict:
    """Sweeps ``rates``, picks the best by validation loss, then trains an ensemble at it."""
    (x_train, y_train), (x_test, y_test) = datasets.load_digits()
    fit = dict(batch_size=32, epochs=epochs, validation_split=0.2, verbose=0, seed=seed)

    sweep = build()
    t0 = time.perf_counter()
    history = sweep.fit(x_train, y_train, ensemble=len(rates),
                        ensemble_hyperparams={"learning_rate": rates}, **fit)
    sweep_seconds = time.perf_counter() - t0
    val_loss = [history.members[i]["val_loss"][-1] for i in range(len(rates))]
    best_index = history.best_member_index("val_loss")
    best = history.best_member("val_loss")  # a plain model
    for rate, loss in zip(rates, val_loss):
        print(f"learning_rate={rate:g}: val_loss {loss:.4f}{'  <- best' if rate == rates[best_index] else ''}")
    with tempfile.TemporaryDirectory() as tmp:
        best.save(Path(tmp) / "best.kerax")
        reloaded = kx.load_model(Path(tmp) / "best.kerax")
    best_acc = float(np.mean(reloaded.predict(x_test).argmax(-1) == y_test))

    ensemble = build()
    ensemble.compile(optimizer=kx.optimizers.Adam(rates[best_index]), metrics=["accuracy"],
                     loss=kx.losses.SparseCategoricalCrossentropy(from_logits=True))
    ensemble.fit(x_train, y_train, ensemble=members, **fit)
    logs = ensemble.evaluate(x_test, y_test, verbose=0, return_dict=True)
    member_acc = [logs[f"accuracy_member_{i}"] for i in range(members)]
    probs = np.exp(ensemble.predict(x_test, ensemble="all"))
    probs /= probs.sum(-1, keepdims=True)
    ensemble_acc = float(np.mean(probs.mean(0).argmax(-1) == y_test))
    print(f"sweep: {len(rates)} members x {epochs} epochs in {sweep_seconds:.1f} s; best test accuracy {best_acc:.4f}")
    print(f"ensemble of {members} at learning_rate={rates[best_index]:g}: members {np.round(member_acc, 4)}, "
          f"mean of their probabilities {ensemble_acc:.4f}")
    return {"val_loss": val_loss, "best_index": best_index, "best_accuracy": best_acc,
            "member_accuracy": member_acc, "ensemble_accuracy": ensemble_acc, "best": best}


if __name__ == "__main__":
    main()
