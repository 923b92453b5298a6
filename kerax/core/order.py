"""Dict key order in weight trees.

Keras lists a layer's weights in creation order (``get_weights``, h5 files), and kerax keeps
that order as the insertion order of its params dicts. ``jax.tree.map`` and ``jax.vmap``
return dicts with *sorted* keys, so a tree rebuilt through them must get its order back
before anything names or lists its weights.
"""

from __future__ import annotations

from typing import Any


def in_order_of(tree: Any, like: Any) -> Any:
    """``tree`` with every dict's keys in ``like``'s order (same structure; lists and tuples
    matched element by element, leaves taken from ``tree``).

        >>> in_order_of({"beta": 1, "gamma": 2}, {"gamma": 0, "beta": 0})
        {'gamma': 2, 'beta': 1}
    """
    if isinstance(tree, dict) and isinstance(like, dict):
        return {k: in_order_of(tree[k], like[k]) for k in like}
    if isinstance(tree, (tuple, list)) and isinstance(like, (tuple, list)):
        return type(tree)(in_order_of(t, l) for t, l in zip(tree, like))
    return tree
