"""``Packed``: a pytree of small arrays held as one flat vector per dtype.

A compiled call pays for every array it takes and returns (on XLA:CPU about 1 us each for
a tiny step), and every small array it updates is one more kernel. ``fit``'s metric
state (loss total and count, each metric's accumulators, the non-finite counters) is
many scalars: packed, it crosses the ``jit`` boundary as one vector per dtype, and the
step's updates of it fuse into one kernel.

    >>> p = Packed.pack({"loss": {"total": jnp.zeros(()), "count": jnp.zeros(())},
    ...                  "hits": jnp.zeros((3,), jnp.int32)})
    >>> [v.shape for v in p.vectors]       # float32 first (first seen), then int32
    [(2,), (3,)]
    >>> p["loss"]["count"].shape
    ()

Leading axes are kept: a ``Packed`` whose vectors are ``(devices, n)`` (replicated for
``pmap``) or ``(members, n)`` unpacks to leaves with that leading axis. Unpacking works
on device arrays (inside or outside ``jit``) and on NumPy arrays (after ``jax.device_get``,
with no device work).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


@jax.tree_util.register_pytree_node_class
class Packed:
    """``vectors``: one array per dtype, ``(..., n)``; ``layout`` (static): the tree's
    structure and, per leaf, ``(vector index, offset, shape)``."""

    __slots__ = ("vectors", "layout")

    def __init__(self, vectors: tuple, layout: tuple) -> None:
        self.vectors, self.layout = tuple(vectors), layout

    @classmethod
    def pack(cls, tree: Any) -> "Packed":
        """Packs ``tree`` (leaves without leading axes); traceable."""
        leaves, treedef = jax.tree.flatten(tree)
        dtypes: list = []
        parts: list[list] = []
        slots = []
        for leaf in leaves:
            leaf = jnp.asarray(leaf)
            if leaf.dtype not in dtypes:
                dtypes.append(leaf.dtype)
                parts.append([])
            g = dtypes.index(leaf.dtype)
            offset = sum(p.size for p in parts[g])
            parts[g].append(jnp.ravel(leaf))
            slots.append((g, offset, tuple(leaf.shape)))
        vectors = tuple(jnp.concatenate(p) if len(p) > 1 else p[0] for p in parts)
        return cls(vectors, (treedef, tuple(slots)))

    def unpack(self) -> Any:
        """The tree, each leaf a slice of its vector (NumPy in, NumPy out)."""
        treedef, slots = self.layout
        leaves = []
        for g, offset, shape in slots:
            v = self.vectors[g]
            leaves.append(v[..., offset:offset + math.prod(shape)].reshape(v.shape[:-1] + shape))
        return jax.tree.unflatten(treedef, leaves)

    def __getitem__(self, key: Any) -> Any:
        return self.unpack()[key]

    def host(self) -> "Packed":
        """A copy whose vectors are NumPy arrays (one transfer per vector)."""
        return Packed(tuple(np.asarray(v) for v in jax.device_get(self.vectors)), self.layout)

    def tree_flatten(self) -> tuple[tuple, tuple]:
        return self.vectors, self.layout

    @classmethod
    def tree_unflatten(cls, layout: tuple, vectors: Any) -> "Packed":
        return cls(tuple(vectors), layout)

    def __repr__(self) -> str:
        return f"Packed({[(str(v.dtype), v.shape) for v in self.vectors]})"


def unpacked(tree: Any) -> Any:
    """``tree.unpack()`` for a ``Packed``; anything else as it is."""
    return tree.unpack() if isinstance(tree, Packed) else tree
