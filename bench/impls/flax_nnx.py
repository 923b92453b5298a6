"""Flax NNX, written as its documentation writes a training step: modules holding their
parameters, ``nnx.Optimizer``, ``nnx.value_and_grad`` and ``@nnx.jit``."""

from __future__ import annotations

import time
from typing import Callable

import jax
import numpy as np
import optax
from flax import nnx

from bench import workloads as wl
from bench.impls._common import loop_run, require_peer_support
from bench.impls.handwritten import adam


# Layers are made abstractly (``nnx.eval_shape``) and then given the neutral weights, so no
# random initialisation runs (or compiles) only to be overwritten.


def _abstract(make: Callable[[], nnx.Module]) -> nnx.Module:
    return nnx.eval_shape(make)


def _set(layer: nnx.Module, p: dict) -> nnx.Module:
    layer.kernel.set_value(jax.device_put(p["kernel"]))
    layer.bias.set_value(jax.device_put(p["bias"]))
    return layer


def _linear(p: dict) -> nnx.Linear:
    return _set(_abstract(lambda: nnx.Linear(*p["kernel"].shape, rngs=nnx.Rngs(0))), p)


class MLP(nnx.Module):
    def __init__(self, weights: list[dict], residual: bool):
        self.layers = nnx.List([_linear(p) for p in weights])
        self.residual = residual

    def __call__(self, x):
        for layer in self.layers[:-1]:
            x = x + nnx.relu(layer(x)) if self.residual else nnx.relu(layer(x))
        return self.layers[-1](x)


class CNN(nnx.Module):
    def __init__(self, weights: list[dict]):
        convs = [_set(_abstract(lambda p=p: nnx.Conv(p["kernel"].shape[2], p["kernel"].shape[3], (3, 3),
                                                      padding="VALID", rngs=nnx.Rngs(0))), p)
                 for p in weights[:2]]
        self.conv1, self.conv2 = convs
        self.dense1, self.dense2 = _linear(weights[2]), _linear(weights[3])

    def __call__(self, x):
        h = nnx.relu(self.conv2(nnx.relu(self.conv1(x))))
        h = nnx.max_pool(h, (2, 2), strides=(2, 2))
        return self.dense2(nnx.relu(self.dense1(h.reshape(h.shape[0], -1))))


class LSTM(nnx.Module):
    def __init__(self, weights: list[dict]):
        p = weights[0]
        features, hidden = p["kernel"].shape[0], p["recurrent_kernel"].shape[0]
        cell = _abstract(lambda: nnx.OptimizedLSTMCell(features, hidden, rngs=nnx.Rngs(0)))  # fused gates i, f, g, o
        cell.dense_i.kernel.set_value(jax.device_put(p["kernel"]))
        cell.dense_h.kernel.set_value(jax.device_put(p["recurrent_kernel"]))
        cell.dense_h.bias.set_value(jax.device_put(p["bias"]))
        self.rnn = nnx.RNN(cell)
        self.dense = _linear(weights[1])

    def __call__(self, x):
        return self.dense(self.rnn(x)[:, -1])


def build(w: wl.Workload, weights: list[dict]) -> nnx.Module:
    require_peer_support(w)
    if w.arch in ("mlp", "resmlp"):
        return MLP(weights, w.arch == "resmlp")
    if w.arch == "cnn":
        return CNN(weights)
    return LSTM(weights)


def run(w: wl.Workload, weights: list[dict], data: tuple[np.ndarray, np.ndarray], steps: int) -> dict:
    """Trains ``w`` for a warm-up epoch and ``steps`` timed steps; see ``_common``."""
    started = time.perf_counter()
    model = build(w, weights)
    optimizer = nnx.Optimizer(model, adam(), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, x, y):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    def call(carry, batch):
        return carry, train_step(model, optimizer, *batch)

    feeds = [jax.device_put(b) for b in wl.batches(*data, w.batch)]
    return loop_run(call, None, feeds, max(1, steps // w.steps), started)
