"""Recurrent layers: RNN (any cell over a sequence), SimpleRNN, LSTM, GRU.

One implementation, :class:`_RNNBase`, runs a cell over the time axis with ``lax.scan``
(:mod:`kerax.layers.rnn_loop`), so a sequence compiles to one loop whatever its length.
For kerax's cells the input projection ``x @ kernel + bias`` of all time steps is done
before the loop (one matmul per gate); the loop body does only the recurrent matmul and
the gates, and carries only the states. SimpleRNN, LSTM and GRU (``reset_after=True``)
run the fused loop, whose derivative keeps the weight gradients out of the loop (see
:mod:`kerax.layers.rnn_loop` and docs/performance.md).

Inputs: ``x (batch, timesteps, features)``. Initial states (zeros by default) come either
as a list input ``[x, h0]`` (``[x, h0, c0]`` for LSTM; Keras 2 style, and what a
functional graph passes) or as ``apply(..., initial_state=[h0, c0])``.

Outputs: the last output ``(batch, units)``, or with ``return_sequences=True`` every
output ``(batch, timesteps, units)``; with ``return_state=True`` the list
``[output, *final_states]``. ``go_backwards=True`` reads the sequence from its end and
returns the outputs in that reversed order (as Keras).

Masks (``mask=`` ``(batch, timesteps)``, True for real steps; containers pass the one
``Embedding(mask_zero=True)`` or ``Masking`` makes): a masked step leaves the states
unchanged, and its output is the previous output (the carried ``h``), or zeros with
``zero_output_for_mask=True`` (what ``Bidirectional`` sets with ``return_sequences``),
exactly as Keras 3. The output mask is the input mask with ``return_sequences``, else None.

Dropout (training only, needs ``rng``): one mask per sequence for the inputs
(``dropout``) and one for the recurrent state (``recurrent_dropout``), the same at every
step, shared by the gates.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from kerax import errors
from kerax.core.layer import Layer
from kerax.layers._util import cast_input
from kerax.layers.rnn_cells import (
    RECURRENT_REGULARIZED,
    GRUCell,
    LSTMCell,
    SimpleRNNCell,
    _Cell,
    check_cell_args,
    check_states,
    state_sizes,
)
from kerax.layers.rnn_loop import run_loop, scan_unroll


def split_inputs(x: Any, initial_state: Any = None) -> tuple[Any, list | None]:
    """``x`` or ``[x, *states]`` (plus ``initial_state=``) -> ``(sequence, states or None)``."""
    seq, states = (x[0], list(x[1:])) if isinstance(x, (list, tuple)) else (x, [])
    if initial_state is not None:
        states = states + (list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state])
    return seq, (states or None)


class _RNNBase(Layer):
    """Runs ``self.cell`` over the time axis (shared by RNN, SimpleRNN, LSTM, GRU)."""

    uses_mask = True

    _: dataclasses.KW_ONLY
    return_sequences: bool = False
    return_state: bool = False
    go_backwards: bool = False
    stateful: bool = False
    unroll: bool = False
    zero_output_for_mask: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.stateful:
            raise self._error(
                errors.ConfigError,
                "stateful=True is not supported: kerax layers keep no state between calls. "
                "Carry it explicitly: return_state=True, then pass the final states as the next "
                "call's initial state, [x, *states]",
            )

    def _check_sequence(self, shape: tuple, features: int | None = None) -> None:
        if len(shape) == 3 and (features is None or shape[-1] == features):
            return
        hint = {2: " For one sequence add a batch axis (x[None]); for one time step add a time "
                   "axis (x[:, None]) or use the cell."}.get(len(shape), "")
        wanted = "" if features is None else f" with {features} features (the kernel's first axis)"
        raise self._error(
            errors.ShapeError,
            f"expected input of shape (batch, timesteps, features){wanted}; received input of "
            f"shape {errors.fmt_shape(shape)}.{hint}",
        )

    def _step_specs(self, seq: Any, dtype: Any) -> list:
        batch = seq.shape[0]
        return [jax.ShapeDtypeStruct((batch, seq.shape[-1]), seq.dtype),
                *(jax.ShapeDtypeStruct((batch, s), dtype) for s in state_sizes(self.cell))]

    def init(self, rng, x):
        seq, _ = split_inputs(x)
        self._check_sequence(tuple(seq.shape))
        return self.cell.init(rng, self._step_specs(seq, jnp.dtype(self.cell.param_dtype)))

    def compute_mask(self, x, mask):
        if isinstance(mask, (list, tuple)):
            mask = mask[0] if mask else None
        out = mask if self.return_sequences else None
        return [out] + [None] * len(state_sizes(self.cell)) if self.return_state else out

    def penalty(self, params):
        return self.cell.penalty(params)

    def apply(self, params, state, x, *, rng=None, training=False, mask=None, initial_state=None):
        cell = self.cell
        seq, states = split_inputs(x, initial_state)
        fast = isinstance(cell, _Cell)
        if fast:
            dtype = params["kernel"].dtype
            self._check_sequence(tuple(seq.shape), params["kernel"].shape[0])
        else:
            dtype = jnp.dtype(cell.compute_dtype)
            self._check_sequence(tuple(seq.shape))
        seq = cast_input(seq, dtype)
        batch, steps, features = seq.shape
        sizes = state_sizes(cell)
        if states is None:
            states = [jnp.zeros((batch, s), dtype) for s in sizes]
        check_states(self, states, sizes, batch, "initial")
        states = tuple(cast_input(s, dtype) for s in states)
        mask = self._time_major_mask(mask, batch, steps)

        xs = jnp.swapaxes(seq, 0, 1)  # (time, batch, features): scan runs over axis 0
        rec_mask = None
        if fast:
            in_mask, rec_mask = cell.dropout_masks(self, rng, training, batch, features, dtype)
            if in_mask is not None:
                xs = xs * in_mask
        # Kerax's cells output their first state, so without return_sequences the last
        # output is the final h: the loop then emits nothing per step.
        emit = self.return_sequences or not fast or (mask is not None and self.zero_output_for_mask)
        final, ys = run_loop(cell, params, state, xs, states, mask, rng=rng, training=training,
                             rec_mask=rec_mask, reverse=self.go_backwards, emit=emit,
                             zero_output=self.zero_output_for_mask,
                             unroll=scan_unroll(steps, self.unroll), fused=fast and cell.fused)
        if emit:
            if self.go_backwards:
                ys = jnp.flip(ys, 0)  # processing order, as Keras
            last = ys[-1]
        else:
            last = final[0]
        output = jnp.swapaxes(ys, 0, 1) if self.return_sequences else last
        return ([output, *final] if self.return_state else output), state

    def _time_major_mask(self, mask: Any, batch: int, steps: int) -> Any:
        if isinstance(mask, (list, tuple)):
            mask = mask[0] if mask else None
        if mask is None:
            return None
        if tuple(mask.shape) != (batch, steps):
            raise self._error(
                errors.ShapeError,
                f"expected a mask of shape {errors.fmt_shape((batch, steps))} (batch, timesteps), "
                f"True for real steps; received mask of shape {errors.fmt_shape(mask.shape)}",
            )
        return jnp.swapaxes(mask.astype(bool), 0, 1)[..., None]


class RNN(_RNNBase):
    """Runs a recurrent cell over the time axis of a sequence.

    Args:
      cell: a kerax cell (``SimpleRNNCell``, ``LSTMCell``, ``GRUCell``), or any layer with a
        ``state_size`` (int or tuple) whose ``apply`` maps ``[x_t, *states]`` to
        ``[h_t, new_states]`` (it gets the same ``rng`` at every step, so a dropout mask it
        draws from it is the same at every step).
      return_sequences, return_state, go_backwards, unroll, zero_output_for_mask
        (keyword-only): as described in :mod:`kerax.layers.recurrent`; ``unroll=True``
        unrolls the loop (short sequences only).

    Weights: the cell's, at this level (Keras's ``rnn/lstm_cell/kernel`` is ``kernel``).

    Input shape: ``(batch, timesteps, features)``, or ``[x, *initial_states]``.
    Output shape: ``(batch, units)``; ``(batch, timesteps, units)`` with
    ``return_sequences``; with ``return_state`` the list ``[output, *final_states]``.

    Example: ``layers.RNN(layers.LSTMCell(32), return_sequences=True)``.
    """

    cell: Any

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.cell, Layer) or not hasattr(self.cell, "state_size"):
            raise self._error(
                errors.ConfigError,
                "cell must be a recurrent cell: a layer with a state_size whose apply maps "
                f"[x_t, *states] to [h_t, new_states], such as LSTMCell(units); received {self.cell!r}",
            )


class _BuiltCell(_RNNBase):
    """A recurrent layer whose fields are its cell's arguments (SimpleRNN, LSTM, GRU)."""

    cell_class = SimpleRNNCell
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
        names = {f.name for f in dataclasses.fields(self.cell_class) if f.init} - {"name", "input_shape"}
        self._set("_cell", self.cell_class(**{n: getattr(self, n) for n in names}))

    @property
    def cell(self) -> _Cell:
        """The cell this layer runs, built from its arguments (its weights are this layer's)."""
        return self._cell


class SimpleRNN(_BuiltCell):
    """Fully connected RNN: ``h_t = activation(x_t @ kernel + h_{t-1} @ recurrent_kernel + bias)``.

    Args: ``units``, ``activation`` ("tanh"), then keyword-only: ``use_bias``,
    ``kernel_initializer`` ("glorot_uniform"), ``recurrent_initializer`` ("orthogonal"),
    ``bias_initializer`` ("zeros"), ``kernel_regularizer``, ``recurrent_regularizer``,
    ``bias_regularizer``, ``dropout``, ``recurrent_dropout``, ``seed``, and the RNN options
    ``return_sequences``, ``return_state``, ``go_backwards``, ``unroll``, ``zero_output_for_mask``.

    Weights: ``kernel (in, units)``, ``recurrent_kernel (units, units)``, ``bias (units,)``.

    Input shape: ``(batch, timesteps, features)``, or ``[x, h0]``.
    Output shape: ``(batch, units)``, ``(batch, timesteps, units)`` with ``return_sequences``;
    ``[output, h]`` with ``return_state``.
    """

    cell_class = SimpleRNNCell


class LSTM(_BuiltCell):
    """Long Short-Term Memory layer (Hochreiter & Schmidhuber, 1997).

    Args: as :class:`SimpleRNN`, plus ``recurrent_activation`` ("sigmoid", third
    positional) and keyword-only ``unit_forget_bias`` (True: the forget gate's bias
    starts at 1).

    Weights: ``kernel (in, 4u)``, ``recurrent_kernel (u, 4u)``, ``bias (4u,)``, gate blocks
    i, f, c, o (Keras's ``lstm/lstm_cell/kernel`` is ``kernel``).

    Input shape: ``(batch, timesteps, features)``, or ``[x, h0, c0]``.
    Output shape: ``(batch, u)``, ``(batch, timesteps, u)`` with ``return_sequences``;
    ``[output, h, c]`` with ``return_state``.

    Example: ``layers.LSTM(64, return_sequences=True, dropout=0.2)``.
    """

    cell_class = LSTMCell

    recurrent_activation: Any = "sigmoid"
    _: dataclasses.KW_ONLY
    unit_forget_bias: bool = True


class GRU(_BuiltCell):
    """Gated Recurrent Unit (Cho et al., 2014), Keras 3's variant by default.

    Args: as :class:`SimpleRNN`, plus ``recurrent_activation`` ("sigmoid", third
    positional) and keyword-only ``reset_after`` (True: reset gate after the recurrent
    matmul, separate input and recurrent biases; False: the original variant).

    Weights: ``kernel (in, 3u)``, ``recurrent_kernel (u, 3u)``, gate blocks z, r, h;
    ``bias (2, 3u)`` (input row, recurrent row) with ``reset_after=True``, else ``(3u,)``.

    Input shape: ``(batch, timesteps, features)``, or ``[x, h0]``.
    Output shape: ``(batch, u)``, ``(batch, timesteps, u)`` with ``return_sequences``;
    ``[output, h]`` with ``return_state``.
    """

    cell_class = GRUCell

    recurrent_activation: Any = "sigmoid"
    _: dataclasses.KW_ONLY
    reset_after: bool = True
