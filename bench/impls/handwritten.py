"""Hand-written JAX: the floor for framework overhead.

The model is written directly with ``jnp``, ``lax.conv_general_dilated``,
``lax.reduce_window`` and ``lax.scan`` over the neutral weight dicts; one step is
``jax.jit(value_and_grad + Adam)`` (an optax transformation computing Keras's Adam formula,
see ``_adam``) with the parameters and optimizer state donated, over batches already on
the device.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bench import workloads as wl
from bench.impls._adam import keras_adam
from bench.impls._common import loop_run


def adam() -> optax.GradientTransformation:
    """The optimizer of every optax user here: Keras's Adam formula (see ``_adam``)."""
    return keras_adam()


def _dense(p: dict, h: jax.Array) -> jax.Array:
    return h @ p["kernel"] + p["bias"]


def _conv(p: dict, h: jax.Array) -> jax.Array:
    y = jax.lax.conv_general_dilated(h, p["kernel"], (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + p["bias"]


def _maxpool2(h: jax.Array) -> jax.Array:
    return jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def _lstm_last(p: dict, x: jax.Array) -> jax.Array:
    """The last hidden state of an LSTM over ``x (B, T, F)``; gates i, f, c, o.

    The input projection stays inside the scan: on XLA:CPU that measured 7.6 ms a step
    against 10.4 ms for projecting all timesteps at once before it (W3, 2 cores).
    """
    hidden = p["recurrent_kernel"].shape[0]

    def cell(carry, x_t):
        h, c = carry
        z = x_t @ p["kernel"] + h @ p["recurrent_kernel"] + p["bias"]
        i, f, g, o = jnp.split(z, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), None

    zeros = jnp.zeros((x.shape[0], hidden), x.dtype)
    (h, _), _ = jax.lax.scan(cell, (zeros, zeros), jnp.swapaxes(x, 0, 1))
    return h


def _layer_norm(p: dict, h: jax.Array) -> jax.Array:
    """Layer normalization over the last axis, epsilon 1e-3 (Keras's default)."""
    mean = h.mean(-1, keepdims=True)
    z = (h - mean) * jax.lax.rsqrt(jnp.square(h - mean).mean(-1, keepdims=True) + 1e-3)
    return z * p["gamma"] + p["beta"]


def _prenorm_block(b: tuple, h: jax.Array) -> jax.Array:
    """``h + Dense(gelu(Dense(LayerNorm(h))))``, with exact gelu (Keras's default)."""
    norm, up, down = b
    return h + _dense(down, jax.nn.gelu(_dense(up, _layer_norm(norm, h)), approximate=False))


def model(w: wl.Workload, weights: list[dict]) -> tuple[Any, Callable[[Any, jax.Array], jax.Array]]:
    """``(params, apply)``: the workload's parameters (from the neutral weights) and
    ``apply(params, x) -> logits``."""
    params = jax.device_put(weights)
    if w.arch == "mlp":
        def apply(p, x):
            for layer in p[:-1]:
                x = jax.nn.relu(_dense(layer, x))
            return _dense(p[-1], x)
    elif w.arch == "cnn":
        def apply(p, x):
            h = jax.nn.relu(_conv(p[0], x))
            h = _maxpool2(jax.nn.relu(_conv(p[1], h)))
            h = jax.nn.relu(_dense(p[2], h.reshape(h.shape[0], -1)))
            return _dense(p[3], h)
    elif w.arch == "lstm":
        def apply(p, x):
            return _dense(p[1], _lstm_last(p[0], x))
    elif w.arch == "prenorm":
        # Each block's three layers (LayerNorm, Dense up, Dense down) in one tuple; scanned,
        # the tuples are stacked on a leading axis and run by one lax.scan.
        blocks = [tuple(params[i:i + 3]) for i in range(0, len(params) - 2, 3)]
        if w.scanned:
            blocks = jax.tree.map(lambda *a: jnp.stack(a), *blocks)
        params = {"blocks": blocks, "norm": params[-2], "head": params[-1]}

        def apply(p, x):
            if w.scanned:
                x, _ = jax.lax.scan(lambda h, b: (_prenorm_block(b, h), None), x, p["blocks"])
            else:
                for b in p["blocks"]:
                    x = _prenorm_block(b, x)
            return _dense(p["head"], _layer_norm(p["norm"], x))
    elif w.arch == "resmlp" and not w.scanned:
        def apply(p, x):
            for layer in p[:-1]:
                x = x + jax.nn.relu(_dense(layer, x))
            return _dense(p[-1], x)
    elif w.arch == "resmlp":
        # The blocks' weights stacked on a leading axis and run by one lax.scan.
        params = {"blocks": jax.tree.map(lambda *a: jnp.stack(a), *params[:-1]), "head": params[-1]}

        def apply(p, x):
            x, _ = jax.lax.scan(lambda h, layer: (h + jax.nn.relu(_dense(layer, h)), None), x, p["blocks"])
            return _dense(p["head"], x)
    else:
        raise ValueError(f"unknown architecture {w.arch!r}")
    return params, apply


def one_step(apply: Callable, tx: optax.GradientTransformation) -> Callable:
    """``one((params, opt_state), (x, y)) -> ((params, opt_state), loss)``: one Adam step."""

    def loss_fn(p, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(apply(p, x), y).mean()

    def one(carry, batch):
        p, o = carry
        loss, g = jax.value_and_grad(loss_fn)(p, *batch)
        u, o = tx.update(g, o, p)
        return (optax.apply_updates(p, u), o), loss

    return one


def run(w: wl.Workload, weights: list[dict], data: tuple[np.ndarray, np.ndarray], steps: int) -> dict:
    """Trains ``w`` for a warm-up epoch and ``steps`` timed steps; see ``_common``."""
    started = time.perf_counter()
    params, apply = model(w, weights)
    tx = adam()
    one = one_step(apply, tx)
    step = jax.jit(lambda carry, x, y: one(carry, (x, y)), donate_argnums=0)
    feeds = [jax.device_put(b) for b in wl.batches(*data, w.batch)]
    carry = (params, tx.init(params))
    return loop_run(lambda c, f: step(c, *f), carry, feeds, max(1, steps // w.steps), started)
