"""A user-defined layer: write it, register it, train it, save and load the model.

A kerax layer is a frozen dataclass with two pure functions. Where Keras has ``__init__``
plus ``build`` plus ``call`` and ``get_config``, kerax has:

* annotated class attributes: the hyperparameters, which are also the layer's config
  (``get_config`` / ``from_config`` come for free);
* ``init(rng, x) -> (params, state)``: creates the weights from ``x``'s shape only;
* ``apply(params, state, x, *, rng, training) -> (y, state)``: the forward pass, pure.

``@kx.register_layer`` lets ``kx.load_model`` find the class by name. Loading never imports
anything named in a file, so a class that is not registered must be handed over with
``custom_objects={"Name": Class}``, as in Keras.

Run: python examples/custom_layer.py   (about 4 s)
"""

from __future__ import annotations

import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

import kerax as kx
from kerax import layers


@kx.register_layer
class GaussianRBF(kx.Layer):
    """Radial basis features: ``exp(-gamma * |x - c_j|^2)`` for ``units`` learned centres.

    Weights: ``centers (units, in)``.

    Input shape: ``(batch, ..., in)``. Output shape: ``(batch, ..., units)``.
    """

    units: int
    gamma: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()  # keeps the checks on name, input_shape and dtype
        # Validate hyperparameters here, not in apply: the error then points at the
        # line that built the layer.
        if not (isinstance(self.units, int) and self.units > 0):
            raise kx.errors.ConfigError(
                f"GaussianRBF expected units to be a positive int; received units={self.units!r}")
        if not self.gamma > 0:
            raise kx.errors.ConfigError(
                f"GaussianRBF expected gamma > 0; received gamma={self.gamma!r}")

    def init(self, rng, x):
        # Only x.shape is read: init also runs on jax.ShapeDtypeStruct and under jit.
        centers = jax.random.normal(rng, (self.units, x.shape[-1]), jnp.dtype(self.param_dtype))
        return {"centers": centers}, {}  # no non-trainable state

    def apply(self, params, state, x, *, rng=None, training=False):
        c = params["centers"]
        sq_dist = jnp.sum((x[..., None, :] - c) ** 2, axis=-1)  # (..., units)
        return jnp.exp(-self.gamma * sq_dist), state


def rings(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two concentric rings: class 0 inside, class 1 outside. No line separates them."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    radius = np.where(y == 0, 0.6, 1.5) + rng.normal(scale=0.15, size=n)
    angle = rng.uniform(0, 2 * np.pi, n)
    x = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    return x.astype(np.float32), y.astype(np.int32)


def main(n: int = 1000, epochs: int = 30, verbose: str | int = "auto") -> dict:
    kx.utils.set_random_seed(0)
    x, y = rings(n, seed=1)
    x_test, y_test = rings(500, seed=2)

    model = kx.Sequential([
        kx.Input(shape=(2,)),
        GaussianRBF(16, gamma=2.0),
        layers.Dense(2, activation="softmax"),
    ])
    model.summary()
    model.compile(optimizer=kx.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    history = model.fit(x, y, batch_size=64, epochs=epochs, verbose=verbose)
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(f"test_accuracy: {accuracy:.4f}")

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "rbf.kerax")
        model.save(path)
        # Registered: found by its name in the file.
        loaded = kx.load_model(path)
        # Keras's way, needed for a class that is not registered; works for both.
        loaded_custom = kx.load_model(path, custom_objects={"GaussianRBF": GaussianRBF})

    original = model.predict(x_test)
    reloaded = loaded.predict(x_test)
    print("loaded model predicts the same:", bool(np.array_equal(original, reloaded)))
    print("its first layer's config:", loaded.layers[0].get_config())
    return {"history": history.history, "test_accuracy": accuracy, "model": model,
            "loaded": loaded, "loaded_custom": loaded_custom, "x_test": x_test}


if __name__ == "__main__":
    main()
