"""Keras 3 (JAX backend) as a test oracle: build the Keras layer, copy its weights into the
kerax param tree by name (no transposition: the layouts are the same), compare outputs.

Weight names: a Keras variable's path relative to its layer, with the cell level of
recurrent layers dropped (``lstm/lstm_cell/kernel`` -> ``kernel``;
``bidirectional/forward_lstm/lstm_cell/kernel`` -> ``forward_layer/kernel`` with ``rename``).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
import pytest

keras = pytest.importorskip("keras")


def keras_weights(layer: Any) -> dict[str, np.ndarray]:
    """``{"kernel": ..., "query/kernel": ...}``: the layer's variables by relative path."""
    out = {}
    prefix = layer.path + "/" if getattr(layer, "path", None) else layer.name + "/"
    for v in layer.weights:
        path = v.path[len(prefix):] if v.path.startswith(prefix) else v.path
        parts = [p for p in path.split("/") if not p.endswith("_cell") and p != "cell"]
        out["/".join(parts)] = np.asarray(v.numpy() if hasattr(v, "numpy") else v)
    return out


def to_kerax(params: dict, state: dict, weights: dict[str, np.ndarray],
             rename: Callable[[str], str] = lambda p: p) -> tuple[dict, dict]:
    """Replaces every leaf of ``params``/``state`` by the Keras weight of the same path."""
    from kerax.core.specs import flat_paths

    mapped = {rename(k): v for k, v in weights.items()}
    trees = []
    for tree in (params, state):
        flat = flat_paths(tree)
        missing = sorted(set(flat) - set(mapped))
        assert not missing, f"no Keras weight for {missing}; Keras has {sorted(mapped)}"
        for k, v in flat.items():
            assert mapped[k].shape == tuple(v.shape), f"{k}: Keras {mapped[k].shape} vs kerax {v.shape}"
        trees.append(_replace(tree, mapped, ""))
    used = set(flat_paths(params)) | set(flat_paths(state))
    extra = sorted(set(mapped) - used)
    assert not extra, f"Keras weights not used by kerax: {extra}"
    return trees[0], trees[1]


def _replace(tree: Any, mapped: dict, prefix: str) -> Any:
    if isinstance(tree, dict):
        return {k: _replace(v, mapped, f"{prefix}{k}" if not prefix else f"{prefix}/{k}") for k, v in tree.items()}
    return jax.numpy.asarray(mapped[prefix])


def compare(kx_layer: Any, keras_layer: Any, x: Any, *, training: bool = False, rtol: float = 1e-5,
            atol: float = 1e-5, rename: Callable[[str], str] = lambda p: p, keras_kwargs: dict | None = None,
            kx_kwargs: dict | None = None) -> tuple[Any, Any]:
    """Runs both layers on ``x`` with Keras's weights; asserts the outputs agree."""
    keras_out = keras_layer(x, training=training, **(keras_kwargs or {}))
    params, state = kx_layer.init(jax.random.key(0), x)
    params, state = to_kerax(params, state, keras_weights(keras_layer), rename)
    kx_out, _ = kx_layer.apply(params, state, x, training=training, **(kx_kwargs or {}))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol),
                 kx_out, keras_out if not isinstance(keras_out, tuple) else list(keras_out))
    return kx_out, keras_out
