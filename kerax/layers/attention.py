"""Attention layers: MultiHeadAttention, Attention (Luong), AdditiveAttention (Bahdanau).

Arguments, weight names and layouts follow Keras 3, so weights move between the two. Keras's
call arguments ``use_causal_mask`` and ``return_attention_scores`` are fields here (``apply``
takes one input pytree); the latter makes the output the list ``[output, scores]``. Padding
masks from the container (``Embedding(mask_zero=True)``, ``Masking``) combine as in Keras;
they, and ``use_causal_mask``, need 3-D inputs ``(batch, time, features)``.

A query row whose every key is masked (a padded query step) gets, as in Keras 3, the mean
of the values on the fused path (MultiHeadAttention with no dropout, no scores returned,
3-D inputs: ``jax.nn.dot_product_attention``) and zero attention on the explicit path.
"""

from __future__ import annotations

import math
import string
from typing import Any

import jax
import jax.numpy as jnp

from kerax import errors, initializers
from kerax.core.layer import Layer
from kerax.core.rng import derive
from kerax.layers._util import cast_input, positive_int
from kerax.layers.regularization import require_rng

_PROJECTIONS = ("query", "key", "value", "attention_output")
_DICT_KEYS = ("query", "value", "key", "attention_mask")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _causal(t: int, s: int) -> jax.Array:
    """``(1, T, S)``: query step i sees key steps j <= i (Keras's causal mask)."""
    return (jnp.arange(t)[:, None] >= jnp.arange(s)[None, :])[None]


def _dropout(layer: Layer, probs: jax.Array, rng: Any) -> jax.Array:
    require_rng(layer, rng)
    if layer.seed is not None:
        rng = jax.random.fold_in(rng, layer.seed)
    keep = jax.random.bernoulli(rng, 1.0 - layer.dropout, probs.shape)
    return jnp.where(keep, probs / (1.0 - layer.dropout), jnp.zeros((), probs.dtype))


def _check_rate(layer: Layer) -> None:
    r = layer.dropout
    if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 <= r < 1:
        raise layer._error(errors.ConfigError, f"dropout must be a number in [0, 1); received dropout={r!r}")


def _check_mask(layer: Layer, mask: Any, shape: tuple, what: str) -> None:
    if mask is not None and tuple(mask.shape) != tuple(shape[:2]):
        raise layer._error(errors.ShapeError, f"the {what} mask must have shape {errors.fmt_shape(shape[:2])} "
                           f"(batch, time) for a {what} of shape {errors.fmt_shape(shape)}; received mask "
                           f"of shape {errors.fmt_shape(mask.shape)}")


def equations(rank: int, axes: tuple) -> tuple[str, str]:
    """Keras's einsum equations for projected tensors of rank ``rank`` (heads at -2).

    Scores are ``(<batch and other axes>, heads, <query attention axes>, <key attention
    axes>)``: ``key, query -> scores`` and ``scores, value -> output``.
    """
    letters = string.ascii_lowercase
    target = letters[:rank]
    batch = [i for i in range(rank) if i not in axes and i != rank - 1]
    source = "".join(letters[rank + axes.index(i)] if i in axes else target[i] for i in range(rank))
    product = "".join([target[i] for i in batch] + [target[i] for i in axes] + [source[i] for i in axes])
    return f"{source},{target}->{product}", f"{product},{source}->{target}"


def expand_mask(mask: jax.Array, rank: int, n_axes: int) -> jax.Array:
    """Inserts axes at ``-2 * n_axes - 1`` (heads, then leading axes) up to ``rank``, as Keras."""
    for _ in range(rank - mask.ndim):
        mask = jnp.expand_dims(mask, -2 * n_axes - 1)
    return mask


def einsum_attention(q, k, v, mask, axes, scale, *, zero_masked=True, drop=None):
    """Explicit attention over ``axes`` of projected ``q (..., N, H)``, ``k``, ``v``.

    ``mask`` is already expanded to the scores' rank. ``zero_masked`` zeroes masked
    probabilities (Keras's masked softmax: a row with every key masked gives zeros); without
    it such a row is uniform over all keys, as in ``jax.nn.dot_product_attention``.
    Returns ``(output, probabilities before dropout)``.
    """
    dot, combine = equations(q.ndim, axes)
    logits = jnp.einsum(dot, k, q * scale)
    if mask is not None:
        logits = jnp.where(mask, logits, -3e4 if logits.dtype == jnp.float16 else -1e9)
    probs = jax.nn.softmax(logits, axis=tuple(range(logits.ndim - len(axes), logits.ndim)))
    if mask is not None and zero_masked:
        probs = jnp.where(mask, probs, jnp.zeros((), probs.dtype))
    return jnp.einsum(combine, probs if drop is None else drop(probs), v), probs


class MultiHeadAttention(Layer):
    """Multi-head attention (Vaswani et al., 2017), as Keras's ``MultiHeadAttention``.

    Weights (Keras's ``EinsumDense`` sublayers): ``query/kernel (dim_q, heads, key_dim)``,
    ``query/bias (heads, key_dim)``; ``key/...`` the same from ``dim_k``; ``value/kernel
    (dim_v, heads, value_dim)``, ``value/bias (heads, value_dim)``;
    ``attention_output/kernel (heads, value_dim, *out)``, ``attention_output/bias (*out,)``
    where ``out`` is ``output_shape`` or ``(dim_q,)``.

    Inputs: one array (self-attention); ``[query, value]`` or ``[query, value, key]``; or a
    dict with ``query``, ``value`` and optionally ``key`` and ``attention_mask`` (boolean
    ``(B, T, S)``, True = attend; broadcast over heads and missing leading axes).
    ``dropout`` acts on the attention probabilities in training (needs ``rng``).
    ``attention_axes``: the axes attended over, between batch and features (None: all of
    them, so a 3-D input attends over time).

    Input shape: query ``(B, T, dim_q)``, value ``(B, S, dim_v)``, key ``(B, S, dim_k)``
    (more axes between batch and features with ``attention_axes``). Output shape:
    ``(B, T, *out)``; with ``return_attention_scores``, ``[output, scores]`` and scores
    ``(B, heads, T, S)``.

    Example: ``layers.MultiHeadAttention(num_heads=2, key_dim=16)([query, value])``.
    """

    uses_mask = True

    num_heads: int = None
    key_dim: int = None
    value_dim: int | None = None
    dropout: float = 0.0
    use_bias: bool = True
    output_shape: Any = None
    attention_axes: Any = None
    kernel_initializer: Any = "glorot_uniform"
    bias_initializer: Any = "zeros"
    kernel_regularizer: Any = None
    bias_regularizer: Any = None
    use_causal_mask: bool = False
    return_attention_scores: bool = False
    seed: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        for f in ("num_heads", "key_dim"):
            if getattr(self, f) is None:
                raise self._error(errors.ConfigError, f"{f} is required: MultiHeadAttention(num_heads=2, "
                                  f"key_dim=16); received {f}=None")
            positive_int(self, f, getattr(self, f))
        if self.value_dim is not None:
            positive_int(self, "value_dim", self.value_dim)
        _check_rate(self)
        shape = (self.output_shape,) if _is_int(self.output_shape) else self.output_shape
        if shape not in (None, ()) and not (
                isinstance(shape, (tuple, list)) and all(_is_int(d) and d > 0 for d in shape)):
            raise self._error(errors.ConfigError, "output_shape must be None, a positive integer or a "
                              f"tuple of positive integers; received output_shape={self.output_shape!r}")
        self._set("output_shape", tuple(shape) if shape else None)
        axes = (self.attention_axes,) if _is_int(self.attention_axes) else self.attention_axes
        if axes is not None and not (isinstance(axes, (tuple, list)) and axes and len(set(axes)) == len(axes)
                                     and all(_is_int(a) and a not in (0, -1) for a in axes)):
            raise self._error(errors.ConfigError, "attention_axes must be None, an int or a tuple of distinct "
                              "ints naming axes between the batch axis (0) and the feature axis (-1); "
                              f"received attention_axes={self.attention_axes!r}")
        self._set("attention_axes", None if axes is None else tuple(axes))
        for f in ("kernel_initializer", "bias_initializer"):
            initializers.get(getattr(self, f))

    # -- inputs ------------------------------------------------------------------------

    def _parse(self, x: Any) -> tuple:
        """``(query, value, key, attention_mask)`` from the input pytree (key defaults to value)."""
        if isinstance(x, dict):
            if "query" not in x or "value" not in x or set(x) - set(_DICT_KEYS):
                raise self._error(errors.InputStructureError, "a dict input needs keys 'query' and 'value' "
                                  f"(optional 'key', 'attention_mask'); received keys {sorted(x)}")
            q, v, k, m = (x.get(n) for n in _DICT_KEYS)
        elif isinstance(x, (list, tuple)):
            if len(x) not in (2, 3):
                raise self._error(errors.InputStructureError, "expects [query, value] or [query, value, "
                                  f"key]; received a list of {len(x)}")
            q, v, k, m = x[0], x[1], (x[2] if len(x) == 3 else None), None
        else:
            q, v, k, m = x, x, None, None
        return q, v, (v if k is None else k), m

    def _input_masks(self, x: Any, mask: Any) -> tuple:
        """``(query_mask, value_mask, key_mask)`` from the container's masks (x's structure)."""
        if mask is None:
            return None, None, None
        seq = (list, tuple)
        if isinstance(x, dict) != isinstance(mask, dict) or isinstance(x, seq) != isinstance(mask, seq):
            raise self._error(errors.InputStructureError, "mask must have the structure of the inputs; "
                              f"received inputs {type(x).__name__}, mask {type(mask).__name__}")
        if isinstance(x, dict):
            return mask.get("query"), mask.get("value"), mask.get("key")
        if isinstance(x, (list, tuple)):
            return tuple((list(mask) + [None] * 3)[:3])
        return mask, mask, None

    def _check(self, q: Any, v: Any, k: Any, m: Any) -> tuple:
        """Validates shapes; returns the attention axes (in input coordinates)."""
        qs, vs, ks = tuple(q.shape), tuple(v.shape), tuple(k.shape)
        shown = f"query {errors.fmt_shape(qs)}, value {errors.fmt_shape(vs)}, key {errors.fmt_shape(ks)}"
        fail = lambda msg: self._error(errors.ShapeError, f"{msg}; received {shown}")
        rank = len(qs)
        if rank < 3 or not rank == len(vs) == len(ks):
            raise fail("expects query, value and key of the same rank >= 3 (batch, ..., features)")
        if vs[:-1] != ks[:-1]:
            raise fail("value and key must agree on every axis but the last")
        if self.use_causal_mask and rank != 3:
            raise fail("use_causal_mask needs 3-D inputs (batch, time, features)")
        axes = tuple(range(1, rank - 1)) if self.attention_axes is None else tuple(
            a % rank if -rank <= a < rank else 0 for a in self.attention_axes)
        if any(a in (0, rank - 1) for a in axes):
            raise fail(f"attention_axes={self.attention_axes} must name axes between the batch and the "
                       f"feature axis (1 to {rank - 2})")
        other = tuple(qs[i] for i in range(rank - 1) if i not in axes)
        if other != tuple(vs[i] for i in range(rank - 1) if i not in axes):
            raise fail("query and value must agree on the batch axis and every axis not in "
                       f"attention_axes {axes}")
        if m is not None:
            n, steps, ms = len(axes), tuple(qs[i] for i in axes) + tuple(vs[i] for i in axes), tuple(m.shape)
            full = other + (self.num_heads,) + steps
            ok = 2 * n <= len(ms) <= len(full)
            if ok:  # Keras inserts axes before the query and key steps (the heads, then more)
                padded = ms[:len(ms) - 2 * n] + (1,) * (len(full) - len(ms)) + ms[len(ms) - 2 * n:]
                ok = all(a in (1, b) for a, b in zip(padded, full))
            if not ok:
                raise fail(f"attention_mask must broadcast to {errors.fmt_shape(other + steps)} (batch, "
                           f"query steps, key steps); received attention_mask of shape {errors.fmt_shape(ms)}")
        return axes

    # -- the protocol ------------------------------------------------------------------

    def init(self, rng, x):
        q, v, k, m = self._parse(x)
        self._check(q, v, k, m)
        heads, kd, vd = self.num_heads, self.key_dim, self.value_dim or self.key_dim
        out = self.output_shape or (q.shape[-1],)
        shapes = {
            "query": ((q.shape[-1], heads, kd), (heads, kd)),
            "key": ((k.shape[-1], heads, kd), (heads, kd)),
            "value": ((v.shape[-1], heads, vd), (heads, vd)),
            "attention_output": ((heads, vd, *out), out),
        }
        dtype = jnp.dtype(self.param_dtype)
        params = {}
        for name, (kernel, bias) in shapes.items():
            key = derive(rng, name)
            p = {"kernel": initializers.get(self.kernel_initializer)(derive(key, "kernel"), kernel, dtype)}
            if self.use_bias:
                p["bias"] = initializers.get(self.bias_initializer)(derive(key, "bias"), bias, dtype)
            params[name] = p
        return params, {}

    def _project(self, p: dict, x: Any, n_in: int) -> jax.Array:
        y = jnp.tensordot(x, p["kernel"], axes=(list(range(x.ndim - n_in, x.ndim)), list(range(n_in))))
        return y + p["bias"] if self.use_bias else y

    def _mask(self, q, v, k, m, masks) -> tuple[Any, bool]:
        """Keras's ``_compute_attention_mask``: ``(mask or None, whether it is only causal)``."""
        if any(x is not None for x in masks) and q.ndim != 3:
            raise self._error(errors.ShapeError, "padding masks (from Embedding(mask_zero=True), Masking) "
                              f"need 3-D inputs (batch, time, features); received query of shape "
                              f"{errors.fmt_shape(q.shape)}")
        for mask, x, what in zip(masks, (q, v, k), ("query", "value", "key")):
            _check_mask(self, mask, tuple(x.shape), what)
        q_mask, v_mask, k_mask = (None if x is None else x.astype(bool) for x in masks)
        auto = None
        for mask in (None if q_mask is None else q_mask[..., :, None],
                     None if v_mask is None else v_mask[..., None, :],
                     None if k_mask is None else k_mask[..., None, :],
                     _causal(q.shape[1], v.shape[1]) if self.use_causal_mask else None):
            if mask is not None:
                auto = mask if auto is None else auto & mask
        causal_only = self.use_causal_mask and m is None and all(x is None for x in masks)
        m = None if m is None else jnp.asarray(m).astype(bool)
        return (auto if m is None else m if auto is None else m & auto), causal_only

    def apply(self, params, state, x, *, rng=None, training=False, mask=None):
        query, value, key, m = self._parse(x)
        axes = self._check(query, value, key, m)
        for name, arr in (("query", query), ("key", key), ("value", value)):
            kernel = params[name]["kernel"]
            if arr.shape[-1] != kernel.shape[0]:
                raise self._error(errors.ShapeError, f"expected {name} with last axis {kernel.shape[0]} (the "
                                  f"{name}/kernel shape {errors.fmt_shape(kernel.shape)}); received {name} "
                                  f"of shape {errors.fmt_shape(arr.shape)}")
        m, causal_only = self._mask(query, value, key, m, self._input_masks(x, mask))
        dtype = params["query"]["kernel"].dtype
        q, k, v = (self._project(params[n], cast_input(a, dtype), 1)
                   for n, a in (("query", query), ("key", key), ("value", value)))
        scale = 1.0 / math.sqrt(float(self.key_dim))
        # Keras's fused path when nothing needs the probabilities: jax.nn.dot_product_attention
        # (it needs value_dim == key_dim, and its float16 precision fails on CPU), else the
        # einsum path with the same semantics. The explicit einsum path otherwise.
        fused = self.dropout == 0 and not self.return_attention_scores and query.ndim == 3
        if fused and v.shape[-1] == q.shape[-1] and q.dtype != jnp.float16:
            mask4 = None if m is None or causal_only else expand_mask(m, 4, 1)
            with jax.numpy_dtype_promotion("standard"):  # it promotes bfloat16 logits to float32
                o = jax.nn.dot_product_attention(q, k, v, mask=mask4, scale=scale, is_causal=causal_only)
            scores = None
        else:
            drop = (lambda p: _dropout(self, p, rng)) if training and self.dropout > 0 else None
            full = None if m is None else expand_mask(m, q.ndim + len(axes) - 1, len(axes))
            o, scores = einsum_attention(q, k, v, full, axes, scale, zero_masked=not fused, drop=drop)
        y = self._project(params["attention_output"], o, 2)
        return ([y, scores] if self.return_attention_scores else y), state

    def compute_mask(self, x, mask):
        """The query's padding mask (Keras sets it on the output)."""
        return self._input_masks(x, mask)[0]

    def penalty(self, params):
        """``kernel_regularizer`` / ``bias_regularizer`` summed over the four projections."""
        from kerax import regularizers

        total = 0.0
        for weight in ("kernel", "bias"):
            reg = getattr(self, f"{weight}_regularizer")
            for name in _PROJECTIONS if reg is not None else ():
                if weight in params.get(name, {}):
                    total = total + regularizers.get(reg)(params[name][weight])
        return total


# -- Luong and Bahdanau attention ---------------------------------------------------------


class _ScoreAttention(Layer):
    """Shared plumbing of Attention and AdditiveAttention (not a layer)."""

    uses_mask = True

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_rate(self)

    def _parse(self, x: Any) -> tuple:
        if not isinstance(x, (list, tuple)) or len(x) not in (2, 3):
            got = f"a list of {len(x)}" if isinstance(x, (list, tuple)) else type(x).__name__
            raise self._error(errors.InputStructureError, "expects a list [query, value] or [query, value, "
                              f"key]; received {got}")
        q, v, k = x[0], x[1], x[2] if len(x) == 3 else x[1]
        qs, vs, ks = tuple(q.shape), tuple(v.shape), tuple(k.shape)
        if not len(qs) == len(vs) == len(ks) == 3 or qs[-1] != ks[-1] or vs[:-1] != ks[:-1] or qs[0] != vs[0]:
            raise self._error(errors.ShapeError, "expects query (B, Tq, dim), value (B, Tv, dim_v) and key "
                              "(B, Tv, dim): query and key share their feature size, value and key their "
                              f"steps; received query {errors.fmt_shape(qs)}, value {errors.fmt_shape(vs)}, "
                              f"key {errors.fmt_shape(ks)}")
        return q, v, k

    def _weight(self, rng: Any, name: str, init: Any, shape: tuple) -> jax.Array:
        return initializers.get(init)(derive(rng, name), shape, jnp.dtype(self.param_dtype))

    def apply(self, params, state, x, *, rng=None, training=False, mask=None):
        q, v, k = (cast_input(a, jnp.dtype(self.compute_dtype)) for a in self._parse(x))
        if mask is not None and not isinstance(mask, (list, tuple)):
            raise self._error(errors.InputStructureError, "mask must be a list [query_mask, value_mask]; "
                              f"received {type(mask).__name__}")
        q_mask, v_mask = (list(mask) + [None, None])[:2] if mask is not None else (None, None)
        _check_mask(self, q_mask, tuple(q.shape), "query")
        _check_mask(self, v_mask, tuple(v.shape), "value")
        scores = self._scores(params, q, k)
        scores_mask = None if v_mask is None else v_mask.astype(bool)[:, None, :]
        if self.use_causal_mask:
            causal = _causal(q.shape[1], k.shape[1])
            scores_mask = causal if scores_mask is None else scores_mask & causal
        if scores_mask is not None:  # Keras subtracts (not replaces): 1e9, or 65504 in float16
            big = 65504.0 if scores.dtype == jnp.float16 else 1e9
            scores = jnp.where(scores_mask, scores, scores - big)
        weights = jax.nn.softmax(scores, axis=-1)
        if training and self.dropout > 0:
            weights = _dropout(self, weights, rng)
        out = weights @ v
        if q_mask is not None:
            out = jnp.where(q_mask.astype(bool)[..., None], out, jnp.zeros((), out.dtype))
        return ([out, weights] if self.return_attention_scores else out), state

    def compute_mask(self, x, mask):
        """The query's mask (Keras: ``mask[0]``)."""
        return None if not mask else mask[0]


class Attention(_ScoreAttention):
    """Dot-product (Luong) attention, as Keras's ``Attention``.

    ``score_mode="dot"``: ``scores = query @ key^T`` (times ``scale`` with ``use_scale``);
    ``"concat"``: ``concat_score_weight * sum(tanh(scale * (query + key)))``. Weights:
    ``scale ()`` with ``use_scale``, ``concat_score_weight ()`` for ``"concat"``, both ones.
    A value mask from the container hides value steps; a query mask zeroes output steps.
    ``use_causal_mask`` and ``return_attention_scores`` (output ``[output, weights]``; the
    weights after dropout, as Keras) are fields here, call arguments in Keras.

    Input shape: ``[query (B, Tq, dim), value (B, Tv, dim_v)]`` or with ``key (B, Tv, dim)``.
    Output shape: ``(B, Tq, dim_v)``; scores ``(B, Tq, Tv)``.
    """

    use_scale: bool = False
    score_mode: str = "dot"
    dropout: float = 0.0
    use_causal_mask: bool = False
    return_attention_scores: bool = False
    seed: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.score_mode not in ("dot", "concat"):
            raise self._error(errors.ConfigError, "score_mode must be 'dot' or 'concat'; received "
                              f"score_mode={self.score_mode!r}")

    def init(self, rng, x):
        self._parse(x)
        params = {}
        if self.use_scale:
            params["scale"] = self._weight(rng, "scale", "ones", ())
        if self.score_mode == "concat":
            params["concat_score_weight"] = self._weight(rng, "concat_score_weight", "ones", ())
        return params, {}

    def _scores(self, params, q, k):
        scale = params.get("scale")
        if self.score_mode == "dot":
            scores = q @ jnp.swapaxes(k, -2, -1)
            return scores if scale is None else scores * scale
        s = q[:, :, None, :] + k[:, None, :, :]
        return params["concat_score_weight"] * jnp.sum(jnp.tanh(s if scale is None else scale * s), axis=-1)


class AdditiveAttention(_ScoreAttention):
    """Additive (Bahdanau) attention, as Keras's ``AdditiveAttention``.

    ``scores = sum(scale * tanh(query + key), axis=-1)``. Weight: ``scale (dim,)``
    (glorot_uniform) with ``use_scale``. Masks, ``use_causal_mask`` and
    ``return_attention_scores`` as in :class:`Attention`.

    Input shape: ``[query (B, Tq, dim), value (B, Tv, dim_v)]`` or with ``key (B, Tv, dim)``.
    Output shape: ``(B, Tq, dim_v)``; scores ``(B, Tq, Tv)``.
    """

    use_scale: bool = True
    dropout: float = 0.0
    use_causal_mask: bool = False
    return_attention_scores: bool = False
    seed: int | None = None

    def init(self, rng, x):
        q, _, _ = self._parse(x)
        if not self.use_scale:
            return {}, {}
        return {"scale": self._weight(rng, "scale", "glorot_uniform", (int(q.shape[-1]),))}, {}

    def _scores(self, params, q, k):
        t = jnp.tanh(q[:, :, None, :] + k[:, None, :, :])
        return jnp.sum(t * params["scale"] if self.use_scale else t, axis=-1)
