"""Deterministic names for the children of a container, Keras style.

The first unnamed ``Dense`` is ``"dense"``, the next ``"dense_1"``; a user's ``name=``
wins. Names are assigned per container, from its own children only, so building the same
model twice gives the same names (no global counter).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

from kerax import errors


def assign_names(layers: Sequence[object], container: str) -> tuple[str, ...]:
    """Names for ``layers`` (distinct objects); raises LayerNameError on duplicates."""
    taken: dict[str, object] = {}
    for layer in layers:
        if layer.name is not None:
            if layer.name in taken:
                raise errors.LayerNameError(
                    f"two layers are named {layer.name!r}: "
                    f"{taken[layer.name]!r} and {layer!r}. Layer names must be unique "
                    "within a model; pass a different name=."
                )
            taken[layer.name] = layer
    names = []
    counts: dict[str, int] = {}
    for layer in layers:
        if layer.name is not None:
            names.append(layer.name)
            continue
        base = layer.default_name()
        n = counts.get(base, 0)
        candidate = base if n == 0 else f"{base}_{n}"
        while candidate in taken:
            n += 1
            candidate = f"{base}_{n}"
        counts[base] = n + 1
        taken[candidate] = layer
        names.append(candidate)
    return tuple(names)


@contextlib.contextmanager
def scope(name: str, layer: object) -> Iterator[None]:
    """Adds ``name`` to the layer path of any kerax error raised inside."""
    try:
        yield
    except errors.KeraxError as e:
        e.add_context(name, type(layer).__name__)
        raise
