"""Helpers for the held weights: Keras-ordered flat lists and checked assignment.

The flat lists present stacked weights (a ``Repeat``'s ``block_*``) entry by entry, through
the per-index view of :mod:`kerax.core.scan`: paths name ``block_0``, ``block_1``, ...
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from kerax import errors
from kerax.core.layer import AUX_LOSS
from kerax.core.scan import restack, unstack
from kerax.core.specs import path_str


def ordered_paths(params: dict, state: dict) -> list[tuple[str, tuple[str, ...]]]:
    """``("params"|"state", path)`` in Keras order: layer by layer, each layer's params
    (creation order) before its state. Call on the dicts ``init`` built, before any JAX
    transformation re-sorts their keys. Stacked weights count as their entries."""
    out: list = []
    params, state = unstack(params, abstract=True), unstack(state, abstract=True)

    def walk(p: Any, s: Any, prefix: tuple) -> None:
        p = p if isinstance(p, dict) else {}
        s = s if isinstance(s, dict) else {}
        keys = list(p) + [k for k in s if k not in p]
        leaf_layer = any(not isinstance(v, dict) for k, v in [*p.items(), *s.items()] if k != AUX_LOSS)
        if leaf_layer:
            out.extend(("params", prefix + (k,)) for k in p)
            out.extend(("state", prefix + (k,)) for k in s if k != AUX_LOSS)
            return
        for k in keys:
            walk(p.get(k), s.get(k), prefix + (k,))

    walk(params, state, ())
    return out


def _get(tree: Any, path: tuple) -> Any:
    for k in path:
        tree = tree[k]
    return tree


def gather(params: dict, state: dict, order: list) -> list:
    trees = {"params": unstack(params), "state": unstack(state)}
    return [_get(trees[kind], path) for kind, path in order]


def scatter(params: dict, state: dict, order: list, values: list) -> tuple[dict, dict]:
    """New ``(params, state)`` with ``values`` placed in ``order``; shapes checked first."""
    import jax.numpy as jnp

    if len(values) != len(order):
        raise errors.WeightsError(
            f"set_weights expected a list of {len(order)} arrays; received {len(values)}"
        )
    trees = {"params": unstack(params), "state": unstack(state)}  # fresh dicts: safe to assign into
    for (kind, path), value in zip(order, values):
        old = _get(trees[kind], path)
        value = np.asarray(value)
        if tuple(value.shape) != tuple(old.shape):
            raise errors.WeightsError(
                f"set_weights: weight {'/'.join(path)!r} expected shape "
                f"{tuple(old.shape)}; received {tuple(value.shape)}"
            )
        _check_integer_slot(path, np.dtype(old.dtype), value)
    for (kind, path), value in zip(order, values):
        parent = _get(trees[kind], path[:-1])
        parent[path[-1]] = jnp.asarray(value, dtype=parent[path[-1]].dtype)
    return restack(trees["params"], params), restack(trees["state"], state)


def _check_integer_slot(path: tuple, dtype: np.dtype, value: np.ndarray) -> None:
    """Refuses what an integer weight (an int8 kernel of a quantized layer, a counter) cannot
    hold exactly: float values would be truncated (a float kernel becomes zeros) and
    integers outside the dtype's range would wrap around. Float weights take any numbers,
    cast as Keras does."""
    if not np.issubdtype(dtype, np.integer):
        return
    name = "/".join(path)
    if not (np.issubdtype(value.dtype, np.integer) or value.dtype == np.bool_):
        raise errors.WeightsError(
            f"set_weights: weight {name!r} expected integer values ({dtype}); received "
            f"{value.dtype} values (a float kernel for a quantized layer? quantize the float "
            f"model with kx.quantize instead)"
        )
    info = np.iinfo(dtype)
    if value.size and (value.min() < info.min or value.max() > info.max):
        raise errors.WeightsError(
            f"set_weights: weight {name!r} expected {dtype} values in [{info.min}, {info.max}]; "
            f"received values in [{value.min()}, {value.max()}]"
        )


def check_tree(what: str, expected: Any, received: Any) -> None:
    """Refuses a weights tree whose structure, shapes or dtypes differ from ``expected``."""
    e_paths = dict(jax.tree_util.tree_flatten_with_path(expected)[0])
    try:
        r_flat = jax.tree_util.tree_flatten_with_path(received)[0]
    except Exception:  # pragma: no cover - not a pytree at all
        raise errors.WeightsError(f"model.{what} must be a nested dict of arrays") from None
    r_paths = dict(r_flat)
    fmt = path_str
    missing = sorted(fmt(p) for p in e_paths if p not in r_paths)
    unexpected = sorted(fmt(p) for p in r_paths if p not in e_paths)
    if missing or unexpected:
        raise errors.WeightsError(
            f"model.{what} has the wrong structure: missing {missing}, unexpected {unexpected}"
        )
    for p, e in e_paths.items():
        r = r_paths[p]
        if tuple(np.shape(r)) != tuple(e.shape):
            raise errors.WeightsError(
                f"model.{what}: {fmt(p)!r} expected shape {tuple(e.shape)}; received "
                f"{tuple(np.shape(r))}"
            )
        r_dtype = getattr(r, "dtype", None) or np.asarray(r).dtype
        if r_dtype != e.dtype:
            raise errors.WeightsError(
                f"model.{what}: {fmt(p)!r} expected dtype {e.dtype}; received {r_dtype}"
            )


def count(tree: Any) -> int:
    """Number of weight values (``aux_loss`` entries in state are not weights)."""
    return int(sum(np.prod(np.shape(a), dtype=np.int64) for a in weight_leaves(tree)))


def weight_leaves(tree: Any) -> list:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [v for p, v in flat if not p or getattr(p[-1], "key", None) != AUX_LOSS]
