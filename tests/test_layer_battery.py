"""One battery over the descriptor table of every public layer (see tests/cases.py).

For each layer: abstract shape inference agrees with the real output; apply works under
jit, grad (w.r.t. params, eagerly and under jit) and vmap (over a stack of parameter sets); init is the same
eagerly and under jit; the config survives JSON and rebuilds an equivalent layer; the
param-tree structure matches the golden file in tests/golden/ (regenerate deliberately
with KERAX_UPDATE_GOLDEN=1).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cases import all_cases
from kerax import errors
from kerax.core.specs import flat_paths
from kerax.core.symbolic import ShapeSpec, infer_output

CASES = all_cases()
GOLDEN = Path(__file__).parent / "golden" / "param_trees"
KEY = jax.random.key(0)


def _run(case, params, state, x, training=False):
    layer = case.make()
    rng = jax.random.key(1) if training else None
    return layer.apply(params, state, x, rng=rng, training=training)


@pytest.fixture(params=CASES, ids=[c.name for c in CASES])
def case(request):
    return request.param


@pytest.fixture(autouse=True)
def strict_dtypes():
    """Layers must not rely on implicit dtype promotion (optax does, so only here)."""
    with jax.numpy_dtype_promotion("strict"):
        yield


def test_abstract_shape_matches_real_output(case):
    layer = case.make()
    x = case.inputs()
    params, state = layer.init(KEY, x)
    y, _ = layer.apply(params, state, x)
    spec_in = [ShapeSpec(a.shape, a.dtype) for a in x] if isinstance(x, list) else ShapeSpec(x.shape, x.dtype)
    inferred = infer_output(layer, spec_in)
    assert jax.tree.map(lambda s: tuple(s.shape), inferred) == jax.tree.map(lambda a: tuple(a.shape), y)
    abstract = jax.eval_shape(lambda x: layer.apply(*layer.init(KEY, x), x)[0], x)
    assert jax.tree.map(lambda s: (s.shape, s.dtype), abstract) == jax.tree.map(lambda a: (a.shape, a.dtype), y)


def test_jit_matches_eager(case):
    layer = case.make()
    x = case.inputs()
    params, state = layer.init(KEY, x)
    eager, _ = layer.apply(params, state, x)
    jitted, _ = jax.jit(layer.apply)(params, state, x)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), eager, jitted)


def test_init_under_jit_equals_eager(case):
    layer = case.make()
    x = case.inputs()
    eager = layer.init(KEY, x)
    jitted = jax.jit(layer.init)(KEY, jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), x))
    assert jax.tree.structure(eager) == jax.tree.structure(jitted)
    if case.exact_init:
        jax.tree.map(np.testing.assert_array_equal, eager, jitted)
    else:
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), eager, jitted)


def test_grad_wrt_params(case):
    layer = case.make()
    x = case.inputs()
    params, state = layer.init(KEY, x)

    def loss(p):
        y, _ = layer.apply(p, state, x)
        return sum(jnp.sum(jnp.nan_to_num(a.astype(jnp.float32)) ** 2) for a in jax.tree.leaves(y))

    grads = jax.grad(loss)(params)
    jitted = jax.jit(jax.grad(loss))(params)  # as in a train step (staged tracing differs)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), grads, jitted)
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    for g in jax.tree.leaves(grads):
        assert np.all(np.isfinite(g))
    if jax.tree.leaves(params) and case.grad:
        assert any(np.any(g != 0) for g in jax.tree.leaves(grads)), "all gradients are zero"


def test_vmap_over_parameter_sets(case):
    layer = case.make()
    x = case.inputs()
    keys = jax.random.split(KEY, 3)
    stacked = jax.vmap(lambda k: layer.init(k, x))(keys)
    ys, _ = jax.vmap(lambda p, s: layer.apply(p, s, x), axis_size=3)(*stacked)
    for i in range(3):
        p_i, s_i = jax.tree.map(lambda a: a[i], stacked)
        y_i, _ = layer.apply(p_i, s_i, x)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-6), ys, y_i)
    if jax.tree.leaves(stacked[0]):  # different keys give different parameter sets
        assert any(not np.array_equal(a[0], a[1]) for a in jax.tree.leaves(stacked[0]))


def test_config_round_trip(case):
    layer = case.make()
    config = json.loads(json.dumps(layer.get_config()))
    objs = case.custom_objects(layer) if case.custom_objects else None
    clone = type(layer).from_config(config, custom_objects=objs)
    assert clone is not layer
    assert clone.get_config() == layer.get_config()
    x = case.inputs()
    params, state = layer.init(KEY, x)
    a, _ = layer.apply(params, state, x)
    b, _ = clone.apply(params, state, x)
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_training_mode_needs_rng(case):
    if not case.training:
        pytest.skip("layer is deterministic in training")
    layer = case.make()
    x = case.inputs()
    params, state = layer.init(KEY, x)
    y, _ = layer.apply(params, state, x, rng=jax.random.key(3), training=True)
    assert jax.tree.map(jnp.shape, y) == jax.tree.map(jnp.shape, x)
    with pytest.raises(errors.MissingRNGError, match="needs a random key when training"):
        layer.apply(params, state, x, training=True)


def _tree_record(tree):
    return {p: f"{np.asarray(v).dtype} {tuple(np.shape(v))}" for p, v in flat_paths(tree).items()}


def test_param_tree_matches_golden(case):
    layer = case.make()
    params, state = layer.init(KEY, case.inputs())
    record = {"params": _tree_record(params), "state": _tree_record(state)}
    path = GOLDEN / f"{case.name}.json"
    if os.environ.get("KERAX_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    assert path.exists(), f"no golden file {path}; run with KERAX_UPDATE_GOLDEN=1 once, deliberately"
    assert record == json.loads(path.read_text())


def test_grad_wrt_inputs_under_jit(case):
    """Differentiable through the layer (pooling, reshaping: layers without params too)."""
    if case.int_high is not None:
        pytest.skip("integer inputs")
    layer = case.make()
    x = case.inputs()
    params, state = layer.init(KEY, x)

    def f(x):
        y, _ = layer.apply(params, state, x)
        return sum(jnp.sum(jnp.nan_to_num(a.astype(jnp.float32)) ** 2) for a in jax.tree.leaves(y))

    g = jax.jit(jax.grad(f))(x)
    assert jax.tree.structure(g) == jax.tree.structure(x)
    assert all(np.all(np.isfinite(a)) for a in jax.tree.leaves(g))
