"""A Functional model with two inputs, two outputs and a shared layer, as in Keras.

Inputs: a small grey image (8x8) with one bright blob, and a metadata vector.
Outputs: ``label``, which quadrant holds the blob (4 classes), and ``value``, a number
that depends on the metadata and on the blob's brightness, so each head needs both inputs.
One ``Dense`` layer is *shared*: the same object is called on both branches, so it has one
set of weights, used twice (identity decides sharing, not equality).

Losses, loss weights and metrics are dicts keyed by output name, as in Keras; inputs and
targets are given to ``fit`` as dicts keyed by ``Input`` / output names.

Run: python examples/functional_multi_io.py   (about 7 s)
"""

from __future__ import annotations

import numpy as np

import kerax as kx
from kerax import layers

META_DIM = 4
META_WEIGHTS = np.array([1.0, -0.5, 0.25, 0.75], np.float32)


def synthetic(n: int, seed: int = 0) -> tuple[dict, dict]:
    """Images with one bright 2x2 blob in a random quadrant, metadata, and both targets."""
    rng = np.random.default_rng(seed)
    quadrant = rng.integers(0, 4, n)
    brightness = rng.uniform(0.5, 1.5, n).astype(np.float32)
    image = rng.normal(scale=0.2, size=(n, 8, 8, 1)).astype(np.float32)
    rows = 4 * (quadrant // 2) + rng.integers(0, 3, n)  # anywhere inside the quadrant
    cols = 4 * (quadrant % 2) + rng.integers(0, 3, n)
    for i in range(n):
        image[i, rows[i]:rows[i] + 2, cols[i]:cols[i] + 2, 0] += brightness[i]
    meta = rng.normal(size=(n, META_DIM)).astype(np.float32)
    value = meta @ META_WEIGHTS + 2.0 * brightness
    return ({"image": image, "meta": meta},
            {"label": quadrant.astype(np.int32), "value": value[:, None].astype(np.float32)})


def build(width: int = 32) -> kx.Model:
    image = kx.Input(shape=(8, 8, 1), name="image")
    meta = kx.Input(shape=(META_DIM,), name="meta")

    # Each branch first maps its input to `width` features; then one shared layer refines
    # both. Calling the same object twice is what makes it shared.
    shared = layers.Dense(width, activation="relu", name="shared")
    image_features = shared(layers.Dense(width, activation="relu")(layers.Flatten()(image)))
    meta_features = shared(layers.Dense(width, activation="relu")(meta))

    merged = layers.concatenate([image_features, meta_features])
    hidden = layers.Dense(width, activation="relu")(merged)
    label = layers.Dense(4, activation="softmax", name="label")(hidden)
    value = layers.Dense(1, name="value")(hidden)
    return kx.Model(inputs=[image, meta], outputs=[label, value], name="multi_io")


def main(n_train: int = 4000, n_test: int = 1000, epochs: int = 10, width: int = 32,
         verbose: str | int = "auto") -> dict:
    kx.utils.set_random_seed(0)
    x_train, y_train = synthetic(n_train, seed=1)
    x_test, y_test = synthetic(n_test, seed=2)

    model = build(width)
    model.summary()
    model.compile(
        optimizer=kx.optimizers.Adam(3e-3),
        loss={"label": "sparse_categorical_crossentropy", "value": "mse"},
        # The total that is minimised is 1.0 * label_loss + 0.5 * value_loss.
        loss_weights={"label": 1.0, "value": 0.5},
        metrics={"label": ["accuracy"], "value": ["mae"]},
    )
    history = model.fit(x_train, y_train, batch_size=64, epochs=epochs, validation_split=0.1,
                        verbose=verbose)
    results = model.evaluate(x_test, y_test, verbose=0, return_dict=True)
    for k, v in results.items():
        print(f"test {k}: {v:.4f}")
    return {"history": history.history, "test": results, "model": model,
            "value_variance": float(np.var(y_test["value"]))}


if __name__ == "__main__":
    main()
