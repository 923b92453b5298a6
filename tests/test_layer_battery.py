"""One battery over the descriptor table of every public layer (see tests/cases.py).

For each layer: abstract shape inference agrees with the real output; apply works under
jit (equal to eager), grad (w.r.t. params and inputs, under jit) and vmap (over a stack of
parameter sets); init is the same eagerly and under jit; the config survives JSON and
rebuilds an equivalent layer (same program on the same params); the param-tree structure
matches the golden file in tests/golden/ (regenerate deliberately with
KERAX_UPDATE_GOLDEN=1). Compiled functions are shared between the checks of a case to keep
the suite fast.
"""

from __future__ import annotations

import functools
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
BY_NAME = {c.name: c for c in CASES}
GOLDEN = Path(__file__).parent / "golden" / "param_trees"
KEY = jax.random.key(0)


@pytest.fixture(params=CASES, ids=[c.name for c in CASES], scope="module")  # grouped: one build per case
def case(request):
    return request.param


@pytest.fixture(autouse=True)
def strict_dtypes():
    """Layers must not rely on implicit dtype promotion (optax does, so only here)."""
    with jax.numpy_dtype_promotion("strict"):
        yield


@functools.lru_cache(maxsize=4)
def _built(name: str):
    """The case's layer, input, weights and jitted apply (shared by the checks)."""
    case = BY_NAME[name]
    layer = case.make()
    x = case.inputs()
    params, state = layer.init(KEY, x)
    apply = jax.jit(lambda p, s, x: layer.apply(p, s, x)[0])
    return layer, x, params, state, apply


def _close(a, b, rtol=1e-5, atol=1e-6):
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=rtol, atol=atol), a, b)


@pytest.fixture
def optimized():
    """XLA's optimizations on (conftest turns them off): jitted ``init`` must equal the
    eager one bit for bit, and unoptimized programs round some products differently."""
    old = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", False)
    yield
    jax.config.update("jax_disable_most_optimizations", old)


@pytest.mark.usefixtures("optimized")
def test_shapes_jit_init_config_golden(case):
    layer, x, params, state, apply = _built(case.name)
    with jax.numpy_dtype_promotion("strict"):
        eager, _ = layer.apply(params, state, x)
        jitted = apply(params, state, x)
    _close(eager, jitted)  # jit == eager

    # abstract inference (symbolic, with None dims; and eval_shape) == the real output
    spec_in = [ShapeSpec(a.shape, a.dtype) for a in x] if isinstance(x, list) else ShapeSpec(x.shape, x.dtype)
    inferred = infer_output(layer, spec_in)
    assert jax.tree.map(lambda s: tuple(s.shape), inferred) == jax.tree.map(lambda a: tuple(a.shape), eager)
    abstract = jax.eval_shape(lambda x: layer.apply(*layer.init(KEY, x), x)[0], x)
    assert jax.tree.map(lambda s: (s.shape, s.dtype), abstract) == jax.tree.map(lambda a: (a.shape, a.dtype), eager)

    # init under jit == eager init (D4)
    specs = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), x)
    again = jax.jit(layer.init)(KEY, specs)
    assert jax.tree.structure(again) == jax.tree.structure((params, state))
    if case.exact_init:
        jax.tree.map(np.testing.assert_array_equal, (params, state), again)
    else:
        _close((params, state), again, rtol=1e-6, atol=0)

    # config: JSON round trip, equal config, and the same program on the same params
    config = json.loads(json.dumps(layer.get_config()))
    objs = case.custom_objects(layer) if case.custom_objects else None
    clone = type(layer).from_config(config, custom_objects=objs)
    assert clone is not layer and clone.get_config() == layer.get_config()
    program = lambda l: str(jax.make_jaxpr(lambda p, s, x: l.apply(p, s, x)[0])(params, state, x))
    assert program(clone) == program(layer)

    # the param-tree structure is deliberate (golden file)
    record = {k: {p: f"{np.asarray(v).dtype} {tuple(np.shape(v))}" for p, v in flat_paths(t).items()}
              for k, t in (("params", params), ("state", state))}
    path = GOLDEN / f"{case.name}.json"
    if os.environ.get("KERAX_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    assert path.exists(), f"no golden file {path}; run with KERAX_UPDATE_GOLDEN=1 once, deliberately"
    assert record == json.loads(path.read_text())


def test_grad_and_vmap(case):
    layer, x, params, state, apply = _built(case.name)
    differentiable_x = case.int_high is None

    def loss(p, x):
        y = layer.apply(p, state, x)[0]
        return sum(jnp.sum(jnp.nan_to_num(a.astype(jnp.float32)) ** 2) for a in jax.tree.leaves(y))

    argnums = (0, 1) if differentiable_x else 0
    grads = jax.jit(jax.grad(loss, argnums=argnums))(params, x)
    g_params = grads[0] if differentiable_x else grads
    assert jax.tree.structure(g_params) == jax.tree.structure(params)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    if jax.tree.leaves(params) and case.grad:
        assert any(np.any(g != 0) for g in jax.tree.leaves(g_params)), "all gradients are zero"
    if differentiable_x:
        assert jax.tree.structure(grads[1]) == jax.tree.structure(x)

    # vmap over a stack of parameter sets == applying each set alone
    keys = jax.random.split(KEY, 3)
    stacked = jax.jit(jax.vmap(lambda k: layer.init(k, x)))(keys)
    ys = jax.jit(jax.vmap(lambda p, s: layer.apply(p, s, x)[0], axis_size=3))(*stacked)
    host = jax.device_get(stacked)  # slicing on the host: no program compiled per leaf and index
    for i in range(3):
        p_i, s_i = jax.tree.map(lambda a: a[i], host)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-6), ys, apply(p_i, s_i, x))
    if jax.tree.leaves(stacked[0]):  # different keys give different parameter sets
        assert any(not np.array_equal(a[0], a[1]) for a in jax.tree.leaves(stacked[0]))


def test_training_mode_needs_rng(case):
    if not case.training:
        pytest.skip("layer is deterministic in training")
    layer, x, params, state, _ = _built(case.name)
    y, _ = jax.jit(lambda p, s, x, k: layer.apply(p, s, x, rng=k, training=True))(params, state, x, jax.random.key(3))
    assert jax.tree.map(jnp.shape, y) == jax.tree.map(jnp.shape, x)
    with pytest.raises(errors.MissingRNGError, match="needs a random key when training"):
        layer.apply(params, state, x, training=True)
