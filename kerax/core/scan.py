"""Stacked layers: the per-index view of stacked weights, and scanning runs of identical layers.

**Stacked weights.** A layer that runs ``n`` copies of a block with ``lax.scan``
(:class:`kerax.layers.Repeat`) keeps the copies' weights stacked on a leading axis of size
``n``, under a key ending in ``_*``::

    params["repeat"] == {"block_*": {"dense": {"kernel": (n, 16, 16), "bias": (n, 16)}}}

The key says what the subtree holds: entries ``block_0 .. block_{n-1}``, stacked. So the
tree describes itself, and every consumer of named weights (weight files, model files,
``get_weights`` / ``set_weights``, Keras h5 import) makes one call, :func:`unstack`, to see
``repeat/block_0/dense/kernel (16, 16)``, ... and one, :func:`restack`, to come back; none
of them needs to know which layer made the tree. Stacks nest (a ``Repeat`` in a
``Repeat``): the view unstacks every level.

**Scanning runs of layers.** :func:`scan_layers` gives a model whose ``apply`` runs every
run of two or more identical consecutive layers of a ``Sequential`` (same class, same
config apart from the name, same weight shapes, output shaped as the input) with one
``lax.scan`` over their weights, stacked inside the traced function. The params tree stays
as it is (one entry per layer), and the outputs, new state and gradients are those of the
unrolled chain (up to float rounding); only the compiled program is smaller. (On XLA:CPU
the stacking inside the step makes compiles slower, not faster: docs/performance.md.)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from kerax import errors
from kerax.core import naming
from kerax.core.layer import Layer, config_signature
from kerax.core.rng import derive_many
from kerax.core.sequential import Chain

STACK_SUFFIX = "_*"


# -- the stacked-weights convention -----------------------------------------------------------


def stacked_key(base: str) -> str:
    """The key of a stack of entries ``<base>_0 .. <base>_{n-1}``: ``"<base>_*"``."""
    return base + STACK_SUFFIX


def is_stacked(key: Any) -> bool:
    return isinstance(key, str) and key.endswith(STACK_SUFFIX) and len(key) > len(STACK_SUFFIX)


def _leaves(tree: Any) -> list:
    if isinstance(tree, dict):
        return [leaf for v in tree.values() for leaf in _leaves(v)]
    return jax.tree.leaves(tree)


def stack_size(tree: Any) -> int | None:
    """The leading axis shared by the leaves of a stacked subtree (None: no leaves)."""
    leaves = _leaves(tree)
    return int(leaves[0].shape[0]) if leaves else None


def _index(tree: Any, i: int, abstract: bool) -> Any:
    """Entry ``i`` of a stacked subtree, dict order kept (specs only when ``abstract``)."""
    if isinstance(tree, dict):
        return {k: _index(v, i, abstract) for k, v in tree.items()}

    def one(a: Any) -> Any:
        if abstract or isinstance(a, jax.ShapeDtypeStruct):
            return jax.ShapeDtypeStruct(tuple(a.shape[1:]), a.dtype)
        return a[i]

    return jax.tree.map(one, tree)


def unstack(tree: Any, abstract: bool = False) -> Any:
    """The per-index view of ``tree``: each ``<base>_*`` subtree becomes its entries
    ``<base>_0 .. <base>_{n-1}`` (in place of the stacked key, dict order kept).

    Leaves are sliced (``a[i]``); with ``abstract=True``, or for ``ShapeDtypeStruct``
    leaves, they become specs of the slices (no computation, safe under tracing). A tree
    without stacked keys comes back equal (rebuilt dicts, same leaves).
    """
    if not isinstance(tree, dict):
        return tree
    out: dict = {}
    for key, value in tree.items():
        n = stack_size(value) if is_stacked(key) else None
        if n is None:
            out[key] = unstack(value, abstract)
            continue
        base = key[: -len(STACK_SUFFIX)]
        for i in range(n):
            out[f"{base}_{i}"] = unstack(_index(value, i, abstract), abstract)
    return out


def _stack(parts: list, like: Any) -> Any:
    if isinstance(like, dict):
        return {k: _stack([p[k] for p in parts], v) for k, v in like.items()}
    return jax.tree.map(lambda *a: jnp.stack([jnp.asarray(v) for v in a]), *parts)


def restack(view: Any, like: Any) -> Any:
    """Inverse of :func:`unstack`: the tree shaped as ``like`` from its per-index ``view``.

    Only ``like``'s structure is read; the values all come from ``view``.

    Raises:
      KeyError: ``view`` lacks an entry that ``like`` has.
    """
    if not isinstance(like, dict):
        return view
    out: dict = {}
    for key, ref in like.items():
        n = stack_size(ref) if is_stacked(key) else None
        if n is None:
            out[key] = restack(view[key], ref)
            continue
        base = key[: -len(STACK_SUFFIX)]
        parts = [restack(view[f"{base}_{i}"], _index(ref, i, True)) for i in range(n)]
        out[key] = _stack(parts, ref)
    return out


def index_keys(rng: jax.Array | None, base: str, n: int) -> jax.Array | None:
    """``derive(rng, f"{base}_{i}")`` for ``i < n``, stacked (the keys an unrolled chain of
    children named ``<base>_0 ..`` would give them); None stays None."""
    return derive_many(rng, [f"{base}_{i}" for i in range(n)])


def stack_trees(trees: list) -> Any:
    """Leaf-wise ``jnp.stack`` of trees of the same structure (leading axis ``len(trees)``)."""
    return jax.tree.map(lambda *a: jnp.stack(a), *trees)


# -- scanning runs of identical layers in a Sequential ------------------------------------------


def _shapes(tree: Any) -> Any:
    return jax.tree.structure(tree), [(tuple(a.shape), jnp.dtype(a.dtype)) for a in jax.tree.leaves(tree)]


def candidate_runs(chain: Any, min_run: int = 2) -> list[tuple[int, int]]:
    """``(start, stop)`` of runs of ``min_run`` or more consecutive layers of ``chain`` with
    the same class and config (names apart), each listed once in the chain (no sharing)."""
    names = list(chain.names)
    sigs = [None if names.count(n) > 1 else config_signature(layer) for n, layer in zip(names, chain.layers)]
    runs, i = [], 0
    while i < len(sigs):
        j = i + 1
        while sigs[i] is not None and j < len(sigs) and sigs[j] == sigs[i]:
            j += 1
        if j - i >= min_run:
            runs.append((i, j))
        i = j
    return runs


class _ScannedChain(Chain):
    """A :class:`Chain` that runs its ``runs`` (``(start, stop)`` index pairs) by scans."""

    runs: tuple = ()

    def _error(self, cls: type[errors.KeraxError], message: str) -> errors.KeraxError:
        # Errors read as the chain's, so the model facade names itself in them as usual.
        return cls(message, layer_class=Chain.__name__, layer_name=self.name)

    def apply_masked(self, params, state, x, mask, *, rng=None, training=False, dtype_policy=None):
        extra = self._start(x, dtype_policy)
        starts = dict(self.runs)
        names, layers = list(self.names), list(self.layers)
        new_state, calls, i = dict(state), {}, 0
        while i < len(layers):
            stop = starts.get(i)
            if stop is not None and mask is None and _run_fits(self, params, state, x, i, stop, training):
                keys = derive_many(rng, names[i:stop])
                x = _scan(params, new_state, x, names[i:stop], layers[i], keys, training, extra)
                i = stop
                continue
            if stop is not None and stop - i > 2:
                # The rest may fit where the first does not (Dense(16) x 5 after an input of
                # width 8: the first kernel is (8, 16), the others (16, 16)).
                starts[i + 1] = stop
            x, mask = self._run_child(names[i], layers[i], params, new_state, calls, x, mask, rng, training, extra)
            i += 1
        return x, new_state, mask


def _scan(params: dict, new_state: dict, x: Any, names: list, layer: Layer, keys: Any,
          training: bool, extra: dict) -> Any:
    """Runs the layers ``names`` (all like ``layer``) by one scan; writes their new states."""
    p = stack_trees([params.get(n, {}) for n in names])
    s = stack_trees([new_state.get(n, {}) for n in names])
    # The carry takes the layers' output dtype once, up front: a run kept in float32 inside a
    # mixed model must not be rounded to the input's bfloat16 between layers (the unrolled
    # run is not); casting the run's input is what its first layer does anyway.
    one = lambda t: jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), t)
    with naming.scope(names[0], layer):
        out = jax.eval_shape(
            lambda p_i, s_i, h, k: layer.apply_masked(p_i, s_i, h, None, rng=k, training=training, **extra)[0],
            one(p), one(s), jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), x),
            None if keys is None else keys[0])
    x = jax.tree.map(lambda a, o: a.astype(o.dtype) if jnp.issubdtype(o.dtype, jnp.floating) else a, x, out)

    def body(h, xs):
        p_i, s_i, k_i = xs
        y, s_new, _ = layer.apply_masked(p_i, s_i, h, None, rng=k_i, training=training, **extra)
        return jax.tree.map(lambda a, b: a.astype(b.dtype), y, h), s_new

    with naming.scope(names[0], layer):
        y, s_out = jax.lax.scan(body, x, (p, s, keys))
    for j, n in enumerate(names):
        one = jax.tree.map(lambda a: a[j], s_out)
        if one:
            new_state[n] = one
    return y


class ScannedLayers:
    """A model whose sequential core scans its runs of identical layers.

    Attribute access is forwarded to the wrapped model, but ``core`` is the scanning chain
    and ``apply`` / ``apply_masked`` are the model's own methods run on it, so step
    builders take it in place of the model. Make it with :func:`scan_layers`.
    """

    def __init__(self, model: Any, core: _ScannedChain) -> None:
        self._model, self._core = model, core

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    @property
    def core(self) -> _ScannedChain:
        return self._core

    @property
    def runs(self) -> tuple[tuple[int, int], ...]:
        """The candidate runs ``(start, stop)``; a run whose weights differ in shape, or
        whose output is not shaped as its input, is unrolled when traced."""
        return self._core.runs

    def apply(self, params, state, x, *, rng=None, training=False, mask=None):
        return type(self._model).apply(self, params, state, x, rng=rng, training=training, mask=mask)

    def apply_masked(self, params, state, x, mask, *, rng=None, training=False, **kwargs):
        return type(self._model).apply_masked(self, params, state, x, mask, rng=rng, training=training, **kwargs)


def _run_fits(chain: Any, params: dict, state: dict, x: Any, start: int, stop: int, training: bool) -> bool:
    """At trace time: the run's weights agree in shape and its first layer keeps ``x``'s
    shape (the scan's carry), so the scan computes what the chain would."""
    names = chain.names[start:stop]
    first = names[0]
    if not jax.tree.leaves(params.get(first, {})):
        return False  # nothing to stack: scanning would not shrink the program
    ref = _shapes((params.get(first, {}), state.get(first, {})))
    if any(_shapes((params.get(n, {}), state.get(n, {}))) != ref for n in names[1:]):
        return False
    layer = chain.layers[start]
    try:
        # A key, so layers that draw (Dropout) fit in the training step too.
        out = jax.eval_shape(
            lambda p, s, a: layer.apply(p, s, a, rng=jax.random.key(0), training=training)[0],
            params.get(first, {}), state.get(first, {}), x,
        )
    except Exception:  # noqa: BLE001 - the unrolled path will raise the real error
        return False
    shapes = lambda t: [tuple(a.shape) for a in jax.tree.leaves(t)]  # dtypes: cast back in the body
    return jax.tree.structure(out) == jax.tree.structure(x) and shapes(out) == shapes(x)


def scan_layers(model: Any, min_run: int = 2) -> Any:
    """``model`` with its runs of identical consecutive layers scanned (see the module doc).

    Only a model (or layer) whose ``core`` is a sequential chain has runs; anything else,
    or a chain without runs, comes back as it is.

    Example::

        fast = scan_layers(model)
        y, state = fast.apply(model.params, model.state, x)   # == model.apply(...)
    """
    chain = getattr(model, "core", None)
    if type(chain) is not Chain:
        return model
    runs = candidate_runs(chain, min_run)
    if not runs:
        return model
    fields = {f.name: getattr(chain, f.name) for f in dataclasses.fields(chain) if f.init}
    return ScannedLayers(model, _ScannedChain(**{**fields, "runs": tuple(runs)}))
