"""Equinox, written as its documentation writes a training step: ``eqx.Module`` models of
``eqx.nn`` layers on single examples (``jax.vmap`` over the batch), ``eqx.filter_jit``,
``eqx.filter_value_and_grad`` and optax.

Equinox's ``Conv2d`` is channels-first: the images go to the device as NCHW, the HWIO
kernels become OIHW, and features are put back in HWC order before flattening so that the
dense kernel's rows line up with the neutral (Keras) layout.
"""

from __future__ import annotations

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bench import workloads as wl
from bench.impls._common import loop_run, require_peer_support
from bench.impls.handwritten import adam


# Layers are made abstractly (``filter_eval_shape``) and then given the neutral weights, so
# no random initialisation runs (or compiles) only to be overwritten.


def _linear(p: dict, key: jax.Array) -> eqx.nn.Linear:
    fan_in, fan_out = p["kernel"].shape
    layer = eqx.filter_eval_shape(eqx.nn.Linear, fan_in, fan_out, key=key)
    return eqx.tree_at(lambda m: (m.weight, m.bias), layer, (jax.device_put(p["kernel"].T), jax.device_put(p["bias"])))


def _conv(p: dict, key: jax.Array) -> eqx.nn.Conv2d:
    kh, kw, cin, cout = p["kernel"].shape
    layer = eqx.filter_eval_shape(eqx.nn.Conv2d, cin, cout, (kh, kw), key=key)
    weight, bias = p["kernel"].transpose(3, 2, 0, 1), p["bias"].reshape(cout, 1, 1)  # HWIO -> OIHW
    return eqx.tree_at(lambda m: (m.weight, m.bias), layer, (jax.device_put(weight), jax.device_put(bias)))


class MLP(eqx.Module):
    layers: list
    residual: bool = eqx.field(static=True)

    def __call__(self, x):
        for layer in self.layers[:-1]:
            x = x + jax.nn.relu(layer(x)) if self.residual else jax.nn.relu(layer(x))
        return self.layers[-1](x)


class CNN(eqx.Module):
    conv1: eqx.nn.Conv2d
    conv2: eqx.nn.Conv2d
    pool: eqx.nn.MaxPool2d
    dense1: eqx.nn.Linear
    dense2: eqx.nn.Linear

    def __call__(self, x):  # x: (C, H, W)
        h = self.pool(jax.nn.relu(self.conv2(jax.nn.relu(self.conv1(x)))))
        return self.dense2(jax.nn.relu(self.dense1(jnp.transpose(h, (1, 2, 0)).reshape(-1))))


class LSTM(eqx.Module):
    cell: eqx.nn.LSTMCell
    dense: eqx.nn.Linear

    def __call__(self, xs):  # xs: (T, F)
        zeros = jnp.zeros(self.cell.hidden_size, xs.dtype)
        (h, _), _ = jax.lax.scan(lambda state, x: (self.cell(x, state), None), (zeros, zeros), xs)
        return self.dense(h)


def build(w: wl.Workload, weights: list[dict]) -> eqx.Module:
    require_peer_support(w)
    keys = list(jax.random.split(jax.random.key(0), len(weights)))
    if w.arch in ("mlp", "resmlp"):
        return MLP([_linear(p, k) for p, k in zip(weights, keys)], w.arch == "resmlp")
    if w.arch == "cnn":
        return CNN(_conv(weights[0], keys[0]), _conv(weights[1], keys[1]), eqx.nn.MaxPool2d(2, 2),
                   _linear(weights[2], keys[2]), _linear(weights[3], keys[3]))
    p = weights[0]
    features, hidden = p["kernel"].shape[0], p["recurrent_kernel"].shape[0]
    cell = eqx.filter_eval_shape(eqx.nn.LSTMCell, features, hidden, key=keys[0])  # gates i, f, g, o
    new = jax.device_put((p["kernel"].T, p["recurrent_kernel"].T, p["bias"]))
    cell = eqx.tree_at(lambda c: (c.weight_ih, c.weight_hh, c.bias), cell, new)
    return LSTM(cell, _linear(weights[1], keys[1]))


def run(w: wl.Workload, weights: list[dict], data: tuple[np.ndarray, np.ndarray], steps: int) -> dict:
    """Trains ``w`` for a warm-up epoch and ``steps`` timed steps; see ``_common``."""
    started = time.perf_counter()
    model = build(w, weights)
    tx = adam()
    opt_state = tx.init(eqx.filter(model, eqx.is_array))

    def loss_fn(model, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(jax.vmap(model)(x), y).mean()

    @eqx.filter_jit
    def step(model, opt_state, x, y):
        loss, grads = eqx.filter_value_and_grad(loss_fn)(model, x, y)
        updates, opt_state = tx.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), opt_state, loss

    def call(carry, batch):
        model, opt_state, loss = step(*carry, *batch)
        return (model, opt_state), loss

    x, y = data
    if w.arch == "cnn":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    feeds = [jax.device_put(b) for b in wl.batches(x, y, w.batch)]
    return loop_run(call, (model, opt_state), feeds, max(1, steps // w.steps), started)
