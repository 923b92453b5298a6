"""Mixed precision: the digits CNN in float32 and in ``mixed_bfloat16``, side by side.

``dtype_policy="mixed_bfloat16"`` on the model keeps the weights in float32 and runs every
layer in bfloat16 (softmax and the loss in float32). The policy is part of the model's
config: no global switch. On CPU bfloat16 is no faster; on a GPU or TPU it halves memory
traffic and uses the matrix units (see bench/mixed_precision_gpu.py). Both runs should end
within a point of accuracy of each other.

For float16 use ``"mixed_float16"``: ``compile`` then wraps the optimizer in
``kx.optimizers.LossScaleOptimizer`` (dynamic loss scaling), as Keras does.

Run: python examples/mixed_precision.py   (about 20 s on 2 CPU cores)
"""

from __future__ import annotations

import time

import jax
import numpy as np

import kerax as kx
from kerax import layers


def build(dtype_policy: str | None) -> kx.Sequential:
    return kx.Sequential([
        kx.Input(shape=(8, 8, 1)),
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dense(64, activation="relu"),
        layers.Dense(10, activation="softmax"),   # computed in float32 under the policy
    ], dtype_policy=dtype_policy)


def train(dtype_policy: str | None, epochs: int, batch_size: int, seed: int) -> dict:
    (x_train, y_train), (x_test, y_test) = kx.datasets.load_digits()
    model = build(dtype_policy)
    model.compile(optimizer=kx.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, verbose=0, seed=seed)
    seconds = time.perf_counter() - start
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    probs = model.predict(x_test[:4])
    return {"test_loss": loss, "test_accuracy": accuracy, "seconds": seconds,
            "param_dtypes": sorted({str(a.dtype) for a in jax.tree.leaves(model.params)}),
            "output_dtype": str(probs.dtype)}


def main(epochs: int = 8, batch_size: int = 64, seed: int = 0) -> dict:
    results = {}
    for policy in ("float32", "mixed_bfloat16"):
        r = train(None if policy == "float32" else policy, epochs, batch_size, seed)
        results[policy] = r
        print(f"{policy:>15}: test accuracy {r['test_accuracy']:.4f}, loss {r['test_loss']:.4f}, "
              f"weights {r['param_dtypes']}, outputs {r['output_dtype']}, fit {r['seconds']:.1f} s")
    gap = results["mixed_bfloat16"]["test_accuracy"] - results["float32"]["test_accuracy"]
    print(f"accuracy gap (mixed - float32): {gap:+.4f}")
    results["gap"] = float(np.round(gap, 6))
    return results


if __name__ == "__main__":
    main()
