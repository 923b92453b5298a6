"""The recurrent layers' fast paths compute what the plain path computes.

The fused loop (``kerax.layers.rnn_loop``: a ``custom_jvp`` whose transpose keeps the
weight gradients out of the loop) against the plain ``lax.scan`` that JAX differentiates:
outputs, reverse-mode gradients (weights, inputs, initial states), forward mode and vmap,
with masks, ``go_backwards``, dropout; the unroll choice; and the structure that makes
the fused loop fast (one matmul per loop body, forward and backward).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kerax.layers import recurrent, rnn_loop
from kerax.layers.recurrent import GRU, LSTM, RNN, SimpleRNN
from kerax.layers.rnn_cells import GRUCell

KEY = jax.random.key(0)
RNG = np.random.default_rng(0)
X = jnp.asarray(RNG.normal(size=(3, 6, 4)).astype(np.float32))
MASK = jnp.asarray([[1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1], [1, 0, 1, 1, 0, 1]], bool)
CELLS = {"SimpleRNN": SimpleRNN, "LSTM": LSTM, "GRU": GRU}


def close(a, b):
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=2e-5, atol=2e-6), a, b)


@pytest.fixture
def plain(monkeypatch):
    """A function that switches the layers to the plain loop for the rest of the test."""
    run_loop = recurrent.run_loop

    def use_plain():
        monkeypatch.setattr(recurrent, "run_loop", lambda *a, **k: run_loop(*a, **{**k, "fused": False}))

    return use_plain


def _params(layer):
    """Random weights of the layer's shapes (NumPy: nothing to compile)."""
    return jax.tree.map(lambda s: jnp.asarray(0.5 * RNG.normal(size=s.shape).astype(np.float32)),
                        _abstract_params(layer))


def _abstract_params(layer):
    """The layer's params as shapes only: the structural tests trace, never compute."""
    return jax.eval_shape(lambda: layer.init(KEY, X)[0])


def _loss(layer, mask, **kw):
    """A scalar that weighs every output and state differently, so no gradient cancels."""

    def loss(params, x, states):
        out = layer.apply(params, {}, [x, *states], mask=mask, **kw)[0]
        return sum(jnp.sum(jnp.sin((i + 1) * o)) for i, o in enumerate(out))

    return loss


def _states(layer, batch):
    return [jnp.asarray(RNG.normal(size=(batch, s)).astype(np.float32))
            for s in recurrent.state_sizes(layer.cell)]


@pytest.mark.parametrize("name, go_backwards, zero_output", [("SimpleRNN", False, True), ("LSTM", True, True),
                                                             ("GRU", True, False)])
def test_fused_loop_matches_plain_loop(name, go_backwards, zero_output, plain):
    # return_state so the outputs and the final states both carry gradients; masks with
    # padding at either end and inside; zero_output_for_mask as Bidirectional sets it.
    layer = CELLS[name](5, return_sequences=True, return_state=True, go_backwards=go_backwards,
                        zero_output_for_mask=zero_output)
    params = _params(layer)
    states = _states(layer, 3)
    loss = _loss(layer, MASK)
    fused = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(params, X, states)
    plain()
    reference = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(params, X, states)
    close(fused, reference)
    assert float(jnp.abs(fused[1][1]).sum()) > 0  # the inputs' gradient is not zero


def test_forward_mode_vmap_and_dropout_match_plain_loop(plain):
    # The fused loop is a custom_jvp: jax.jvp (here a Hessian-vector product) and vmap keep
    # working; dropout masks (one per sequence) enter it as constants. (GRU: the cell whose
    # input and recurrent parts do not just add up.)
    layer = GRU(4, return_sequences=True, dropout=0.3, recurrent_dropout=0.4)
    params = _params(layer)
    states = _states(layer, 3)
    loss = _loss(layer, None, rng=jax.random.key(7), training=True)
    tangent = jax.tree.map(jnp.ones_like, params)
    stacked = jax.tree.map(lambda a: jnp.stack([a, 0.5 * a]), params)

    def everything():
        grad = jax.grad(loss, argnums=(0, 1, 2))(params, X, states)
        hvp = jax.jvp(lambda p: jax.grad(loss)(p, X, states), (params,), (tangent,))[1]
        per_model = jax.vmap(lambda p: loss(p, X, states))(stacked)
        return grad, hvp, per_model

    fused = jax.jit(everything)()
    plain()
    close(fused, jax.jit(everything)())


def _scans(jaxpr):
    out = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "scan":
            out.append(eqn)
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else [value]:
                sub = getattr(sub, "jaxpr", sub)
                if hasattr(sub, "eqns"):
                    out.extend(_scans(sub))
    return out


def _dots(scan):
    return sum(e.primitive.name == "dot_general" for e in scan.params["jaxpr"].jaxpr.eqns)


def test_fused_gradient_keeps_weight_gradients_out_of_the_loop(plain):
    # The reason the fused loop is fast: its forward and backward loops do one matmul a
    # step (h @ W, dz @ W.T) and the weight gradient is one matmul after the loop; JAX's
    # derivative of the plain scan also does h.T @ dz at every step.
    layer = LSTM(8)
    params = _abstract_params(layer)

    def scan_dots():
        grad = jax.grad(lambda p: jnp.sum(layer.apply(p, {}, X)[0]))
        return sorted(_dots(s) for s in _scans(jax.make_jaxpr(grad)(params).jaxpr))

    assert scan_dots() == [1, 1]
    plain()
    assert max(scan_dots()) >= 2


def test_which_layers_run_the_fused_loop():
    def uses_fused(layer):
        params = _abstract_params(layer)
        jaxpr = jax.make_jaxpr(lambda p: layer.apply(p, {}, X)[0])(params)
        return "custom_jvp_call" in str(jaxpr)

    assert uses_fused(LSTM(3)) and uses_fused(SimpleRNN(3)) and uses_fused(GRU(3))
    # the reset gate acting before the matmul, and a cell kerax does not know: plain loop
    assert not uses_fused(GRU(3, reset_after=False))
    assert not uses_fused(RNN(SimpleRNNWrapper()))


class SimpleRNNWrapper(recurrent.Layer):
    """A user's cell (not a kerax one), for the generic loop."""

    state_size = 3

    def init(self, rng, x):
        return GRUCell(3).init(rng, x)

    def apply(self, params, state, x, *, rng=None, training=False):
        return GRUCell(3).apply(params, state, x)


def test_scan_unroll_is_chosen_by_backend_and_keeps_keras_meaning():
    assert rnn_loop.scan_unroll(32, False, "cpu") == 1
    assert rnn_loop.scan_unroll(32, False, "gpu") == rnn_loop.ACCELERATOR_UNROLL
    assert rnn_loop.scan_unroll(2, False, "gpu") == min(2, rnn_loop.ACCELERATOR_UNROLL)
    assert rnn_loop.scan_unroll(32, True, "cpu") is True  # Keras: unroll the whole sequence
    for unroll, expected in [(False, rnn_loop.scan_unroll(6, False)), (True, 6)]:
        layer = LSTM(3, unroll=unroll)
        params = _abstract_params(layer)
        (scan,) = _scans(jax.make_jaxpr(lambda p: layer.apply(p, {}, X)[0])(params).jaxpr)
        assert scan.params["unroll"] == expected
