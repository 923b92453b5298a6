"""``Chain``: the sequential combinator, a layer made of layers applied in order.

``Chain((a, b, c))`` is the layer ``x -> c(b(a(x)))``. Its params and state are dicts
keyed by the children's names (see :mod:`kerax.core.naming`); children without weights
contribute no key. The same layer object listed twice shares its weights.
"""

from __future__ import annotations

from typing import Any

import jax

from kerax import errors, mixed_precision
from kerax.core import naming, specs
from kerax.core.grouped_init import init_child
from kerax.core.layer import Layer
from kerax.core.rng import derive, derive_many


def unique(layers: Any) -> list:
    """Distinct layer objects in first-seen order (identity, not equality)."""
    seen: set[int] = set()
    out = []
    for layer in layers:
        if id(layer) not in seen:
            seen.add(id(layer))
            out.append(layer)
    return out


def output_spec(layer: Layer, params: Any, state: Any, x: Any, training: bool = False) -> Any:
    """Abstract output of ``layer.apply`` (no computation, works under ``jit``)."""
    return jax.eval_shape(
        lambda p, s, a: layer.apply(p, s, a, training=training)[0],
        specs.to_spec(params),
        specs.to_spec(state),
        specs.to_spec(x),
    )


def penalty_sum(named_layers: Any, params: dict) -> Any:
    """The weight penalties of a container's distinct children."""
    total, seen = 0.0, set()
    for name, layer in named_layers:
        if name not in seen:
            seen.add(name)
            total = total + layer.penalty(params.get(name, {}))
    return total


class Chain(Layer):
    """Applies ``layers`` in order; a layer itself, so chains nest.

    Input shape: that of the first layer. Output shape: that of the last.
    ``dtype_policy`` applies to the children that set none (:mod:`kerax.mixed_precision`).

    Example::

        mlp = Chain((layers.Dense(64, activation="relu"), layers.Dense(10)))
        params, state = mlp.init(jax.random.key(0), jnp.zeros((1, 784)))
    """

    layers: tuple = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        self._set("layers", tuple(self.layers))
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, Layer):
                raise errors.ConfigError(
                    f"{type(self).__name__}: entry {i} is not a layer; received "
                    f"{type(layer).__name__} {str(layer)[:80]}"
                )
        distinct = unique(self.layers)
        names = naming.assign_names(distinct, f"{type(self).__name__} {self.name or ''}".strip())
        by_id = {id(layer): name for layer, name in zip(distinct, names)}
        self._set("_names", tuple(by_id[id(layer)] for layer in self.layers))

    @property
    def names(self) -> tuple[str, ...]:
        """The children's names, in order (a shared layer repeats its name)."""
        return self._names

    @property
    def declared_input_shape(self) -> tuple | None:
        """``(None, *input_shape)`` if this chain or its first layer declares one."""
        shape = self.input_shape
        if shape is None and self.layers:
            shape = self.layers[0].input_shape
        return None if shape is None else (None, *shape)

    def _check_input(self, x: Any) -> None:
        declared = self.declared_input_shape
        if declared is not None and specs.is_arraylike(x):
            specs.check_input(declared, tuple(x.shape), "input")

    def init(self, rng: jax.Array, x: Any) -> tuple[dict, dict]:
        x = specs.to_spec(x)
        try:
            self._check_input(x)
        except errors.KeraxError as e:
            raise self._error(type(e), e.message) from None
        params: dict = {}
        state: dict = {}
        keys = derive_many(rng, self.names)
        for i, (name, layer) in enumerate(zip(self.names, self.layers)):
            with naming.scope(name, layer):
                if name not in params and name not in state:
                    p, s = init_child(layer, None if keys is None else keys[i], x)
                    p = mixed_precision.init_cast(layer, self.dtype_policy, p)
                    if p:
                        params[name] = p
                    if s:
                        state[name] = s
                x = output_spec(layer, params.get(name, {}), state.get(name, {}), x)
        return params, state

    uses_mask = True

    def apply(self, params, state, x, *, rng=None, training=False, mask=None):
        y, new_state, _ = self.apply_masked(params, state, x, mask, rng=rng, training=training)
        return y, new_state

    def apply_masked(self, params, state, x, mask, *, rng=None, training=False, dtype_policy=None):
        extra = self._start(x, dtype_policy)
        new_state: dict = dict(state)
        calls: dict[str, int] = {}
        for name, layer in zip(self.names, self.layers):
            x, mask = self._run_child(name, layer, params, new_state, calls, x, mask, rng, training, extra)
        return x, new_state, mask

    def _start(self, x: Any, dtype_policy: Any) -> dict:
        """Checks the input; the keyword arguments the children get (the dtype policy)."""
        try:
            self._check_input(x)
        except errors.KeraxError as e:
            raise self._error(type(e), e.message) from None
        policy = mixed_precision.effective(self, dtype_policy)
        return {} if policy is None else {"dtype_policy": policy}

    def _run_child(self, name: str, layer: Layer, params: dict, new_state: dict, calls: dict, x: Any,
                   mask: Any, rng: Any, training: bool, extra: dict) -> tuple[Any, Any]:
        """One child's ``apply_masked``: its key (a layer called again gets another), its new
        state written into ``new_state``; returns its output and mask."""
        k = calls.get(name, 0)
        calls[name] = k + 1
        key = derive(rng, name)
        if k:
            key = derive(key, f"call{k}")
        with naming.scope(name, layer):
            x, s, mask = layer.apply_masked(params.get(name, {}), new_state.get(name, {}), x, mask, rng=key,
                                            training=training, **extra)
        if s:
            new_state[name] = s
        return x, mask

    def penalty(self, params: dict) -> Any:
        return penalty_sum(zip(self.names, self.layers), params)
