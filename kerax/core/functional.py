"""``Graph``: the functional combinator, a DAG of layer calls between symbolic tensors.

Built from ``kx.Input`` tensors and the outputs of layer calls on them. Inputs and outputs
may each be one tensor, a list, or a dict; ``apply`` takes and returns the same structure.
A layer called several times shares one set of weights; a graph is a layer, so graphs nest.

Every entry point checks its inputs against the declared ones: the structure (count,
names) and each array's shape, so inputs in the wrong order are refused, never silently
computed on.
"""

from __future__ import annotations

from typing import Any

import jax

from kerax import errors, mixed_precision
from kerax.core import naming, specs
from kerax.core.grouped_init import init_child
from kerax.core.layer import Layer
from kerax.core.rng import derive, derive_many
from kerax.core.sequential import output_spec, unique
from kerax.core.symbolic import InputLayer, Node, SymbolicTensor, _leaf


def _structure(x: Any, what: str) -> Any:
    if isinstance(x, SymbolicTensor):
        return x
    if isinstance(x, (list, tuple)):
        return list(x)
    if isinstance(x, dict):
        return dict(x)
    raise errors.GraphError(
        f"Graph {what} must be a symbolic tensor, a list or a dict of them; "
        f"received {type(x).__name__}"
    )


def _tensors(tree: Any) -> list[SymbolicTensor]:
    leaves = jax.tree.leaves(tree, is_leaf=_leaf)
    for t in leaves:
        if not isinstance(t, SymbolicTensor):
            raise errors.GraphError(
                f"expected symbolic tensors (from kx.Input and layer calls); received "
                f"{type(t).__name__}"
            )
    return leaves


def topological_nodes(outputs: Any) -> list[Node]:
    """The nodes that ``outputs`` depend on, each after the nodes it reads from."""
    order: list[Node] = []
    done: set[int] = set()
    active: set[int] = set()
    for out in _tensors(outputs):
        stack = [(out.node, False)]
        while stack:
            node, expanded = stack.pop()
            if id(node) in done:
                continue
            if expanded:
                active.discard(id(node))
                done.add(id(node))
                order.append(node)
                continue
            if id(node) in active:
                raise errors.GraphError(
                    f"the graph has a cycle through layer {type(node.layer).__name__}"
                )
            active.add(id(node))
            stack.append((node, True))
            if node.inputs is not None:
                for t in reversed(_tensors(node.inputs)):
                    if id(t.node) not in done:
                        stack.append((t.node, False))
    return order


class Graph(Layer):
    """A functional model's pure core: ``inputs`` -> ``outputs`` through layer calls.

    Input shape: as declared by the ``kx.Input`` tensors. Output shape: ``outputs``.
    ``dtype_policy`` applies to the layers that set none (:mod:`kerax.mixed_precision`).
    """

    inputs: Any = None
    outputs: Any = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self._set("inputs", _structure(self.inputs, "inputs"))
        self._set("outputs", _structure(self.outputs, "outputs"))
        declared = _tensors(self.inputs)
        if not declared:
            raise errors.GraphError("a functional model needs at least one input")
        for t in declared:
            if not isinstance(t.node.layer, InputLayer):
                raise errors.GraphError(
                    f"model inputs must be tensors made by kx.Input; received a tensor "
                    f"produced by {type(t.node.layer).__name__}"
                )
        if len({id(t) for t in declared}) != len(declared):
            raise errors.GraphError("the same kx.Input is listed twice among the inputs")
        nodes = topological_nodes(self.outputs)
        sources = [n for n in nodes if isinstance(n.layer, InputLayer)]
        declared_ids = {id(t.node) for t in declared}
        for n in sources:
            if id(n) not in declared_ids:
                raise errors.GraphError(
                    f"the outputs depend on an Input (name={n.layer.name!r}, shape "
                    f"{errors.fmt_shape(n.layer.shape)}) that is not among the model's "
                    "inputs: a dangling tensor; add it to inputs="
                )
        used = {id(n) for n in sources}
        layers = unique([t.node.layer for t in declared] + [n.layer for n in nodes])
        names = naming.assign_names(layers, f"{type(self).__name__} {self.name or ''}".strip())
        by_id = {id(layer): name for layer, name in zip(layers, names)}
        for t in declared:
            if id(t.node) not in used:
                raise errors.GraphError(
                    f"the outputs do not depend on input {by_id[id(t.node.layer)]!r}; "
                    "remove it from inputs= or use it"
                )
        self._set("_nodes", tuple(n for n in nodes if not isinstance(n.layer, InputLayer)))
        self._set("_by_id", by_id)
        self._set("_layers", tuple(layers))

    # -- structure ---------------------------------------------------------------------

    @property
    def layers(self) -> tuple[Layer, ...]:
        """Distinct layers (inputs first, then in order of first call)."""
        return self._layers

    def layer_name(self, layer: Layer) -> str:
        return self._by_id[id(layer)]

    @property
    def input_names(self) -> list[str]:
        return [self.layer_name(t.node.layer) for t in _tensors(self.inputs)]

    def _flatten_inputs(self, x: Any) -> list:
        """The given inputs as a list in declared order; InputStructureError otherwise."""
        names = self.input_names
        declared = self.inputs
        expected = f"expected {len(names)} input{'s' if len(names) > 1 else ''} {names}"
        if isinstance(x, dict):
            keys = list(declared) if isinstance(declared, dict) else names
            missing = [k for k in keys if k not in x]
            unknown = [k for k in x if k not in keys]
            if missing or unknown:
                raise errors.InputStructureError(
                    f"{expected}; received a dict with keys {list(x)}"
                    + (f"; missing {missing}" if missing else "")
                    + (f"; unknown {unknown}" if unknown else "")
                )
            return [x[k] for k in keys]
        if isinstance(declared, dict):
            raise errors.InputStructureError(
                f"{expected} as a dict keyed {list(declared)}; received "
                f"{type(x).__name__}"
            )
        if isinstance(x, (list, tuple)):
            if len(x) != len(names):
                raise errors.InputStructureError(
                    f"{expected}; received {len(x)} array{'s' if len(x) != 1 else ''}"
                )
            return list(x)
        if len(names) != 1:
            raise errors.InputStructureError(
                f"{expected}; received 1 array of shape {errors.fmt_shape(getattr(x, 'shape', None))}"
            )
        return [x]

    def _bind_inputs(self, x: Any) -> dict[int, Any]:
        try:
            flat = self._flatten_inputs(x)
            env = {}
            for t, name, value in zip(_tensors(self.inputs), self.input_names, flat):
                if not specs.is_arraylike(value):
                    raise errors.InputStructureError(
                        f"input {name!r} must be an array; received {type(value).__name__}"
                    )
                specs.check_input(t.shape, tuple(value.shape), f"input {name!r}")
                env[id(t)] = value
            return env
        except errors.KeraxError as e:
            if e.layer_class is None:
                raise self._error(type(e), e.message) from None
            raise

    def _read(self, env: dict, tree: Any) -> Any:
        return jax.tree.map(lambda t: env[id(t)], tree, is_leaf=_leaf)

    def _write(self, env: dict, node: Node, value: Any) -> None:
        for t, v in zip(_tensors(node.outputs), jax.tree.leaves(value)):
            env[id(t)] = v

    # -- the protocol ------------------------------------------------------------------

    def init(self, rng: jax.Array, x: Any) -> tuple[dict, dict]:
        env = self._bind_inputs(specs.to_spec(x))
        params: dict = {}
        state: dict = {}
        initialised: set[str] = set()
        names = list(dict.fromkeys(self.layer_name(node.layer) for node in self._nodes))
        keys = derive_many(rng, names)
        index = {name: i for i, name in enumerate(names)}
        for node in self._nodes:
            name = self.layer_name(node.layer)
            args = self._read(env, node.inputs)
            with naming.scope(name, node.layer):
                if name not in initialised:
                    initialised.add(name)
                    key = None if keys is None else keys[index[name]]
                    p, s = init_child(node.layer, key, args)
                    p = mixed_precision.init_cast(node.layer, self.dtype_policy, p)
                    if p:
                        params[name] = p
                    if s:
                        state[name] = s
                out = output_spec(node.layer, params.get(name, {}), state.get(name, {}), args)
            self._write(env, node, out)
        return params, state

    uses_mask = True

    def apply(self, params, state, x, *, rng=None, training=False, mask=None):
        y, new_state, _ = self.apply_masked(params, state, x, mask, rng=rng, training=training)
        return y, new_state

    def apply_masked(self, params, state, x, mask, *, rng=None, training=False, dtype_policy=None):
        env = self._bind_inputs(x)
        policy = mixed_precision.effective(self, dtype_policy)
        extra = {} if policy is None else {"dtype_policy": policy}
        masks: dict[int, Any] = {}
        if mask is not None:
            for t, m in zip(_tensors(self.inputs), self._flatten_inputs(mask)):
                masks[id(t)] = m
        new_state = dict(state)
        calls: dict[str, int] = {}
        for node in self._nodes:
            name = self.layer_name(node.layer)
            k = calls.get(name, 0)
            calls[name] = k + 1
            key = derive(rng, name)
            if k:
                key = derive(key, f"call{k}")
            in_mask = jax.tree.map(lambda t: masks.get(id(t)), node.inputs, is_leaf=_leaf)
            if all(m is None for m in jax.tree.leaves(in_mask, is_leaf=lambda m: m is None)):
                in_mask = None
            with naming.scope(name, node.layer):
                y, s, out_mask = node.layer.apply_masked(
                    params.get(name, {}),
                    new_state.get(name, {}),
                    self._read(env, node.inputs),
                    in_mask,
                    rng=key,
                    training=training,
                    **extra,
                )
            if s:
                new_state[name] = s
            self._write(env, node, y)
            outs = _tensors(node.outputs)
            if out_mask is not None:
                if isinstance(out_mask, (list, tuple)) and len(out_mask) == len(outs):
                    masks.update({id(t): m for t, m in zip(outs, out_mask)})
                else:
                    masks[id(outs[0])] = out_mask
        out_masks = jax.tree.map(lambda t: masks.get(id(t)), self.outputs, is_leaf=_leaf)
        return self._read(env, self.outputs), new_state, out_masks

    def penalty(self, params: dict) -> Any:
        from kerax.core.sequential import penalty_sum

        return penalty_sum(((self.layer_name(l), l) for l in self.layers), params)

    # -- config ------------------------------------------------------------------------

    def _ref(self, t: SymbolicTensor, node_index: dict[int, int]) -> dict:
        return {"ref": [self.layer_name(t.node.layer), node_index[id(t.node)], t.index]}

    def get_config(self) -> dict:
        from kerax.core import config

        node_index: dict[int, int] = {}
        counts: dict[str, int] = {}
        for n in [t.node for t in _tensors(self.inputs)] + list(self._nodes):
            name = self.layer_name(n.layer)
            node_index[id(n)] = counts.get(name, 0)
            counts[name] = counts.get(name, 0) + 1
        refs = lambda tree: jax.tree.map(lambda t: self._ref(t, node_index), tree, is_leaf=_leaf)
        extra = {} if self.dtype_policy is None else {"dtype_policy": self.dtype_policy}
        return {
            "name": self.name,
            **extra,
            "layers": [
                {"name": self.layer_name(layer), **config.to_json(layer)} for layer in self.layers
            ],
            "nodes": [
                {"layer": self.layer_name(n.layer), "inputs": refs(n.inputs)} for n in self._nodes
            ],
            "inputs": refs(self.inputs),
            "outputs": refs(self.outputs),
        }

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None) -> "Graph":
        from kerax.core import rebuild

        inputs, outputs, names = rebuild.graph_from_config(config, custom_objects)
        graph = cls(inputs=inputs, outputs=outputs, name=config.get("name"),
                    dtype_policy=config.get("dtype_policy"))
        rebuild.rename(graph, names)
        return graph
