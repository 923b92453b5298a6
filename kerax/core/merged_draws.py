"""Running a traced program's threefry hashes in as few threefry calls as its key chains allow.

Every ``random_bits``, ``random_split`` and ``random_fold_in`` of a threefry key lowers to
its own copy of threefry's twenty rounds, and XLA compiles every copy anew. A model's
weight initialisation splits or folds a key per layer and draws once per kernel, so
compiling it costs a few copies per layer: on 2 CPU cores, three glorot kernels (W1 of
``bench/``) took 0.65-0.70 s to compile drawn one by one and 0.17 s drawn together.

With partitionable threefry (``jax_threefry_partitionable``, JAX's default) all three are
elementwise hashes of a key and a 64-bit counter:

- ``random_bits(key, shape)``: element ``i`` hashes ``(key, i)``, ``i`` its flat index in
  ``shape``; the two output words are xor-ed (or joined, for 64 bits);
- ``random_split(key, shape)``: the same hashes, whose two words are the new keys;
- ``random_fold_in(key, data)``: the hash of ``(key, data)`` is the new key.

So the hashes whose keys are known at the same time concatenate into one elementwise call
and split back into exactly what each gives by itself. :func:`merge_draws` re-runs a
function's jaxpr in walks: each walk binds every equation whose inputs are known, except
the threefry hashes, which it collects; one call hashes them all, and the next walk goes on
with their results. A program costs one threefry per link of its longest key chain (three
for a Sequential's weights: fold in the layer, fold in the weight, draw), not one per hash;
draws of ``CHUNK_ELEMENTS`` or more are hashed alone, as XLA fuses them best.
Hashes inside other higher-order primitives (``scan``, ``custom_jvp`` ...) run as they are.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core
from jax.extend.core import primitives as prims
from jax.extend.random import threefry2x32_p

# Most elements hashed by one merged call. A merged call's keys and counters are full-size
# arrays, which threefry's loop on XLA:CPU carries and keeps as temporaries (about seven
# uint32 arrays: W1's 669k drawn weights took 19 MB more). Draws this large are hashed
# alone, as jax.random hashes them; smaller ones merge up to this many elements.
CHUNK_ELEMENTS = 1 << 20

_PENDING = object()  # the value of a variable that depends on a hash not made yet
_HASHES = (prims.random_bits_p, prims.random_split_p, prims.random_fold_in_p)


def merge_draws(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with its threefry hashes merged into few calls; outputs equal bit for bit.

    For tracing under ``jax.jit``: ``jax.jit(merge_draws(lambda k: model.init(k, x)))``
    compiles a few threefry copies instead of several per layer. A function with side
    effects runs as it is; hashes traced without partitionable threefry are left alone.
    """

    def merged(*args: Any) -> Any:
        closed, shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        if closed.effects:
            return fn(*args)
        try:
            frame = _Frame(closed.jaxpr, closed.consts, jax.tree.leaves(args), [True] * len(closed.jaxpr.outvars))
            while True:
                ready: list[_Hash] = []
                frame.walk(ready)
                if not ready:
                    break
                _hash_all(ready)
            outs = frame.outputs()
        except Exception:  # noqa: BLE001 - an interpreter fault (a JAX it does not know): trace as written
            return fn(*args)
        return jax.tree.unflatten(jax.tree.structure(shape), outs)

    return merged


class _Hash:
    """One collected threefry equation: its elementwise operands, then its result."""

    def __init__(self, eqn: Any, ins: list) -> None:
        self.eqn, self.ins, self.result = eqn, ins, None
        key = ins[0]
        if eqn.primitive is prims.random_fold_in_p:
            self.shape = tuple(eqn.outvars[0].aval.shape)
            self.counts = jnp.broadcast_to(ins[1], self.shape)
        else:  # bits and split count each key's elements 0, 1, ... in ``params["shape"]``
            inner = tuple(eqn.params["shape"])
            self.shape = tuple(key.shape) + inner
            index = lax.iota(np.uint32, math.prod(inner)).reshape(inner)
            self.counts = lax.broadcast_in_dim(index, self.shape, tuple(range(key.ndim, len(self.shape))))
        # The key words keep their own size, aligned to the leading axes: threefry's loop
        # on XLA:CPU carries its keys, so full-size ones would be three more big buffers.
        words = jax.random.key_data(key)  # key.shape + (2,)
        aligned = tuple(key.shape) + (1,) * (len(self.shape) - key.ndim)
        self.k1, self.k2 = words[..., 0].reshape(aligned), words[..., 1].reshape(aligned)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def finish(self, bits1: jax.Array, bits2: jax.Array) -> None:
        """Sets ``result`` from the hash's two output words, as the primitive returns it."""
        if self.eqn.primitive is prims.random_bits_p:
            width = self.eqn.params["bit_width"]
            if width == 64:
                self.result = (bits1.astype(np.uint64) << np.uint64(32)) | bits2.astype(np.uint64)
            else:
                self.result = (bits1 ^ bits2).astype({8: np.uint8, 16: np.uint16, 32: np.uint32}[width])
        else:
            impl = jax.random.key_impl(self.ins[0])
            self.result = jax.random.wrap_key_data(jnp.stack([bits1, bits2], -1), impl=impl)


def _mergeable(eqn: Any, ins: list) -> bool:
    """A partitionable threefry hash whose counters fit one 32-bit word, with operands of
    the ranks :class:`_Hash` lines up (fold_in: key and data each scalar or full rank)."""
    if eqn.primitive not in _HASHES or not eqn.ctx.threefry_partitionable:
        return False
    try:
        if str(jax.random.key_impl(ins[0])) != "threefry2x32":
            return False
    except (TypeError, ValueError):
        return False
    if eqn.primitive is prims.random_fold_in_p:
        rank = len(eqn.outvars[0].aval.shape)
        return ins[1].dtype == np.uint32 and all(np.ndim(x) in (0, rank) for x in ins)
    return math.prod(eqn.params["shape"]) < 2**32


class _Frame:
    """One evaluation of a jaxpr: its variables' values, its ``jit`` calls' frames and the
    hashes it is waiting for."""

    def __init__(self, jaxpr: Any, consts: Any, args: list, wanted: list[bool]) -> None:
        self.jaxpr, self.env, self.calls, self.hashes = jaxpr, {}, {}, {}
        self.env.update(zip(jaxpr.constvars, consts))
        self.env.update(zip(jaxpr.invars, args))
        self.wanted = _wanted(jaxpr, wanted)

    def read(self, v: Any) -> Any:
        return v.val if isinstance(v, core.Literal) else self.env.get(v, _PENDING)

    def outputs(self) -> list:
        return [self.read(v) for v in self.jaxpr.outvars]

    def known(self, v: Any) -> bool:
        return isinstance(v, core.DropVar) or self.env.get(v, _PENDING) is not _PENDING

    def walk(self, ready: list) -> None:
        """Binds every equation whose inputs are known and whose outputs are not, and adds
        the threefry hashes among them to ``ready``."""
        for i, eqn in enumerate(self.jaxpr.eqns):
            wanted = self.wanted.get(i)
            if wanted is None or all(self.known(v) for v, w in zip(eqn.outvars, wanted) if w):
                continue
            ins = [self.read(v) for v in eqn.invars]
            if eqn.primitive is prims.jit_p:  # inline: its hashes merge with the caller's
                sub = self.calls.get(i)
                if sub is None:
                    closed = eqn.params["jaxpr"]
                    sub = self.calls[i] = _Frame(closed.jaxpr, closed.consts, ins, wanted)
                else:
                    sub.env.update(zip(sub.jaxpr.invars, ins))
                sub.walk(ready)
                outs = sub.outputs()
            elif i in self.hashes:
                outs = [self.hashes.pop(i).result]
            elif any(x is _PENDING for x in ins):
                outs = [_PENDING] * len(eqn.outvars)
            elif _mergeable(eqn, ins):
                self.hashes[i] = h = _Hash(eqn, ins)
                ready.append(h)
                outs = [_PENDING]
            else:
                outs = _bind(eqn, ins)
            for v, x in zip(eqn.outvars, outs):
                if not isinstance(v, core.DropVar):
                    self.env[v] = x


def _wanted(jaxpr: Any, wanted: list[bool]) -> dict[int, list[bool]]:
    """The equations that the ``wanted`` outputs depend on, each with which of its outputs
    are used. The rest is never bound: dead hashes would otherwise join a merged call,
    which XLA cannot trim (``init_grouped``'s unused first-walk draws doubled W6's)."""
    used = {v for v, w in zip(jaxpr.outvars, wanted) if w and not isinstance(v, core.Literal)}
    out: dict[int, list[bool]] = {}
    for i in reversed(range(len(jaxpr.eqns))):
        eqn = jaxpr.eqns[i]
        mask = [not isinstance(v, core.DropVar) and v in used for v in eqn.outvars]
        if any(mask):
            out[i] = mask
            used.update(v for v in eqn.invars if not isinstance(v, core.Literal))
    return out


def _bind(eqn: Any, ins: list) -> list:
    # The equation's context holds the configuration it was traced under (threefry's
    # partitionable flag among it), as jax.core.eval_jaxpr restores it.
    with eqn.ctx.manager:
        out = eqn.primitive.bind(*ins, **eqn.primitive.get_bind_params(eqn.params))
    return list(out) if eqn.primitive.multiple_results else [out]


def _hash_all(hashes: list[_Hash]) -> None:
    """Makes every hash's result: those of ``CHUNK_ELEMENTS`` or more alone, the others
    merged into calls of at most that many elements."""
    chunk: list[_Hash] = []
    size = 0
    for h in hashes:
        if h.size >= CHUNK_ELEMENTS:
            _hash_chunk([h])
            continue
        if size + h.size > CHUNK_ELEMENTS:
            _hash_chunk(chunk)
            chunk, size = [], 0
        chunk.append(h)
        size += h.size
    if chunk:
        _hash_chunk(chunk)


def _hash_chunk(hashes: list[_Hash]) -> None:
    if len(hashes) == 1:  # in its own shape, as jax.random hashes it: XLA fuses it whole
        h = hashes[0]
        h.finish(*threefry2x32_p.bind(h.k1, h.k2, jnp.zeros_like(h.counts), h.counts))
        return

    def flat(name: str) -> jax.Array:
        return lax.concatenate([jnp.broadcast_to(getattr(h, name), h.shape).ravel() for h in hashes], 0)

    counts = flat("counts")
    bits1, bits2 = threefry2x32_p.bind(flat("k1"), flat("k2"), jnp.zeros_like(counts), counts)
    start = 0
    for h in hashes:
        stop = start + h.size
        h.finish(bits1[start:stop].reshape(h.shape), bits2[start:stop].reshape(h.shape))
        start = stop
