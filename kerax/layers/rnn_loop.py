"""The time loop of the recurrent layers: a plain scan and a fused one with its own derivative.

``run_loop`` runs a cell over a time-major sequence ``xs (time, batch, features)`` and
returns ``(final_states, ys)``, ``ys (time, batch, units)`` or None. Both loops compute
the same values (tests/test_recurrent_perf_paths.py checks outputs and gradients):

* the plain loop, for any cell: ``lax.scan`` of the cell's step, differentiated by JAX;
* the fused loop, for kerax's cells whose step is one recurrent matmul of ``h`` followed by
  element-wise math (``cell.fused``: SimpleRNN, LSTM, GRU with ``reset_after``): the same
  forward scan under a ``jax.custom_jvp``. Its tangent rule is written so that reverse
  mode (JAX transposes it) becomes the usual hand-written backward pass of an RNN: the
  loop only carries ``dh @ recurrent_kernel.T`` back in time and stacks the gates'
  gradients; the weight gradients are then one large matmul each, outside the loop
  (``(time * batch, units).T @ (time * batch, gates * units)``). JAX's own derivative of
  the plain scan instead accumulates ``h.T @ dz`` at every step and saves about twice as
  many per-step arrays. Being a JVP, not a VJP, the fused loop keeps forward mode
  (``jax.jvp``, ``jax.jacfwd``, ``jax.hessian``) and ``vmap`` working.

Both loops read the hoisted input projection as one array per gate (see
``_Cell.project``), and the fused loop saves the gate pre-activations per gate: XLA:CPU
runs element-wise code that slices gate columns out of a dynamic slice of one stacked
array many times slower (measured 30x for the LSTM gates).

The unroll factor of the scans is chosen in one place, :func:`scan_unroll`.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from kerax.layers.rnn_cells import _Cell

# Steps per loop iteration on accelerators, where each iteration of a while loop costs
# kernel launches and a check of the condition on the host (on CPU, 1: see scan_unroll).
ACCELERATOR_UNROLL = 8


def scan_unroll(steps: int, unroll: bool, backend: str | None = None) -> int | bool:
    """The ``unroll`` passed to ``lax.scan`` for a sequence of ``steps`` time steps.

    ``unroll=True`` is Keras's: the whole sequence unrolled (short sequences only). Else
    the backend decides, at trace time (measured with bench/rnn.py, LSTM(128) over 32
    steps, see docs/performance.md): 1 on CPU, where unrolling by 2, 4 or 8 cost the train
    step 6-28% more CPU time on XLA:CPU (jax 0.10.2) and compiled 1.2-3.9x longer;
    ``ACCELERATOR_UNROLL`` (8) elsewhere, which on an H200 (jax 0.11.2) took the step
    from 0.87 ms (1) to 0.56 (2), 0.45 (4) and 0.40 ms (8).

    Example: ``scan_unroll(32, False, "cpu") == 1``; ``scan_unroll(32, True) is True``.
    """
    if unroll:
        return True
    backend = jax.default_backend() if backend is None else backend
    return 1 if backend == "cpu" else max(1, min(steps, ACCELERATOR_UNROLL))


def _masked(fn: Callable, zero_output: bool) -> Callable:
    """``fn(*args, prev) -> (y, new)`` with Keras's masking: a masked step keeps the states and
    outputs the previous output (zeros with ``zero_output``)."""

    def step(args: tuple, prev: tuple, m: Any) -> tuple:
        y, new = fn(*args, prev)
        if m is None:
            return y, tuple(new)
        new = tuple(jnp.where(m, n, p) for n, p in zip(new, prev))
        return jnp.where(m, y, jnp.zeros_like(y) if zero_output else prev[0]), new

    return step


def run_loop(cell: Any, params: dict, state: dict, xs: jax.Array, states: tuple, mask: Any, *,
             rng: Any, training: bool, rec_mask: Any, reverse: bool, emit: bool,
             zero_output: bool, unroll: int | bool, fused: bool) -> tuple[tuple, Any]:
    """Runs ``cell`` over ``xs (time, batch, features)`` from ``states``: ``(final, ys)``.

    ``mask (time, batch, 1)`` bool or None; ``rec_mask (batch, units)`` the recurrent dropout
    mask or None (kerax cells only; the input dropout is already applied to ``xs``);
    ``reverse`` runs from the last step; ``emit`` stacks the outputs ``ys (time, batch,
    units)`` (else ys is None); ``fused`` picks the fused loop (needs ``cell.fused``).
    """
    if fused:
        return _fused(cell, reverse, emit, zero_output, unroll)(params, xs, states, mask, rec_mask)
    if isinstance(cell, _Cell):  # a kerax cell: the input projection hoisted, per gate
        xs = cell.project(params, xs)

        def fn(xp_t, prev):
            return cell.step(params, xp_t, prev, rec_mask)
    else:
        def fn(x_t, prev):
            (h, new), _ = cell.apply(params, state, [x_t, *prev], rng=rng, training=training)
            return h, tuple(new)
    step = _masked(fn, zero_output)

    def body(prev, inputs):
        y, new = step((inputs[0],), prev, inputs[1])
        return new, (y if emit else None)

    return lax.scan(body, states, (xs, mask), reverse=reverse, unroll=unroll)


def _nonzero(t: Any) -> Any:
    return None if isinstance(t, SymbolicZero) else t


def _total(*terms: Any) -> Any:
    terms = [t for t in terms if t is not None]
    return sum(terms[1:], terms[0]) if terms else None


def _tangent_inputs(cell: Any, params: dict, tparams: dict, xs: jax.Array, txs: Any, h_in: jax.Array) -> tuple:
    """The tangents of the gates' inputs that the tangent loop does not carry, stacked
    ``(time, batch, gates * units)``: ``(input + recurrent,)`` if the cell is additive, else
    ``(input, recurrent)``. Each term is one matmul over all steps, so that, transposed,
    the weight gradients are computed outside the loop. ``h_in (time, batch, units)``:
    the (dropout-masked) state each step's recurrent matmul read; None: a zero tangent."""
    steps, batch = xs.shape[:2]
    n, width = steps * batch, cell.gates * cell.units

    def matmul(a, w):
        return None if a is None or w is None else a.reshape(n, a.shape[-1]) @ w

    bias = tparams.get("bias") is not None
    t_x = _total(matmul(xs, tparams.get("kernel")), matmul(txs, params["kernel"]),
                 cell.input_bias(tparams) if bias else None)
    t_r = _total(matmul(h_in, tparams.get("recurrent_kernel")), cell.recurrent_bias(tparams) if bias else None)

    def stack(t):
        t = jnp.zeros((width,), params["recurrent_kernel"].dtype) if t is None else t
        return jnp.broadcast_to(t, (n, width)).reshape(steps, batch, width)

    return (stack(_total(t_x, t_r)),) if cell.additive else (stack(t_x), stack(t_r))


def _fused(cell: Any, reverse: bool, emit: bool, zero_output: bool, unroll: int | bool) -> Callable:
    """The fused loop as ``f(params, xs, states, mask, rec_mask) -> (final, ys)``."""
    pointwise = _masked(cell.activate if cell.additive else cell.combine, zero_output)

    def forward(params, xs, states, mask, rec_mask, save):
        """The scan; with ``save`` also the stacked residuals ``(xp, pre, prev)``: the
        projected inputs, the gate pre-activations (``z`` if additive, else ``r``) and the
        states each step started from."""
        xp = cell.project(params, xs)

        def body(prev, inputs):
            xp_t, m_t = inputs
            r = cell.recurrent(params, prev[0], rec_mask)
            args = (tuple(a + b for a, b in zip(xp_t, r)),) if cell.additive else (xp_t, r)
            y, new = pointwise(args, prev, m_t)
            return new, (y if emit else None, (args[-1], prev) if save else None)

        final, (ys, res) = lax.scan(body, states, (xp, mask), reverse=reverse, unroll=unroll)
        return final, ys, ((xp, *res) if save else None)

    @jax.custom_jvp
    def loop(params, xs, states, mask, rec_mask):
        final, ys, _ = forward(params, xs, states, mask, rec_mask, save=False)
        return final, ys

    def loop_jvp(primals, tangents):
        params, xs, states, mask, rec_mask = primals
        # The masks are constants (a dropout mask comes from a key): their tangents are dropped.
        tparams, txs, tstates = jax.tree.map(_nonzero, tangents[:3],
                                             is_leaf=lambda t: isinstance(t, SymbolicZero))
        final, ys, (xp, pre, prev) = forward(params, xs, states, mask, rec_mask, save=True)
        h_in = prev[0] if rec_mask is None else prev[0] * rec_mask
        t_in = _tangent_inputs(cell, params, tparams, xs, txs, h_in)
        t0 = tuple(jnp.zeros_like(s) if t is None else t for s, t in zip(states, tstates))
        rkernel = params["recurrent_kernel"]

        @jax.checkpoint  # the transposed loop recomputes the gates from `pre` (saves nothing)
        def pointwise_jvp(args, prev_t, m_t, targs, tprev):
            return jax.jvp(lambda a, p: pointwise(a, p, m_t), (args, prev_t), (targs, tprev))[1]

        def tbody(tprev, inputs):
            t_in_t, xp_t, pre_t, prev_t, m_t = inputs
            h = tprev[0] if rec_mask is None else tprev[0] * rec_mask
            t_rec = cell.blocks(t_in_t[-1] + h @ rkernel)
            if cell.additive:
                args, targs = (pre_t,), (t_rec,)
            else:
                args, targs = (xp_t, pre_t), (cell.blocks(t_in_t[0]), t_rec)
            ty, tnew = pointwise_jvp(args, prev_t, m_t, targs, tprev)
            return tnew, (ty if emit else None)

        xp_in = None if cell.additive else xp
        tfinal, tys = lax.scan(tbody, t0, (t_in, xp_in, pre, prev, mask), reverse=reverse, unroll=unroll)
        return (final, ys), (tfinal, tys)

    loop.defjvp(loop_jvp, symbolic_zeros=True)
    return loop
