"""Transfer learning: reuse a trained feature extractor for a new task, frozen, then fine-tuned.

1. Train a base model on digits 0-4 (the real 8x8 digits from ``kx.datasets.load_digits``).
2. Build a new model for digits 5-9 from the *same* ``features`` layer plus a new
   classifier, and copy the trained feature weights into it.
3. Freeze the features and train only the classifier. Keras sets ``layer.trainable = False``;
   in kerax, params are a plain dict, so freezing is the optimizer's business:
   ``optax.multi_transform`` sends the features' gradients to ``optax.set_to_zero()``.
   The frozen weights stay bitwise the same, and the optimizer keeps no state for them.
4. Optionally unfreeze everything and fine-tune with a low learning rate.

This follows Keras's MNIST transfer example: the convolutions are frozen, the dense
classifier is new. Digits are easy enough that a model trained from scratch does as well
here; what carries over to a big pretrained backbone is the mechanics. (``summary()`` still
counts the backbone as trainable: what is frozen is decided by the optimizer given to
``compile``, not by the model.)

Run: python examples/transfer_learning.py   (about 12 s on 2 CPU cores)
"""

from __future__ import annotations

import jax
import numpy as np
import optax

import kerax as kx
from kerax import layers


def split_digits(n_new: int | None = None) -> dict:
    """Digits 0-4 for the base task; digits 5-9, relabelled 0-4, for the new one (only the
    first ``n_new`` training images of them, when given)."""
    (x_train, y_train), (x_test, y_test) = kx.datasets.load_digits()
    old, new, new_test = y_train < 5, y_train >= 5, y_test >= 5
    few = np.flatnonzero(new)[:n_new]
    return {"base": (x_train[old], y_train[old]),
            "new": (x_train[few], y_train[few] - 5),
            "new_test": (x_test[new_test], y_test[new_test] - 5)}


def freeze(subtree: str, optimizer: optax.GradientTransformation) -> optax.GradientTransformation:
    """``optimizer`` for every top-level params entry except ``subtree``, which never moves."""

    def labels(params: dict) -> dict:
        # One label per leaf, in a tree shaped like params.
        return {name: jax.tree.map(lambda _: "frozen" if name == subtree else "trained", value)
                for name, value in params.items()}

    return optax.multi_transform({"trained": optimizer, "frozen": optax.set_to_zero()}, labels)


def features() -> kx.Sequential:
    """The part that transfers: convolutions that learn strokes, not which digit."""
    return kx.Sequential([
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
    ], name="features")


def classifier() -> kx.Sequential:
    """The part that is replaced: it maps features to this task's classes."""
    return kx.Sequential([
        layers.Dense(64, activation="relu"),
        layers.Dense(5, activation="softmax"),
    ], name="classifier")


def main(base_epochs: int = 10, head_epochs: int = 10, fine_tune_epochs: int = 5,
         n_new: int | None = None, batch_size: int = 32, verbose: str | int = "auto") -> dict:
    kx.utils.set_random_seed(0)
    data = split_digits(n_new)
    x_new_test, y_new_test = data["new_test"]
    loss = "sparse_categorical_crossentropy"

    # 1. The base model, trained on digits 0-4.
    backbone = features()
    base = kx.Sequential([kx.Input(shape=(8, 8, 1)), backbone, classifier()])
    base.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
    base.fit(*data["base"], batch_size=batch_size, epochs=base_epochs, verbose=verbose)

    # 2. The new model reuses the backbone *layer* (a description, no weights) with a fresh
    # classifier; the trained weights are copied from the base model's params.
    model = kx.Sequential([kx.Input(shape=(8, 8, 1)), backbone, classifier()])
    model.params = {**model.params, "features": base.params["features"]}
    model.summary()

    # 3. Train the classifier only.
    model.compile(optimizer=freeze("features", optax.adam(1e-3)), loss=loss, metrics=["accuracy"])
    before = jax.tree.map(np.array, model.params)  # host copies: training donates the buffers
    model.fit(*data["new"], batch_size=batch_size, epochs=head_epochs, verbose=verbose)
    after = jax.tree.map(np.array, model.params)
    _, head_accuracy = model.evaluate(x_new_test, y_new_test, verbose=0)
    print(f"digits 5-9, classifier trained on frozen features: test accuracy {head_accuracy:.4f}")

    # 4. Unfreeze: every weight moves now, slowly, so the features are adapted, not erased.
    fine_tune_accuracy = None
    if fine_tune_epochs:
        model.compile(optimizer=kx.optimizers.Adam(1e-4), loss=loss, metrics=["accuracy"])
        model.fit(*data["new"], batch_size=batch_size, epochs=fine_tune_epochs, verbose=verbose)
        _, fine_tune_accuracy = model.evaluate(x_new_test, y_new_test, verbose=0)
        print(f"after fine-tuning everything at lr=1e-4: test accuracy {fine_tune_accuracy:.4f}")

    return {"params_before": before, "params_after_head": after,
            "head_accuracy": head_accuracy, "fine_tune_accuracy": fine_tune_accuracy}


if __name__ == "__main__":
    main()
