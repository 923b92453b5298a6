"""Creating a model's weights with one sampler per distinct layer.

Containers (``Functional``, ``Sequential``) create their children's weights through
:func:`init_child`; left alone it is ``layer.init(rng, x)``. Traced as one program, a model
of 24 identical residual blocks then holds 24 copies of each sampler, and XLA compiles
each copy anew (W5/W6 in ``bench/``: seconds on a CPU, tens of seconds on a GPU).
:func:`init_grouped` traces the same ``init`` twice inside one program instead:

1. a first walk records every *leaf* call (a child whose ``init`` sends no children of its
   own through :func:`init_child`): the layer, its key and its input spec;
2. calls of equal leaves (same class and config but the name, same input shapes) run as one
   ``jax.vmap`` of the first one's ``init`` over their keys;
3. a second walk hands each call its slice of those results (a leaf alike to no other,
   its result from the first walk), so the containers assemble (and cast, under a dtype
   policy) the same trees as before. Without two leaves alike, the first walk's result
   is the result.

The first walk's results of grouped leaves are unused and XLA drops them. The values are
those of ``init(rng, x)`` (``vmap`` over threefry keys gives what each key alone gives; other
key kinds are not grouped), and compile time grows with the number of *distinct* layers,
not with depth.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Callable, Iterator

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np

from kerax.core.layer import config_signature

# Largest stacked draw of one group of equal layers (bytes); a larger group draws in chunks.
GROUP_BYTES = 1 << 28

# How init_child runs a child's init in the current context (None: directly).
_RUNNER: contextvars.ContextVar[Callable | None] = contextvars.ContextVar("kerax_init_runner", default=None)


def init_child(layer: Any, rng: Any, x: Any) -> tuple[dict, dict]:
    """``layer.init(rng, x)``, or what :func:`init_grouped` makes of it; containers call
    this for each child."""
    runner = _RUNNER.get()
    return layer.init(rng, x) if runner is None else runner(layer, rng, x)


@contextlib.contextmanager
def _running(runner: Callable | None) -> Iterator[None]:
    token = _RUNNER.set(runner)
    try:
        yield
    finally:
        _RUNNER.reset(token)


def init_grouped(init: Callable[[Any, Any], Any], rng: Any, x: Any) -> Any:
    """``init(rng, x)`` with equal leaf layers initialized by one ``vmap``; for tracing
    under ``jax.jit`` (``x``: the input spec).

    ``init`` is a container's ``init`` (e.g. ``model.init``). Returns what it returns.
    """
    calls: list = []  # per init_child call, in order: None for a container, else the leaf's call
    walk = _trace_state()

    def record(layer: Any, key: Any, spec: Any) -> tuple[dict, dict]:
        if _trace_state() != walk:  # inside a leaf's own transformation (Repeat's vmap ...)
            return layer.init(key, spec)
        i = len(calls)
        calls.append(None)
        out = layer.init(key, spec)
        if len(calls) == i + 1:  # nothing came through init_child inside: a leaf
            calls[i] = (_signature(layer, key, spec), layer, key, spec, out)
        return out

    if not _vmap_invariant(rng):
        return init(rng, x)
    with _running(record):
        first = init(rng, x)

    groups: dict = {}
    for i, call in enumerate(calls):
        if call is not None:
            groups.setdefault(call[0], []).append(i)
    if all(len(members) == 1 for members in groups.values()):
        return first  # no two leaves alike: the first walk's results are the results
    results: dict = {}
    for members in groups.values():
        _, layer, key, spec, out = calls[members[0]]
        if len(members) == 1:
            results[members[0]] = out
            continue
        # The stacked draw lives beside its slices until the program ends: chunks of at
        # most GROUP_BYTES bound that extra memory for models of large equal layers.
        per = max(1, sum(np.size(a) * jnp.dtype(jnp.result_type(a)).itemsize for a in jax.tree.leaves(out)))
        size = max(1, GROUP_BYTES // per)
        for start in range(0, len(members), size):
            chunk = members[start:start + size]
            if len(chunk) == 1:
                results[chunk[0]] = calls[chunk[0]][4]
                continue
            stacked = jax.vmap(lambda k, layer=layer, spec=spec: layer.init(k, spec))(
                jnp.stack([calls[i][2] for i in chunk]))
            for j, i in enumerate(chunk):
                results[i] = jax.tree.map(lambda a, j=j: a[j], stacked)

    order = iter(range(len(calls)))

    def replay(layer: Any, key: Any, spec: Any) -> tuple[dict, dict]:
        if _trace_state() != walk:
            return layer.init(key, spec)
        i = next(order)
        return layer.init(key, spec) if calls[i] is None else results[i]

    with _running(replay):
        return init(rng, x)


def _vmap_invariant(rng: Any) -> bool:
    """Whether ``vmap`` over keys of ``rng``'s kind draws what each key draws alone: true
    for threefry, not for ``rbg`` / ``unsafe_rbg`` (those are left ungrouped)."""
    if rng is None:
        return False
    try:
        impl = jax.random.key_impl(rng) if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key) \
            else jax.config.jax_default_prng_impl
    except (AttributeError, TypeError):
        return False
    return "threefry" in str(impl)


def _trace_state() -> Any:
    """Which JAX trace is current: a leaf may run its children under its own transformation
    (``Repeat`` vmaps its block's ``init``); those calls are the leaf's business."""
    return jax.extend.core.get_opaque_trace_state(convention="kerax")


def _signature(layer: Any, key: Any, spec: Any) -> Any:
    """What a leaf's init depends on: its class and config but the name
    (:func:`~kerax.core.layer.config_signature`), the key's type and the input's shapes and
    dtypes. A layer whose config cannot be written, or that keeps attributes outside it
    (``_facade`` classes), is its own signature."""
    config = None if getattr(type(layer), "_facade", False) else config_signature(layer)
    if config is None:
        config = ("instance", id(layer))
    avals = tuple((tuple(a.shape), str(a.dtype)) for a in jax.tree.leaves((key, spec)))
    return config, jax.tree.structure((key, spec)), avals
