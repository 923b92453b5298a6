"""``Repeat``: ``n`` copies of a block run by one ``lax.scan``, so compile time stays flat in depth.

Weights: the copies' params (and state) stacked on a leading axis of size ``n`` under the
key ``"block_*"`` (see :mod:`kerax.core.scan`)::

    params["repeat"] == {"block_*": {"dense": {"kernel": (n, d, d), "bias": (n, d)}}}

Weight files, model files, ``get_weights`` / ``set_weights`` and ``summary`` see the
copies one by one, named ``repeat/block_0/dense/kernel`` .. ``repeat/block_{n-1}/...``,
which are also the names an unrolled ``Sequential(name="repeat")`` of blocks named
``block_0 ..`` gives them, so weights move between the two forms.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from kerax import errors, mixed_precision
from kerax.core import naming, specs
from kerax.core.layer import AUX_LOSS, Layer
from kerax.core.order import in_order_of
from kerax.core.scan import index_keys, stack_size, stacked_key
from kerax.core.sequential import output_spec

BLOCK = "block"
STACKED = stacked_key(BLOCK)


def _split_aux(tree: Any) -> tuple[Any, Any]:
    """``tree`` without its ``aux_loss`` entries, and their sum (None if there are none)."""
    if not isinstance(tree, dict):
        return tree, None
    out, total = {}, None
    for k, v in tree.items():
        if k == AUX_LOSS:
            part = jnp.sum(v)
        else:
            v, part = _split_aux(v)
            if isinstance(v, dict) and not v:
                v = None
            if v is not None:
                out[k] = v
        if part is not None:
            total = part if total is None else total + part
    return out, total


def _shapes(tree: Any) -> Any:
    return [tuple(a.shape) for a in jax.tree.leaves(tree)]


class Repeat(Layer):
    """Applies ``n`` copies of ``block`` in turn (``x -> block_{n-1}(... block_0(x))``) with
    one ``lax.scan`` over their stacked weights.

    Args:
      block: any kerax layer or model that maps its input to an output of the same shape
        and dtype (a residual block, a ``Sequential``, a functional ``kx.Model``).
      n: the number of copies, an int >= 1. Each copy has its own weights: copy ``i`` is
        initialised with the key an unrolled container would give a child named
        ``block_i``, and gets its own dropout key the same way.
      remat: wrap the scanned block in ``jax.checkpoint``: activations inside each block
        are recomputed on the backward pass instead of stored (less memory, more compute).

    Input shape: the block's. Output shape: the same.

    Example::

        inp = kx.Input((64,))
        block = kx.Model(inp, layers.Add()([inp, layers.Dense(64, activation="relu")(inp)]))
        model = kx.Sequential([kx.Input((64,)), layers.Repeat(block, 24), layers.Dense(10)])
    """

    block: Any
    n: int
    remat: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.block, Layer):
            raise self._error(
                errors.ConfigError,
                f"block must be a kerax layer or model mapping x to x; received "
                f"{type(self.block).__name__} {str(self.block)[:80]}",
            )
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise self._error(errors.ConfigError, f"n must be an int >= 1 (the number of copies); received n={self.n!r}")
        if not isinstance(self.remat, bool):
            raise self._error(errors.ConfigError, f"remat must be True or False; received remat={self.remat!r}")

    @property
    def block_name(self) -> str:
        return self.block.name or type(self.block).default_name()

    def _check_same(self, x: Any, y: Any) -> None:
        """The scan's carry: the block must give back the shapes it takes (a different
        floating dtype, from a dtype policy, is cast back to the carry's)."""
        if jax.tree.structure(x) != jax.tree.structure(y) or _shapes(x) != _shapes(y):
            show = lambda t: jax.tree.map(lambda a: errors.fmt_shape(a.shape), t)
            raise self._error(
                errors.ShapeError,
                f"the block {self.block_name!r} ({type(self.block).__name__}) must map its input to an "
                f"output of the same shape to be repeated; expected output shape {show(x)} (the "
                f"input's), received {show(y)}. Repeat only blocks that keep the shape (e.g. residual blocks)",
            )

    def init(self, rng, x):
        x = specs.to_spec(x)
        block = self.block
        with naming.scope(f"{BLOCK}_0", block):
            p1, s1 = jax.eval_shape(lambda k: block.init(k, x), rng)
            out = output_spec(block, p1, s1, x)
        self._check_same(x, out)
        keys = index_keys(rng, BLOCK, self.n)
        order: list = []  # the block's dicts in creation order (vmap's outputs sort their keys)

        def init_one(k):
            out = block.init(k, x)
            order.append(out)
            return out

        params, state = jax.vmap(init_one)(keys)
        params, state = in_order_of((params, state), order[0])
        state, aux = _split_aux(state)
        out_p = {STACKED: params} if params else {}
        out_s = {STACKED: state} if state else {}
        if aux is not None:
            out_s[AUX_LOSS] = jnp.zeros_like(aux)
        return out_p, out_s

    def _check_stack(self, tree: Any, what: str) -> None:
        got = stack_size(tree)
        bad = [tuple(a.shape) for a in jax.tree.leaves(tree) if not a.shape or a.shape[0] != self.n]
        if got is not None and bad:
            raise self._error(
                errors.ShapeError,
                f"{what} must be stacked on a leading axis of size n={self.n}; received leaves of "
                f"shapes {bad[:3]}",
            )

    def apply(self, params, state, x, *, rng=None, training=False):
        return self._run(params, state, x, None, rng, training, None)[:2]

    def apply_masked(self, params, state, x, mask, *, rng=None, training=False, dtype_policy=None):
        """Under a dtype policy the block runs as a container's child would (the policy
        handed down), with the carry in the policy's compute dtype. A mask (padding) goes
        into every copy with the carry, and the last copy's mask comes out, as in the
        unrolled stack."""
        policy = mixed_precision.effective(self, dtype_policy)
        if policy is not None:
            x = mixed_precision.cast_floating(x, self._carry_dtype(params, state, x, policy))
        return self._run(params, state, x, mask, rng, training, policy)

    def _carry_dtype(self, params: Any, state: Any, x: Any, policy: str) -> Any:
        """The dtype the copies hand each other under ``policy``: the block's output dtype
        (the policy's compute dtype, or float32 for a block that keeps its own float32
        policy inside a mixed model, which the unrolled stack would not round either)."""
        one = lambda t: jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), t)
        p, s = one(params.get(STACKED, {})), one(state.get(STACKED, {}))
        run = lambda p, s, a: self.block.apply_masked(p, s, a, None, dtype_policy=policy)[0]
        with naming.scope(f"{BLOCK}_0", self.block):
            out = jax.eval_shape(run, p, s, specs.to_spec(x))
        floats = [a.dtype for a in jax.tree.leaves(out) if jnp.issubdtype(a.dtype, jnp.floating)]
        return floats[0] if floats else mixed_precision.Policy(policy).compute_dtype

    def _run(self, params, state, x, mask, rng, training, policy):
        block = self.block
        extra = {} if policy is None else {"dtype_policy": policy}
        p, s = params.get(STACKED, {}), state.get(STACKED, {})
        self._check_stack(p, "params")
        self._check_stack(s, "state")
        one = lambda t: jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), t)
        x_spec = specs.to_spec(x)
        with naming.scope(f"{BLOCK}_0", block):
            out = output_spec(block, one(p), one(s), x_spec)
        self._check_same(x_spec, out)

        def body(carry, xs):
            h, m = carry
            p_i, s_i, k_i = xs
            y, s_new, m_out = block.apply_masked(p_i, s_i, h, m, rng=k_i, training=training, **extra)
            m_out = self._same_mask(m, m_out)
            return (jax.tree.map(lambda a, b: a.astype(b.dtype), y, h), m_out), _split_aux(s_new)

        if self.remat:
            body = jax.checkpoint(body)
        keys = index_keys(rng, BLOCK, self.n)
        (y, mask), (new_s, aux) = jax.lax.scan(body, (x, mask), (p, s, keys), length=self.n)
        new_state = dict(state)
        if new_s:
            new_state[STACKED] = new_s
        if aux is not None:
            new_state[AUX_LOSS] = jnp.sum(aux)
        return y, new_state, mask

    def _same_mask(self, mask: Any, out: Any) -> Any:
        """The block's output mask, which the next copy takes: it must be a mask like its
        input's (a block that drops, reshapes or creates one cannot be scanned)."""
        if mask is None and out is None:
            return None
        show = lambda t: jax.tree.map(lambda a: errors.fmt_shape(a.shape), t)
        block = f"the block {self.block_name!r} ({type(self.block).__name__})"
        if mask is None:
            raise self._error(errors.ShapeError, f"{block} creates a padding mask (shape {show(out)}); a Repeat "
                              "only carries a mask it receives: put the masking layer before the Repeat")
        if out is None or jax.tree.structure(out) != jax.tree.structure(mask) or _shapes(out) != _shapes(mask):
            raise self._error(
                errors.ShapeError,
                f"{block} must hand on the padding mask it receives, unchanged in shape, to be repeated; "
                f"expected an output mask of shape {show(mask)}, received {None if out is None else show(out)}",
            )
        return jax.tree.map(lambda a, b: a.astype(b.dtype), out, mask)

    def penalty(self, params):
        stacked = params.get(STACKED, {})
        if not jax.tree.leaves(stacked):
            return 0.0
        return jnp.sum(jax.vmap(lambda p: jnp.asarray(self.block.penalty(p), jnp.float32))(stacked))
