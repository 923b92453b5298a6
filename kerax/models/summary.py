"""``model.summary()``: the Keras-style table of layers, output shapes and parameter counts."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from kerax import errors
from kerax.core.symbolic import InputLayer, ShapeSpec, SymbolicTensor, infer_output
from kerax.models import weights


def _fmt_out(tree: Any) -> str:
    leaves = jax.tree.leaves(tree, is_leaf=lambda t: isinstance(t, (ShapeSpec, SymbolicTensor)))
    shapes = [errors.fmt_shape(t.shape) for t in leaves]
    return shapes[0] if len(shapes) == 1 and not isinstance(tree, (list, dict)) else "[" + ", ".join(shapes) + "]"


def _nbytes(tree: Any) -> int:
    return int(sum(np.prod(a.shape, dtype=np.int64) * a.dtype.itemsize for a in weights.weight_leaves(tree)))


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.2f} {unit}"
        n /= 1024
    return ""  # pragma: no cover


def _rows_sequential(model: Any) -> list[list[str]]:
    spec = getattr(model, "_input_spec", None)
    if spec is None:
        spec = model.core.declared_input_shape
        spec = None if spec is None else ShapeSpec(spec, getattr(model, "_input_dtype", np.float32))
    if spec is None:
        raise errors.NotBuiltError(
            "summary() needs the input shape: call model.build(input_shape), fit the model, "
            "or start it with kx.Input(shape)"
        )
    rows, seen = [], set()
    for name, layer in zip(model.core.names, model.layers):
        spec = infer_output(layer, spec)
        count = 0 if name in seen else weights.count(model.params.get(name, {})) + weights.count(
            model.state.get(name, {})
        )
        seen.add(name)
        rows.append([f"{name} ({type(layer).__name__})", _fmt_out(spec), f"{count:,}"])
    return rows


def _rows_functional(model: Any) -> list[list[str]]:
    graph = model.core
    first: dict[int, Any] = {}
    inbound: dict[int, list[str]] = {}
    calls: dict[int, int] = {}
    index: dict[int, int] = {}
    for t in jax.tree.leaves(graph.inputs, is_leaf=lambda t: isinstance(t, SymbolicTensor)):
        first[id(t.node.layer)] = t
        index[id(t.node)] = 0
    for node in graph._nodes:
        lid = id(node.layer)
        index[id(node)] = calls.get(lid, 0)
        calls[lid] = calls.get(lid, 0) + 1
        first.setdefault(lid, node.outputs)
        srcs = jax.tree.leaves(node.inputs, is_leaf=lambda t: isinstance(t, SymbolicTensor))
        inbound.setdefault(lid, []).extend(
            f"{graph.layer_name(t.node.layer)}[{index[id(t.node)]}][{t.index}]" for t in srcs
        )
    rows = []
    for layer in graph.layers:
        name = graph.layer_name(layer)
        count = weights.count(model.params.get(name, {})) + weights.count(model.state.get(name, {}))
        conn = inbound.get(id(layer), []) if not isinstance(layer, InputLayer) else []
        rows.append([f"{name} ({type(layer).__name__})", _fmt_out(first[id(layer)]), f"{count:,}",
                     ", ".join(conn) or "-"])
    return rows


def summary_text(model: Any, line_length: int | None = None) -> str:
    """The summary table of a built (or buildable) model as one string."""
    from kerax.models.sequential import Sequential

    sequential = isinstance(model, Sequential)
    model._ensure_built()
    rows = _rows_sequential(model) if sequential else _rows_functional(model)
    header = ["Layer (type)", "Output Shape", "Param #"] + ([] if sequential else ["Connected to"])
    widths = [30, 26, 12] if sequential else [30, 22, 12, 26]
    widths = [max(w, *(len(r[i]) + 2 for r in rows)) for i, w in enumerate(widths)]
    if line_length:
        widths[-1] = max(widths[-1], line_length - sum(widths[:-1]))
    total = sum(widths)
    line = lambda cells: "".join(f" {c}".ljust(w) for c, w in zip(cells, widths)).rstrip()
    trainable = weights.count(model.params)
    frozen = weights.count(model.state)
    out = [
        f'Model: "{model.name or model.default_name()}"',
        "_" * total,
        line(header),
        "=" * total,
        *(line(r) for r in rows),
        "=" * total,
        f"Total params: {trainable + frozen:,} ({_size(_nbytes(model.params) + _nbytes(model.state))})",
        f"Trainable params: {trainable:,} ({_size(_nbytes(model.params))})",
        f"Non-trainable params: {frozen:,} ({_size(_nbytes(model.state))})",
        "_" * total,
    ]
    return "\n".join(out)
