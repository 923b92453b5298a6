"""Post-training int8 quantization of the digits CNN: about 4x smaller, same accuracy.

Trains the small CNN of ``kerax train`` (``kerax/configs/digits_cnn.yaml``) on the real 8x8
digits briefly, quantizes it with ``kx.quantize`` (int8 kernels, one float32 scale per output
channel), saves both models without optimizer state and compares the file sizes and the
held-out accuracies.

Run: python examples/quantize_digits.py   (about 15 s on 2 CPU cores)
"""

from __future__ import annotations

import os
import tempfile
import time

import kerax as kx
from kerax.experiments import runner


def build() -> kx.Model:
    """The digits CNN, built from the shipped ``kerax/configs/digits_cnn.yaml``."""
    config = runner.read_config("digits_cnn")
    return runner.build_model(config["model"], {"num_classes": 10})


def main(epochs: int = 8, batch_size: int = 32, seed: int = 0, verbose: str | int = 0) -> dict:
    start = time.perf_counter()
    kx.utils.set_random_seed(seed)
    (x_train, y_train), (x_test, y_test) = kx.datasets.load_digits()
    model = build()
    model.compile(optimizer=kx.optimizers.Adam(learning_rate=0.002),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, verbose=verbose)

    quantized = kx.quantize(model, verbose=True)  # a new model; `model` is unchanged
    quantized.summary()
    _, float_acc = model.evaluate(x_test, y_test, verbose=0)
    _, int8_acc = quantized.evaluate(x_test, y_test, verbose=0)  # compiled as `model` was

    with tempfile.TemporaryDirectory() as tmp:
        sizes = {}
        for tag, m in (("float32", model), ("int8", quantized)):
            path = os.path.join(tmp, f"digits-{tag}.kerax")
            m.save(path, include_optimizer=False)
            sizes[tag] = os.path.getsize(path)
        reloaded = kx.load_model(os.path.join(tmp, "digits-int8.kerax"))
        # Saved without optimizer (so uncompiled): score the reloaded model's predictions.
        reloaded_acc = float((reloaded.predict(x_test).argmax(-1) == y_test).mean())

    ratio = sizes["float32"] / sizes["int8"]
    seconds = time.perf_counter() - start
    print(f"float32 file: {sizes['float32']:,} bytes   test accuracy {float_acc:.4f}")
    print(f"int8 file:    {sizes['int8']:,} bytes   test accuracy {int8_acc:.4f} "
          f"(reloaded: {reloaded_acc:.4f})")
    print(f"size ratio: {ratio:.2f}x   accuracy change: {int8_acc - float_acc:+.4f}   "
          f"seconds: {seconds:.1f}")
    return {"float_bytes": sizes["float32"], "int8_bytes": sizes["int8"], "ratio": ratio,
            "float_accuracy": float(float_acc), "int8_accuracy": float(int8_acc),
            "reloaded_accuracy": float(reloaded_acc), "seconds": seconds}


if __name__ == "__main__":
    main()
