"""The benchmark workloads, their framework-neutral initial weights and synthetic data.

Every implementation trains the same model from the same NumPy weights over the same
batches, so their losses must agree step for step (up to float rounding); the runner checks
that. NumPy only: nothing here imports JAX or a framework.

    W1  MLP 784-512-512-10, batch 128
    W2  CNN conv32(3x3 valid, relu)-conv64(3x3 valid, relu)-maxpool2-flatten-dense128(relu)-dense10
        on 28x28x1, batch 128
    W3  LSTM(128) over (32 timesteps, 16 features) -> Dense 10 on the last output, batch 64
    W4  W1 at batch 8 (dispatch-bound)
    W5  compile time of a 24-block residual MLP (x + Dense(256, relu)(x), then Dense 10), unrolled
    W5s the same with the blocks scanned (a ``Repeat`` layer); implementations that cannot
        express it yet report it as skipped
    W6  compile time of 24 pre-norm residual MLP blocks, the feed-forward half of a
        transformer block (x + Dense(256)(Dense(1024, gelu)(LayerNorm(x))), then LayerNorm
        and Dense 10),
        unrolled; hand-written JAX and kerax only
    W6s the same with the blocks scanned (a ``Repeat`` layer)

Neutral weights: a list with one dict per layer, in order. LayerNormalization ``gamma``,
``beta`` (ones, zeros); Dense ``kernel (in, out)``,
``bias (out,)``; Conv ``kernel (kh, kw, in, out)`` (HWIO), ``bias (out,)``; LSTM ``kernel
(F, 4H)``, ``recurrent_kernel (H, 4H)``, ``bias (4H,)``, gate blocks i, f, c (g), o as in
Keras, forget-gate bias 1 (Keras's ``unit_forget_bias``). Glorot-uniform kernels,
orthogonal recurrent kernel, zero biases; seeded.

    >>> w = get("W1", quick=True)
    >>> [sorted(d) for d in make_weights(w)][0]
    ['bias', 'kernel']
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

# Adam as Keras defines it, for every implementation (optax: eps=1e-7).
LEARNING_RATE, BETA_1, BETA_2, EPSILON = 1e-3, 0.9, 0.999, 1e-7
SPE = 16  # steps per execution of the *_spe16 / *_scan16 implementations (2 with --quick)


@dataclasses.dataclass(frozen=True)
class Workload:
    """One benchmark problem.

    ``arch`` is ``"mlp"``, ``"cnn"``, ``"lstm"``, ``"resmlp"`` or ``"prenorm"``; ``sizes``
    holds its widths. ``scanned`` workloads and the ``prenorm`` blocks are written for kerax
    and hand-written JAX only (``peers_run`` is false).
    A run is one warm-up epoch (its first step includes compilation) and ``epochs`` timed
    epochs of ``steps`` batches each (``steps`` is a multiple of ``spe``, the steps per call
    of the multi-step implementations).
    """

    name: str
    title: str
    arch: str
    batch: int
    input_shape: tuple
    sizes: dict
    steps: int
    epochs: int
    classes: int = 10
    compile_only: bool = False
    scanned: bool = False
    spe: int = SPE

    @property
    def peers_run(self) -> bool:
        """Whether the peer frameworks implement this workload (else they report it skipped)."""
        return not self.scanned and self.arch != "prenorm"

    def with_steps(self, steps: int | None = None, epochs: int | None = None) -> "Workload":
        """A copy with other epoch lengths (``steps`` rounded up to a multiple of ``spe``)."""
        steps = self.steps if steps is None else max(self.spe, -(-int(steps) // self.spe) * self.spe)
        return dataclasses.replace(self, steps=steps, epochs=self.epochs if epochs is None else max(1, int(epochs)))


_RES = {"width": 256, "blocks": 24}
_PRENORM = {"width": 256, "hidden": 1024, "blocks": 24}
WORKLOADS: dict[str, Workload] = {
    w.name: w for w in [
        Workload("W1", "MLP 784-512-512-10, Adam, batch 128", "mlp", 128, (784,),
                 {"hidden": (512, 512)}, steps=32, epochs=5),
        Workload("W2", "CNN conv32-conv64-maxpool-dense128-dense10 on 28x28x1, batch 128", "cnn", 128,
                 (28, 28, 1), {"filters": (32, 64), "dense": 128}, steps=16, epochs=2),
        Workload("W3", "LSTM(128) over 32x16 -> Dense 10, batch 64", "lstm", 64, (32, 16),
                 {"units": 128}, steps=32, epochs=5),
        Workload("W4", "MLP 784-512-512-10, Adam, batch 8 (dispatch-bound)", "mlp", 8, (784,),
                 {"hidden": (512, 512)}, steps=128, epochs=5),
        Workload("W5", "compile time: 24-block residual MLP, width 256, unrolled, batch 128", "resmlp", 128,
                 (256,), _RES, steps=16, epochs=1, compile_only=True),
        Workload("W5s", "compile time: 24-block residual MLP, width 256, scanned (Repeat), batch 128", "resmlp",
                 128, (256,), _RES, steps=16, epochs=1, compile_only=True, scanned=True),
        Workload("W6", "compile time: 24 pre-norm residual MLP blocks (LayerNorm, Dense 1024 gelu, Dense 256), "
                 "unrolled, batch 128", "prenorm", 128, (256,), _PRENORM, steps=16, epochs=1, compile_only=True),
        Workload("W6s", "compile time: 24 pre-norm residual MLP blocks (LayerNorm, Dense 1024 gelu, Dense 256), "
                 "scanned (Repeat), batch 128", "prenorm", 128, (256,), _PRENORM, steps=16, epochs=1,
                 compile_only=True, scanned=True),
    ]
}
DEFAULT = ("W1", "W2", "W3", "W4", "W5")

# --quick: the same architectures at toy sizes and batches (batch / 16), 2 steps per call of the
# multi-step implementations (an unrolled 16-step CNN takes long to compile on CPU), one
# warm-up and one timed epoch of 16 steps.
# Widths of 16 throughout, so that eager set-up ops of equal shapes compile once per process.
_QUICK = {
    "mlp": ((16,), {"hidden": (16, 16)}),
    "cnn": ((8, 8, 1), {"filters": (4, 8), "dense": 16}),
    "lstm": ((5, 3), {"units": 16}),
    "resmlp": ((16,), {"width": 16, "blocks": 3}),
    "prenorm": ((16,), {"width": 16, "hidden": 32, "blocks": 3}),
}


def get(name: str, quick: bool = False) -> Workload:
    """The workload called ``name`` (``"W1"`` ...), at toy size when ``quick``.

    Raises:
        KeyError: for an unknown name (the message lists the known ones).
    """
    if name not in WORKLOADS:
        raise KeyError(f"unknown workload {name!r}; expected one of {sorted(WORKLOADS)}")
    w = WORKLOADS[name]
    if not quick:
        return w
    shape, sizes = _QUICK[w.arch]
    return dataclasses.replace(w, batch=max(2, w.batch // 16), input_shape=shape, sizes=sizes, steps=16,
                               epochs=1, spe=2)


# -- weights -------------------------------------------------------------------------------


def layer_shapes(w: Workload) -> list[tuple[str, tuple]]:
    """``[(kind, dims), ...]``: each layer's kind (dense, conv, lstm, layernorm) and its sizes,
    in order."""
    c = w.classes
    if w.arch == "mlp":
        dims = [int(np.prod(w.input_shape)), *w.sizes["hidden"], c]
        return [("dense", (a, b)) for a, b in zip(dims[:-1], dims[1:])]
    if w.arch == "cnn":
        h, wd, cin = w.input_shape
        f1, f2 = w.sizes["filters"]
        flat = ((h - 4) // 2) * ((wd - 4) // 2) * f2
        return [("conv", (3, 3, cin, f1)), ("conv", (3, 3, f1, f2)),
                ("dense", (flat, w.sizes["dense"])), ("dense", (w.sizes["dense"], c))]
    if w.arch == "lstm":
        return [("lstm", (w.input_shape[-1], w.sizes["units"])), ("dense", (w.sizes["units"], c))]
    if w.arch == "resmlp":
        width = w.sizes["width"]
        return [("dense", (width, width))] * w.sizes["blocks"] + [("dense", (width, c))]
    if w.arch == "prenorm":
        width, hidden = w.sizes["width"], w.sizes["hidden"]
        block = [("layernorm", (width,)), ("dense", (width, hidden)), ("dense", (hidden, width))]
        return block * w.sizes["blocks"] + [("layernorm", (width,)), ("dense", (width, c))]
    raise ValueError(f"unknown architecture {w.arch!r}")


def _glorot(rng: np.random.Generator, shape: tuple, fan_in: int, fan_out: int) -> np.ndarray:
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape).astype(np.float32)


def _orthogonal(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    a = rng.normal(size=(max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))  # a unique, uniformly distributed Q
    return (q if rows >= cols else q.T).astype(np.float32)


def make_weights(w: Workload, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """The neutral initial weights of ``w`` (see the module docstring for the layout)."""
    rng = np.random.default_rng(seed)
    out: list[dict[str, np.ndarray]] = []
    for kind, dims in layer_shapes(w):
        if kind == "dense":
            a, b = dims
            out.append({"kernel": _glorot(rng, (a, b), a, b), "bias": np.zeros(b, np.float32)})
        elif kind == "layernorm":
            out.append({"gamma": np.ones(dims, np.float32), "beta": np.zeros(dims, np.float32)})
        elif kind == "conv":
            kh, kw, cin, cout = dims
            out.append({"kernel": _glorot(rng, dims, kh * kw * cin, kh * kw * cout),
                        "bias": np.zeros(cout, np.float32)})
        else:
            f, h = dims
            bias = np.zeros(4 * h, np.float32)
            bias[h:2 * h] = 1.0  # unit forget bias
            out.append({"kernel": _glorot(rng, (f, 4 * h), f, 4 * h),
                        "recurrent_kernel": _orthogonal(rng, h, 4 * h), "bias": bias})
    return out


def flat_weights(weights: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """Keras's ``get_weights`` order: per layer gamma, beta or kernel, (recurrent_kernel,) bias."""
    order = ("gamma", "beta", "kernel", "recurrent_kernel", "bias")
    return [layer[k] for layer in weights for k in order if k in layer]


# -- data -------------------------------------------------------------------------------------


def input_scale(w: Workload) -> float:
    """The inputs' standard deviation: 1, but for the residual MLP, where each block about
    doubles the activations' variance at initialisation (``x + relu(x W)``; measured),
    ``2 ** -(blocks + 1) / 2``, so that the logits start near unit scale (else the first
    losses are in the thousands and the implementations' float rounding grows apart)."""
    return 1.0 if w.arch != "resmlp" else float(2.0 ** (-(w.sizes["blocks"] + 1) / 2))


def make_data(w: Workload, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """One epoch of synthetic, learnable data: ``x (steps * batch, *input_shape)`` float32
    normal (``input_scale``), ``y (steps * batch,)`` int32 labels from a fixed random
    teacher (``argmax(tanh(x A) B)`` on the flattened input)."""
    rng = np.random.default_rng(seed)
    n = w.steps * w.batch
    x = (rng.normal(size=(n, *w.input_shape)) * input_scale(w)).astype(np.float32)
    d = int(np.prod(w.input_shape))
    a = rng.normal(size=(d, 32)) / np.sqrt(d)
    b = rng.normal(size=(32, w.classes))
    y = np.argmax(np.tanh(x.reshape(n, d) @ a) @ b, axis=1).astype(np.int32)
    return x, y


def batches(x: np.ndarray, y: np.ndarray, batch: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The epoch's batches in order (no shuffling): ``[(x_i, y_i), ...]``."""
    return [(x[i:i + batch], y[i:i + batch]) for i in range(0, len(x) - batch + 1, batch)]


def describe(w: Workload) -> dict[str, Any]:
    """A JSON-able summary of ``w`` for reports."""
    return {"name": w.name, "title": w.title, "batch": w.batch, "input_shape": list(w.input_shape),
            "steps_per_epoch": w.steps, "timed_epochs": w.epochs, "compile_only": w.compile_only}
