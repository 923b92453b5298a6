"""Deterministic per-layer random keys, derived from one key by name.

A child's key is ``fold_in(rng, crc32(name))``: it depends only on the parent key and the
child's name, never on a global counter or on how many layers came before, so adding a
layer elsewhere leaves every other layer's initial weights unchanged.
"""

from __future__ import annotations

import zlib

import jax


def derive(rng: jax.Array | None, name: str) -> jax.Array | None:
    """The key for the child ``name`` of ``rng`` (``None`` stays ``None``)."""
    if rng is None:
        return None
    return jax.random.fold_in(rng, zlib.crc32(name.encode("utf-8")))


def as_key(rng: jax.Array | int | None) -> jax.Array | None:
    """Accepts a typed key, a raw ``uint32[2]`` key, or an int seed."""
    if rng is None:
        return None
    if isinstance(rng, int):
        return jax.random.key(rng)
    return rng
