"""Recurrent cells: one time step of SimpleRNN, LSTM and GRU, as layers.

A cell's ``apply`` takes ``[x_t, *states]`` and returns ``[h_t, new_states]``, Keras's
``output, new_states = cell(inputs, states)`` in kerax's list form::

    cell = LSTMCell(8)
    params, _ = cell.init(key, [x_t, h, c])               # x_t: (batch, features)
    [h, [h, c]], _ = cell.apply(params, {}, [x_t, h, c])

``x_t`` alone (an array, not a list) starts from zero states. ``RNN(cell)`` runs a cell
over a sequence (see :mod:`kerax.layers.recurrent` and :mod:`kerax.layers.rnn_loop`); it
calls the pieces a cell is made of, so that the input projection of all time steps is one
matmul per gate before the loop and the loop does one recurrent matmul a step. Gate
pre-activations travel as tuples of ``gates`` blocks ``(..., units)``, one per gate:

* ``project(params, x)``: ``x @ kernel + input bias``, any leading axes, as blocks;
* ``recurrent(params, h, recurrent_mask)``: ``h @ recurrent_kernel`` (+ GRU's recurrent
  bias), as blocks;
* ``combine(xp, r, states) -> (h_t, new_states)``: the element-wise rest of the step; for
  the cells whose gates see only ``xp + r`` (``additive``: SimpleRNN, LSTM) it is
  ``activate(xp + r, states)``;
* ``step(params, xp, states, recurrent_mask)``: ``combine(xp, recurrent(...), states)``
  (GRU with ``reset_after=False`` has its own: its reset gate acts before the matmul, so
  it is not ``fused``, and runs in the plain loop).

Weights (Keras layout; gate blocks side by side on the last axis, ``u = units``):

* ``SimpleRNNCell``: ``kernel (in, u)``, ``recurrent_kernel (u, u)``, ``bias (u,)``.
* ``LSTMCell``: ``kernel (in, 4u)``, ``recurrent_kernel (u, 4u)``, ``bias (4u,)``, gates
  i, f, c, o; ``unit_forget_bias=True`` starts the forget block of the bias at 1.
* ``GRUCell``: ``kernel (in, 3u)``, ``recurrent_kernel (u, 3u)``, gates z, r, h;
  ``reset_after=True`` (default): ``bias (2, 3u)``, row 0 added to the input projection,
  row 1 to the recurrent one, and the reset gate applied after the recurrent matmul;
  ``reset_after=False``: ``bias (3u,)`` and the reset gate applied before it.

Dropout (training only, needs ``rng``): ``dropout`` drops input features and
``recurrent_dropout`` state features feeding the recurrent matmul; one mask per call,
shared by all gates (RNN layers draw one mask per sequence, the same at every step).
"""

from __future__ import annotations

import dataclasses
import numbers
import types
from typing import Any

import jax
import jax.numpy as jnp

from kerax import activations, errors, initializers
from kerax.core.layer import Layer
from kerax.core.rng import derive
from kerax.layers._util import cast_input, positive_int
from kerax.layers.regularization import require_rng

RECURRENT_REGULARIZED = types.MappingProxyType({"recurrent_regularizer": "recurrent_kernel"})


def check_cell_args(layer: Layer) -> None:
    """Validates the cell arguments a cell or a recurrent layer holds (ConfigError)."""
    positive_int(layer, "units", layer.units)
    for f in ("activation", "recurrent_activation"):
        if hasattr(layer, f):
            activations.get(getattr(layer, f))
    for f in ("kernel_initializer", "recurrent_initializer", "bias_initializer"):
        initializers.get(getattr(layer, f))
    for f in ("dropout", "recurrent_dropout"):
        rate = getattr(layer, f)
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0 <= rate < 1:
            raise layer._error(errors.ConfigError, f"{f} must be a number in [0, 1); received {f}={rate!r}")


def check_states(layer: Layer, states: list, sizes: tuple, batch: int, what: str) -> None:
    """ShapeError / InputStructureError unless ``states`` are ``(batch, size)`` arrays."""
    if len(states) != len(sizes):
        names = ", ".join(f"(batch, {s})" for s in sizes)
        raise layer._error(
            errors.InputStructureError,
            f"expected {len(sizes)} {what} state(s) of shapes {names}; received {len(states)}",
        )
    for i, (s, size) in enumerate(zip(states, sizes)):
        if tuple(s.shape) != (batch, size):
            raise layer._error(
                errors.ShapeError,
                f"expected {what} state {i} of shape {errors.fmt_shape((batch, size))} "
                f"(batch, units); received shape {errors.fmt_shape(s.shape)}",
            )


def state_sizes(cell: Any) -> tuple:
    """A cell's ``state_size`` (an int, as Keras's single-state cells, or a tuple) as a tuple."""
    size = cell.state_size
    return (int(size),) if isinstance(size, int) else tuple(int(s) for s in size)


def _dropout_mask(key: jax.Array, rate: float, shape: tuple, dtype: Any) -> jax.Array:
    keep = jax.random.bernoulli(key, 1.0 - rate, shape)
    return keep.astype(dtype) / jnp.asarray(1.0 - rate, dtype)


class _Cell(Layer):
    """What the three cells share: arguments, weights, dropout masks, ``apply`` (not a layer)."""

    gates = 1
    regularized_weights = RECURRENT_REGULARIZED

    units: int
    activation: Any = "tanh"
    _: dataclasses.KW_ONLY
    use_bias: bool = True
    kernel_initializer: Any = "glorot_uniform"
    recurrent_initializer: Any = "orthogonal"
    bias_initializer: Any = "zeros"
    kernel_regularizer: Any = None
    recurrent_regularizer: Any = None
    bias_regularizer: Any = None
    dropout: float = 0.0
    recurrent_dropout: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_cell_args(self)

    @property
    def state_size(self) -> Any:
        """The size of each state: ``units`` (one state), or a tuple (LSTM: ``(h, c)``)."""
        return self.units

    @property
    def output_size(self) -> int:
        return self.units

    # -- weights ----------------------------------------------------------------------

    def _weight(self, rng: Any, name: str, field: str, shape: tuple) -> jax.Array:
        init = initializers.get(getattr(self, field))
        return init(derive(rng, name), shape, jnp.dtype(self.param_dtype))

    def _bias(self, rng: Any) -> jax.Array:
        return self._weight(rng, "bias", "bias_initializer", (self.gates * self.units,))

    def init(self, rng, x):
        x_t = x[0] if isinstance(x, (list, tuple)) else x
        self._check_step(tuple(x_t.shape))
        u, width = self.units, self.gates * self.units
        params = {
            "kernel": self._weight(rng, "kernel", "kernel_initializer", (int(x_t.shape[-1]), width)),
            "recurrent_kernel": self._weight(rng, "recurrent_kernel", "recurrent_initializer", (u, width)),
        }
        if self.use_bias:
            params["bias"] = self._bias(rng)
        return params, {}

    # -- the pieces RNN calls -------------------------------------------------------------

    additive = True  # the gates see the input and recurrent parts only as their sum

    @property
    def fused(self) -> bool:
        """True if a step is one recurrent matmul of ``h`` then ``combine`` (the fused loop)."""
        return True

    def input_bias(self, params: dict) -> Any:
        """The bias added to the input projection (GRU's first row with ``reset_after``), else None."""
        return params["bias"] if self.use_bias else None

    def recurrent_bias(self, params: dict) -> Any:
        """The bias added to the recurrent matmul (GRU's ``reset_after`` row), else None."""
        return None

    def blocks(self, z: jax.Array) -> tuple:
        """``(..., gates * units)`` -> a tuple of ``gates`` blocks ``(..., units)``."""
        return tuple(jnp.split(z, self.gates, axis=-1))

    def project(self, params: dict, x: jax.Array) -> tuple:
        """``x @ kernel + input bias`` over any leading axes, one matmul per gate block.

        Separate blocks, not one ``(..., gates * units)`` array: XLA:CPU runs a loop body
        that reads gate columns out of a slice of one stacked array many times slower.
        """
        kernel, bias, u = params["kernel"], self.input_bias(params), self.units
        out = [x @ kernel[:, k * u:(k + 1) * u] for k in range(self.gates)]
        return tuple(out if bias is None else (y + bias[k * u:(k + 1) * u] for k, y in enumerate(out)))

    def recurrent(self, params: dict, h: jax.Array, rec_mask: Any = None) -> tuple:
        """``h @ recurrent_kernel`` (+ recurrent bias) as gate blocks; ``h`` masked by dropout."""
        r = (h if rec_mask is None else h * rec_mask) @ params["recurrent_kernel"]
        bias = self.recurrent_bias(params)
        return self.blocks(r if bias is None else r + bias)

    def activate(self, z: tuple, states: tuple) -> tuple:
        """The element-wise step from the summed pre-activations ``z``: ``(h_t, new_states)``."""
        raise NotImplementedError

    def combine(self, xp: tuple, r: tuple, states: tuple) -> tuple:
        """The element-wise step from the input and recurrent parts: ``(h_t, new_states)``."""
        return self.activate(tuple(a + b for a, b in zip(xp, r)), states)

    def step(self, params: dict, xp: tuple, states: tuple, rec_mask: Any = None) -> tuple:
        """One step from the projected input blocks ``xp``: ``(h_t, new_states)``."""
        return self.combine(xp, self.recurrent(params, states[0], rec_mask), states)

    def dropout_masks(self, who: Layer, rng: Any, training: bool, batch: int, features: int,
                      dtype: Any) -> tuple[Any, Any]:
        """``(input_mask (batch, features), recurrent_mask (batch, units))``, None when off."""
        if not training or (self.dropout == 0 and self.recurrent_dropout == 0):
            return None, None
        require_rng(who, rng)
        if self.seed is not None:
            rng = jax.random.fold_in(rng, self.seed)
        in_mask = rec_mask = None
        if self.dropout:
            in_mask = _dropout_mask(derive(rng, "dropout"), self.dropout, (batch, features), dtype)
        if self.recurrent_dropout:
            rec_mask = _dropout_mask(derive(rng, "recurrent_dropout"), self.recurrent_dropout,
                                     (batch, self.units), dtype)
        return in_mask, rec_mask

    # -- one step as a layer ------------------------------------------------------------

    def _check_step(self, shape: tuple, features: int | None = None) -> None:
        if len(shape) != 2 or (features is not None and shape[-1] != features):
            expected = errors.fmt_shape((None, features)) if features else "(batch, features)"
            raise self._error(
                errors.ShapeError,
                f"a cell takes one time step: expected x_t of shape {expected}; received shape "
                f"{errors.fmt_shape(shape)}. To run over a sequence (batch, timesteps, features) "
                f"wrap the cell: RNN({type(self).__name__}(...))",
            )

    def apply(self, params, state, x, *, rng=None, training=False):
        x_t, states = (x[0], list(x[1:])) if isinstance(x, (list, tuple)) else (x, [])
        kernel = params["kernel"]
        self._check_step(tuple(x_t.shape), kernel.shape[0])
        x_t = cast_input(x_t, kernel.dtype)
        batch = x_t.shape[0]
        if not states:
            states = [jnp.zeros((batch, s), kernel.dtype) for s in state_sizes(self)]
        check_states(self, states, state_sizes(self), batch, "input")
        states = tuple(cast_input(s, kernel.dtype) for s in states)
        in_mask, rec_mask = self.dropout_masks(self, rng, training, batch, x_t.shape[-1], kernel.dtype)
        if in_mask is not None:
            x_t = x_t * in_mask
        h, new_states = self.step(params, self.project(params, x_t), states, rec_mask)
        return [h, list(new_states)], state


class SimpleRNNCell(_Cell):
    """One step of a fully connected RNN: ``h = activation(x @ kernel + h @ recurrent_kernel + bias)``.

    Args: ``units``, ``activation`` ("tanh"), and keyword-only ``use_bias``,
    ``kernel_initializer`` ("glorot_uniform"), ``recurrent_initializer`` ("orthogonal"),
    ``bias_initializer`` ("zeros"), ``kernel_regularizer``, ``recurrent_regularizer``,
    ``bias_regularizer``, ``dropout``, ``recurrent_dropout``, ``seed``, as in Keras.

    Weights: ``kernel (in, units)``, ``recurrent_kernel (units, units)``, ``bias (units,)``.

    Input shape: ``[x_t (batch, in), h (batch, units)]`` (or ``x_t`` alone: zero state).
    Output shape: ``[h (batch, units), [h (batch, units)]]``.
    """

    def activate(self, z, states):
        h = activations.get(self.activation)(z[0])
        return h, (h,)


class LSTMCell(_Cell):
    """One step of a Long Short-Term Memory layer (Hochreiter & Schmidhuber, 1997).

    Args: as :class:`SimpleRNNCell`, plus ``recurrent_activation`` ("sigmoid", the gates'
    activation, third positional argument) and keyword-only ``unit_forget_bias`` (True:
    the forget gate's bias starts at 1).

    Weights: ``kernel (in, 4u)``, ``recurrent_kernel (u, 4u)``, ``bias (4u,)``, gate blocks
    in the order i, f, c, o.

    Input shape: ``[x_t (batch, in), h (batch, u), c (batch, u)]`` (or ``x_t`` alone).
    Output shape: ``[h (batch, u), [h (batch, u), c (batch, u)]]``.
    """

    gates = 4

    recurrent_activation: Any = "sigmoid"
    _: dataclasses.KW_ONLY
    unit_forget_bias: bool = True

    @property
    def state_size(self) -> tuple:
        return (self.units, self.units)

    def _bias(self, rng):
        if not self.unit_forget_bias:
            return super()._bias(rng)
        u, dtype = self.units, jnp.dtype(self.param_dtype)
        init = initializers.get(self.bias_initializer)
        first, rest = jax.random.split(derive(rng, "bias"))
        return jnp.concatenate([init(first, (u,), dtype), jnp.ones((u,), dtype), init(rest, (2 * u,), dtype)])

    def activate(self, z, states):
        i, f, g, o = z
        c = states[1]
        act, gate = activations.get(self.activation), activations.get(self.recurrent_activation)
        c = gate(f) * c + gate(i) * act(g)
        h = gate(o) * act(c)
        return h, (h, c)


class GRUCell(_Cell):
    """One step of a Gated Recurrent Unit (Cho et al., 2014).

    Args: as :class:`LSTMCell` without ``unit_forget_bias``, plus keyword-only
    ``reset_after`` (True: Keras 3's and cuDNN's variant, reset gate applied after the
    recurrent matmul, separate input and recurrent biases).

    Weights: ``kernel (in, 3u)``, ``recurrent_kernel (u, 3u)``, gate blocks z, r, h;
    ``bias (2, 3u)`` with ``reset_after=True`` (input bias, recurrent bias), else ``(3u,)``.

    Input shape: ``[x_t (batch, in), h (batch, u)]`` (or ``x_t`` alone).
    Output shape: ``[h (batch, u), [h (batch, u)]]``.
    """

    gates = 3

    recurrent_activation: Any = "sigmoid"
    _: dataclasses.KW_ONLY
    reset_after: bool = True

    def _bias(self, rng):
        shape = (2, 3 * self.units) if self.reset_after else (3 * self.units,)
        return self._weight(rng, "bias", "bias_initializer", shape)

    additive = False

    @property
    def fused(self) -> bool:
        return self.reset_after

    def input_bias(self, params):
        if not self.use_bias:
            return None
        return params["bias"][0] if self.reset_after else params["bias"]

    def recurrent_bias(self, params):
        return params["bias"][1] if self.use_bias and self.reset_after else None

    def combine(self, xp, r, states):
        (h,) = states
        act, gate = activations.get(self.activation), activations.get(self.recurrent_activation)
        z, reset = gate(xp[0] + r[0]), gate(xp[1] + r[1])
        h = z * h + (1 - z) * act(xp[2] + reset * r[2])
        return h, (h,)

    def step(self, params, xp, states, rec_mask=None):
        if self.reset_after:
            return super().step(params, xp, states, rec_mask)
        (h,) = states
        u, kernel = self.units, params["recurrent_kernel"]
        hr = h if rec_mask is None else h * rec_mask
        act, gate = activations.get(self.activation), activations.get(self.recurrent_activation)
        inner = hr @ kernel[:, :2 * u]
        z, r = gate(xp[0] + inner[:, :u]), gate(xp[1] + inner[:, u:])
        hh = act(xp[2] + (r * hr) @ kernel[:, 2 * u:])
        h = z * h + (1 - z) * hh
        return h, (h,)
