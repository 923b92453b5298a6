"""Symbolic tensors: calling layers on ``kx.Input`` records a graph instead of computing.

``kx.Input(shape=(4,))`` returns a :class:`SymbolicTensor` of shape ``(None, 4)``. Calling
a layer on symbolic tensors (or a list or dict of them) records a :class:`Node` and returns
symbolic outputs whose shapes come from abstract evaluation (``jax.eval_shape``); nothing
is computed and no weights are made. ``kx.Model(inputs, outputs)`` then turns the recorded
nodes into a graph.

Unknown dimensions (``None``) are inferred by evaluating twice with two different
placeholder sizes: an output dimension that changes with the placeholder is unknown.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import jax
import jax.numpy as jnp

from kerax import errors
from kerax.core.layer import Layer

# Sizes that stand in for unknown dims during abstract evaluation (nothing is allocated).
# Highly divisible, so reshapes and strides work; rare, so error messages can show None.
_PLACEHOLDERS = (5040, 10080)


@dataclasses.dataclass(frozen=True, eq=False)
class SymbolicTensor:
    """A placeholder for an array in a functional graph: shape (batch first) and dtype.

    ``node`` is the call that produced it and ``index`` its position among that call's
    flattened outputs.
    """

    shape: tuple
    dtype: Any
    node: "Node"
    index: int = 0

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def name(self) -> str | None:
        return self.node.layer.name if isinstance(self.node.layer, InputLayer) else None

    def __repr__(self) -> str:
        return (
            f"<SymbolicTensor shape={errors.fmt_shape(self.shape)} dtype={jnp.dtype(self.dtype).name} "
            f"from {type(self.node.layer).__name__}>"
        )

    # Arithmetic on symbolic tensors is a common Keras habit; point to the layers.
    def _no_op(self, *_: Any) -> Any:
        raise TypeError(
            "symbolic tensors do not support Python operators; use merge layers such as "
            "layers.Add()([a, b]) or layers.Lambda(fn)"
        )

    __add__ = __sub__ = __mul__ = __truediv__ = __matmul__ = __getitem__ = _no_op


@dataclasses.dataclass(frozen=True)
class ShapeSpec:
    """A shape with ``None`` for unknown dims, and a dtype (a pytree leaf)."""

    shape: tuple
    dtype: Any


@dataclasses.dataclass(frozen=True, eq=False)
class Node:
    """One call of ``layer`` on ``inputs`` (a pytree of SymbolicTensors)."""

    layer: Layer
    inputs: Any
    outputs: Any = None


class InputLayer(Layer):
    """The source of a functional graph's input: holds its shape (batch axis first)."""

    shape: tuple = ()
    input_dtype: str = "float32"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._set("shape", tuple(None if d is None else int(d) for d in self.shape))
        self._set("input_dtype", jnp.dtype(self.input_dtype).name)

    def init(self, rng, x):
        return {}, {}

    def apply(self, params, state, x, *, rng=None, training=False):
        return x, state


def Input(
    shape: tuple | list | int | None = None,
    dtype: Any = "float32",
    name: str | None = None,
    batch_size: int | None = None,
    batch_shape: tuple | None = None,
) -> SymbolicTensor:
    """A symbolic input of shape ``(batch_size, *shape)``; ``None`` marks unknown dims.

    Example: ``image = kx.Input(shape=(28, 28, 1), name="image")``.
    """
    if batch_shape is None:
        if shape is None:
            raise errors.ConfigError("Input needs shape= (without the batch axis) or batch_shape=")
        if isinstance(shape, int):
            shape = (shape,)
        batch_shape = (batch_size, *shape)
    try:
        batch_shape = tuple(None if d is None else int(d) for d in batch_shape)
        dtype = jnp.dtype(dtype).name
    except (TypeError, ValueError):
        raise errors.ConfigError(
            f"Input: shape must be a tuple of ints or None and dtype a dtype name; "
            f"received shape={shape!r}, dtype={dtype!r}"
        ) from None
    layer = InputLayer(shape=batch_shape, input_dtype=dtype, name=name)
    node = Node(layer, None)
    tensor = SymbolicTensor(batch_shape, jnp.dtype(dtype), node, 0)
    object.__setattr__(node, "outputs", tensor)
    return tensor


def is_symbolic(x: Any) -> bool:
    return any(isinstance(t, SymbolicTensor) for t in jax.tree.leaves(x, is_leaf=_leaf))


def _leaf(x: Any) -> bool:
    return isinstance(x, SymbolicTensor)


def concrete_specs(tree: Any, fill: int) -> Any:
    """Symbolic tensors -> ShapeDtypeStructs with every unknown dim set to ``fill``."""
    return jax.tree.map(
        lambda t: jax.ShapeDtypeStruct(tuple(fill if d is None else d for d in t.shape), t.dtype),
        tree,
        is_leaf=_leaf,
    )


def infer_output(layer: Layer, in_tree: Any) -> Any:
    """Output specs ``(shape with None, dtype)`` of ``layer`` on symbolic/declared inputs.

    ``in_tree`` is a pytree of objects with ``shape`` (None allowed) and ``dtype``.
    Returns a pytree of :class:`ShapeSpec` (a leaf: shape with None, dtype).
    """

    def run(fill: int) -> Any:
        specs = concrete_specs(in_tree, fill)

        def f(rng: jax.Array, x: Any) -> Any:
            params, state = layer.init(rng, x)
            return layer.apply(params, state, x)[0]

        try:
            return jax.eval_shape(f, jax.random.key(0), specs)
        except errors.KeraxError as e:  # show unknown dims as None, as declared
            e.message = re.sub(rf"(?<=[(\s,]){fill}(?=[,)])", "None", e.message)
            raise

    a, b = run(_PLACEHOLDERS[0]), run(_PLACEHOLDERS[1])
    return jax.tree.map(
        lambda s, t: ShapeSpec(tuple(d if d == e else None for d, e in zip(s.shape, t.shape)), s.dtype),
        a,
        b,
    )


def call_layer(layer: Layer, x: Any) -> Any:
    """``layer(x)`` on symbolic tensors: records a node, returns symbolic outputs."""
    if not is_symbolic(x):
        raise TypeError(
            f"{type(layer).__name__} was called on {type(x).__name__}. Layers are pure: "
            "use `params, state = layer.init(rng, x)` and `y, state = layer.apply(params, "
            "state, x)`. Calling a layer is for symbolic tensors from kx.Input, to build "
            "a functional model."
        )
    leaves = jax.tree.leaves(x, is_leaf=_leaf)
    if not all(isinstance(t, SymbolicTensor) for t in leaves):
        raise TypeError(
            f"{type(layer).__name__}: a call on symbolic tensors cannot mix them with "
            f"arrays or other values; received leaves of types "
            f"{sorted({type(t).__name__ for t in leaves})}"
        )
    if isinstance(x, tuple):
        x = list(x)
    out_specs = infer_output(layer, x)
    node = Node(layer, x)
    flat, treedef = jax.tree.flatten(out_specs)
    outputs = [SymbolicTensor(s.shape, jnp.dtype(s.dtype), node, i) for i, s in enumerate(flat)]
    out = jax.tree.unflatten(treedef, outputs)
    object.__setattr__(node, "outputs", out)
    return out
