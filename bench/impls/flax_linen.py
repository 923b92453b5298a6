"""Flax Linen, written as its documentation writes a training step: ``nn.compact`` modules,
``flax.training.train_state.TrainState`` and a ``jax.jit`` step with the state donated."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import flax.linen as nn
from flax.training import train_state

from bench import workloads as wl
from bench.impls._common import loop_run, require_peer_support
from bench.impls.handwritten import adam


class MLP(nn.Module):
    sizes: tuple
    residual: bool

    @nn.compact
    def __call__(self, x):
        for i, units in enumerate(self.sizes[:-1]):
            h = nn.relu(nn.Dense(units, name=f"dense{i}")(x))
            x = x + h if self.residual else h
        return nn.Dense(self.sizes[-1], name=f"dense{len(self.sizes) - 1}")(x)


class CNN(nn.Module):
    filters: tuple
    dense: int
    classes: int

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(self.filters[0], (3, 3), padding="VALID", name="conv0")(x))
        x = nn.relu(nn.Conv(self.filters[1], (3, 3), padding="VALID", name="conv1")(x))
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = nn.relu(nn.Dense(self.dense, name="dense0")(x.reshape(x.shape[0], -1)))
        return nn.Dense(self.classes, name="dense1")(x)


class LSTM(nn.Module):
    units: int
    classes: int

    @nn.compact
    def __call__(self, x):
        h = nn.RNN(nn.OptimizedLSTMCell(self.units, name="cell"))(x)
        return nn.Dense(self.classes, name="dense")(h[:, -1])


def _dense(p: dict) -> dict:
    return {"kernel": jax.device_put(p["kernel"]), "bias": jax.device_put(p["bias"])}


def build(w: wl.Workload, weights: list[dict]) -> tuple[nn.Module, dict]:
    """The Linen module of ``w`` and its params, mapped from the neutral weights."""
    require_peer_support(w)
    if w.arch in ("mlp", "resmlp"):
        sizes = tuple(p["kernel"].shape[1] for p in weights)
        return MLP(sizes, w.arch == "resmlp"), {f"dense{i}": _dense(p) for i, p in enumerate(weights)}
    if w.arch == "cnn":
        module = CNN(w.sizes["filters"], w.sizes["dense"], w.classes)
        return module, {"conv0": _dense(weights[0]), "conv1": _dense(weights[1]),
                        "dense0": _dense(weights[2]), "dense1": _dense(weights[3])}
    p, hidden = weights[0], w.sizes["units"]
    # Linen's LSTM cells keep one dense layer per gate: inputs ii/if/ig/io (no bias),
    # hidden hi/hf/hg/ho (with the bias); the neutral blocks are i, f, c (= g), o.
    cell = {}
    for j, gate in enumerate("ifgo"):
        cols = slice(j * hidden, (j + 1) * hidden)
        cell[f"i{gate}"] = {"kernel": jax.device_put(p["kernel"][:, cols])}
        cell[f"h{gate}"] = {"kernel": jax.device_put(p["recurrent_kernel"][:, cols]),
                            "bias": jax.device_put(p["bias"][cols])}
    return LSTM(hidden, w.classes), {"cell": cell, "dense": _dense(weights[1])}


def train_step(state: train_state.TrainState, x: jax.Array, y: jax.Array) -> tuple:
    """One step as Flax's examples write it: ``value_and_grad``, ``apply_gradients``."""

    def loss_fn(params):
        logits = state.apply_fn({"params": params}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss


def run(w: wl.Workload, weights: list[dict], data: tuple[np.ndarray, np.ndarray], steps: int) -> dict:
    """Trains ``w`` for a warm-up epoch and ``steps`` timed steps; see ``_common``."""
    started = time.perf_counter()
    module, params = build(w, weights)
    expected = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, *w.input_shape)))["params"]
    if jax.tree.structure(expected) != jax.tree.structure(params):
        raise ValueError(f"this Flax version's Linen param tree differs: {jax.tree.map(jnp.shape, expected)}")
    state = train_state.TrainState.create(apply_fn=module.apply, params=params, tx=adam())
    step = jax.jit(train_step, donate_argnums=0)
    feeds = [jax.device_put(b) for b in wl.batches(*data, w.batch)]
    return loop_run(lambda s, f: step(s, *f), state, feeds, max(1, steps // w.steps), started)
