"""Which models DP-SGD can train: a walk over every sub-layer, refusing BatchNormalization.

Shared by ``compile(dp=...)`` / ``make_train_step(dp=...)`` (through
:func:`kerax.privacy.dpsgd.check_config`) and :func:`kerax.privacy.per_example_grads`, so
both refuse the same models with the same error.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from kerax import errors
from kerax.core.layer import Layer, snake_case


def _own_name(layer: Layer) -> str:
    return layer.name or snake_case(type(layer).__name__)


def _layers_in(value: Any) -> list[Layer]:
    """The layers held in a field value: the value itself, or inside (nested) tuples, lists
    and dicts (a custom layer may keep its sub-layers in any of them)."""
    out, todo = [], [value]
    while todo:
        item = todo.pop(0)
        if isinstance(item, Layer):
            out.append(item)
        elif isinstance(item, (list, tuple)):
            todo.extend(item)
        elif isinstance(item, dict):
            todo.extend(item.values())
    return out


def _children(layer: Any) -> list[tuple[str, Any]]:
    """A layer's sub-layers with their names (containers, facades, wrappers, custom layers)."""
    core = getattr(layer, "core", None)
    if isinstance(core, Layer) and core is not layer:
        return [("", core)]
    out = []
    kids = getattr(layer, "layers", None)
    if isinstance(kids, (list, tuple)):
        namer = getattr(layer, "layer_name", None)
        names = getattr(layer, "names", None)
        for i, child in enumerate(kids):
            if callable(namer):
                out.append((namer(child), child))
            elif isinstance(names, tuple) and len(names) == len(kids):
                out.append((names[i], child))
    if dataclasses.is_dataclass(layer):
        for f in dataclasses.fields(layer):
            # Wrappers (TimeDistributed, Bidirectional) hold a Layer; custom layers may hold
            # tuples, lists or dicts of them. Layers seen twice are skipped by the walk.
            out.extend((_own_name(child), child) for child in _layers_in(getattr(layer, f.name, None)))
    return out


def check_model(model: Any) -> None:
    """Refuses models whose layers mix the examples of a batch (BatchNormalization).

    Every sub-layer is visited, however it is nested: containers, wrappers, and layers held
    in the fields of a custom layer (directly or in tuples, lists and dicts).

    Raises:
      ConfigError: naming the first such layer and what to use instead.
    """
    from kerax.layers.normalization import BatchNormalization

    todo, seen = [("", model)], set()
    while todo:
        path, layer = todo.pop(0)
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, BatchNormalization):
            raise errors.ConfigError(
                f"DP-SGD cannot train layer {path!r} (BatchNormalization): its batch statistics "
                "mix the examples of a batch, so one example's gradient is not defined and the "
                "moving statistics would leak data; use GroupNormalization or LayerNormalization")
        todo.extend((f"{path}/{name}" if path and name else name or path, child) for name, child in _children(layer))
