"""Layer wrappers: Bidirectional (an RNN both ways) and TimeDistributed (a layer per time step).

* ``Bidirectional(layer)``: params ``{"forward_<name>": ..., "backward_<name>": ...}``,
  ``<name>`` the wrapped layer's name or default name (``lstm``), as Keras's paths
  ``bidirectional/forward_lstm/lstm_cell/kernel`` once the cell level is dropped. A given
  ``backward_layer`` keeps its own name when it has one, as in Keras.
* ``TimeDistributed(layer)``: the wrapped layer's params and state at this level (Keras's
  ``time_distributed/dense/kernel`` is ``kernel`` here: drop the inner layer's name).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from kerax import errors
from kerax.core import naming
from kerax.core.layer import Layer
from kerax.core.rng import derive
from kerax.layers.rnn_cells import state_sizes

MERGE_MODES = ("concat", "sum", "mul", "ave", None)
_RNN_FLAGS = ("go_backwards", "return_sequences", "return_state")


def _removeprefix(name: str, prefix: str) -> str:
    return name[len(prefix):] if name.startswith(prefix) else name


def _first(mask: Any) -> Any:
    return (mask[0] if mask else None) if isinstance(mask, (list, tuple)) else mask


class Bidirectional(Layer):
    """Runs a recurrent layer forwards and a copy of it backwards, and merges the outputs.

    Args:
      layer: a recurrent layer (``LSTM``, ``GRU``, ``SimpleRNN``, ``RNN``) with
        ``go_backwards=False``; its copy with ``go_backwards=True`` runs backwards.
      merge_mode: ``"concat"`` (default), ``"sum"``, ``"mul"``, ``"ave"``, or ``None``
        (the list ``[forward, backward]``).
      backward_layer: (keyword-only) the backward layer instead of a copy; it must have
        ``go_backwards=True`` and the same ``return_sequences`` and ``return_state``.

    With ``return_sequences`` the backward outputs are flipped back to the input's time
    order, and masked steps output zeros (Keras sets ``zero_output_for_mask``). Initial
    states: ``[x, *forward_states, *backward_states]``.

    Input shape: ``(batch, timesteps, features)``.
    Output shape: the wrapped layer's, with the last axis doubled for ``"concat"``; with
    ``return_state`` ``[output(s), *forward_states, *backward_states]``.

    Example: ``layers.Bidirectional(layers.LSTM(32, return_sequences=True))``.
    """

    uses_mask = True

    layer: Any
    merge_mode: Any = "concat"
    _: dataclasses.KW_ONLY
    backward_layer: Any = None

    def __post_init__(self) -> None:
        super().__post_init__()
        given = {"layer": self.layer, "backward_layer": self.backward_layer}
        for what, layer in given.items():
            if layer is None and what == "backward_layer":
                continue
            if not isinstance(layer, Layer) or not all(hasattr(layer, a) for a in (*_RNN_FLAGS, "cell")):
                raise self._error(
                    errors.ConfigError,
                    f"{what} must be a recurrent layer (LSTM, GRU, SimpleRNN, RNN); received {layer!r}",
                )
        if self.merge_mode not in MERGE_MODES:
            raise self._error(
                errors.ConfigError,
                f"merge_mode must be one of {MERGE_MODES}; received merge_mode={self.merge_mode!r}",
            )
        forward = _zero_masked(self.layer)
        if self.backward_layer is None:
            backward = _zero_masked(dataclasses.replace(self.layer, go_backwards=True))
        else:
            backward = _zero_masked(self.backward_layer)
        if forward.go_backwards == backward.go_backwards:
            raise self._error(
                errors.ConfigError,
                "the forward and backward layers need different go_backwards values; received "
                f"go_backwards={forward.go_backwards} for both (pass a layer with go_backwards=False)",
            )
        for a in ("return_sequences", "return_state"):
            if getattr(forward, a) != getattr(backward, a):
                raise self._error(
                    errors.ConfigError,
                    f"the forward and backward layers need the same {a}; received "
                    f"{getattr(forward, a)} (forward) and {getattr(backward, a)} (backward)",
                )
        base = self.layer.name or type(self.layer).default_name()
        fname = "forward_" + _removeprefix(base, "forward_")
        if self.backward_layer is not None and self.backward_layer.name:
            bname = self.backward_layer.name
        else:
            bname = "backward_" + _removeprefix(base, "backward_")
        if fname == bname:
            raise self._error(errors.LayerNameError, f"the forward and backward layers are both named {fname!r}")
        self._set("_children", ((fname, forward), (bname, backward)))

    @property
    def forward_layer(self) -> Layer:
        """The layer that runs forwards (``layer``, with Keras's mask-output setting)."""
        return self._children[0][1]

    @property
    def return_sequences(self) -> bool:
        return self.layer.return_sequences

    @property
    def return_state(self) -> bool:
        return self.layer.return_state

    def init(self, rng, x):
        params: dict = {}
        state: dict = {}
        for (name, layer), x_dir in zip(self._children, self._split(x)):
            with naming.scope(name, layer):
                p, s = layer.init(derive(rng, name), x_dir)
            if p:
                params[name] = p
            if s:
                state[name] = s
        return params, state

    def _split(self, x: Any) -> tuple[Any, Any]:
        """``[x, *forward_states, *backward_states]`` -> each direction's input."""
        if not isinstance(x, (list, tuple)):
            return x, x
        seq, states = x[0], list(x[1:])
        if not states:
            return seq, seq
        if len(states) % 2:
            raise self._error(
                errors.InputStructureError,
                f"expected [x, *forward_states, *backward_states] (an even number of states); "
                f"received {len(states)} states",
            )
        half = len(states) // 2
        return [seq, *states[:half]], [seq, *states[half:]]

    def apply(self, params, state, x, *, rng=None, training=False, mask=None):
        mask = _first(mask)
        outs, new_state = [], dict(state)
        for (name, layer), x_dir in zip(self._children, self._split(x)):
            extra = {"mask": mask} if layer.uses_mask else {}
            with naming.scope(name, layer):
                y, s = layer.apply(params.get(name, {}), state.get(name, {}), x_dir,
                                   rng=derive(rng, name), training=training, **extra)
            if s:
                new_state[name] = s
            outs.append(y)
        (y, y_rev), states = outs, []
        if self.return_state:
            states = [*y[1:], *y_rev[1:]]
            y, y_rev = y[0], y_rev[0]
        if self.return_sequences:
            y_rev = jnp.flip(y_rev, 1)
        if self.merge_mode == "concat":
            out = [jnp.concatenate([y, y_rev], axis=-1)]
        elif self.merge_mode == "sum":
            out = [y + y_rev]
        elif self.merge_mode == "ave":
            out = [(y + y_rev) / 2]
        elif self.merge_mode == "mul":
            out = [y * y_rev]
        else:
            out = [y, y_rev]
        if self.return_state or self.merge_mode is None:
            return [*out, *states], new_state
        return out[0], new_state

    def compute_mask(self, x, mask):
        mask = _first(mask) if self.return_sequences else None
        out = [mask, mask] if self.merge_mode is None else [mask]
        if self.return_state:
            n = sum(len(state_sizes(layer.cell)) for _, layer in self._children)
            return out + [None] * n
        return out if self.merge_mode is None else out[0]

    def penalty(self, params):
        return sum(layer.penalty(params.get(name, {})) for name, layer in self._children)


def _zero_masked(layer: Layer) -> Layer:
    """Keras's Bidirectional outputs zeros at masked steps when it returns sequences."""
    names = {f.name for f in dataclasses.fields(layer)}
    if "zero_output_for_mask" in names and layer.zero_output_for_mask != layer.return_sequences:
        return dataclasses.replace(layer, zero_output_for_mask=layer.return_sequences)
    return layer


class TimeDistributed(Layer):
    """Applies a layer to every time step: ``y[:, t] = layer(x[:, t])``, shared weights.

    Args:
      layer: any layer; it sees inputs ``(batch * timesteps, ...)`` (one call, not a loop).

    Weights: the wrapped layer's, at this level.

    Masks: the input mask ``(batch, timesteps)`` is handed on to the output; a mask with
    more axes ``(batch, timesteps, ...)`` also reaches a wrapped layer that uses masks.

    Input shape: ``(batch, timesteps, ...)``.
    Output shape: ``(batch, timesteps, ...)``, the trailing axes the wrapped layer's output.

    Example: ``layers.TimeDistributed(layers.Dense(8))``.
    """

    uses_mask = True

    layer: Any

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.layer, Layer):
            raise self._error(errors.ConfigError, f"layer must be a kerax layer; received {self.layer!r}")

    def _check(self, shape: tuple) -> None:
        if len(shape) < 3:
            raise self._error(
                errors.ShapeError,
                f"expected input of rank >= 3 (batch, timesteps, ...); received input of shape "
                f"{errors.fmt_shape(shape)}",
            )

    def init(self, rng, x):
        shape = tuple(x.shape)
        self._check(shape)
        return self.layer.init(rng, jax.ShapeDtypeStruct((shape[0] * shape[1], *shape[2:]), x.dtype))

    def apply(self, params, state, x, *, rng=None, training=False, mask=None):
        shape = tuple(x.shape)
        self._check(shape)
        batch, steps = shape[:2]
        extra = {}
        mask = _first(mask)
        if mask is not None:
            if mask.ndim < 2 or tuple(mask.shape[:2]) != (batch, steps):
                raise self._error(
                    errors.ShapeError,
                    f"expected a mask of shape {errors.fmt_shape((batch, steps))} (batch, timesteps) "
                    f"for input of shape {errors.fmt_shape(shape)}; received mask of shape "
                    f"{errors.fmt_shape(mask.shape)}",
                )
            if mask.ndim > 2 and self.layer.uses_mask:
                extra["mask"] = mask.reshape(batch * steps, *mask.shape[2:])
        y, new_state = self.layer.apply(params, state, x.reshape(batch * steps, *shape[2:]),
                                        rng=rng, training=training, **extra)
        return jax.tree.map(lambda a: a.reshape(batch, steps, *a.shape[1:]), y), new_state

    def compute_mask(self, x, mask):
        return mask

    def penalty(self, params):
        return self.layer.penalty(params)
