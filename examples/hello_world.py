"""The classic first Keras program, unchanged but for the import: learn y = 2x - 1.

One Dense unit, six points, plain SGD. Only the first line differs from the Keras
original (``import kerax as keras``), which is the point: the shell keeps Keras's names,
argument order and defaults.

Run: python examples/hello_world.py   (a second or two)
"""

from __future__ import annotations

import numpy as np

import kerax as keras


def main(epochs: int = 500) -> dict:
    keras.utils.set_random_seed(0)  # the same initial weight on every run
    model = keras.Sequential([keras.layers.Dense(units=1, input_shape=[1])])
    model.compile(optimizer="sgd", loss="mean_squared_error")

    xs = np.array([-1.0, 0.0, 1.0, 2.0, 3.0, 4.0], dtype=float)
    ys = np.array([-3.0, -1.0, 1.0, 3.0, 5.0, 7.0], dtype=float)
    history = model.fit(xs, ys, epochs=epochs, verbose=0)

    prediction = float(model.predict([[10.0]])[0, 0])
    kernel, bias = model.get_weights()
    print(f"predict([[10.0]]) = {prediction:.4f}   (2 * 10 - 1 = 19)")
    print(f"learned: y = {kernel.item():.4f} x + {bias.item():.4f}")
    return {"prediction": prediction, "kernel": kernel.item(), "bias": bias.item(),
            "first_loss": history.history["loss"][0], "final_loss": history.history["loss"][-1]}


if __name__ == "__main__":
    main()
