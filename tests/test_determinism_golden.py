"""D6: golden hashes of kerax's random streams at a pinned JAX version.

A change in JAX's PRNG (threefry's bit layout, ``jax_threefry_partitionable``, how an
initializer turns bits into floats) silently changes every "seeded" result. These hashes
pin, for the JAX version in ``golden/d6_hashes.json``: a two-layer model's initial weights
from ``key(0)``, a Dropout mask drawn from ``key(1)``, the keys a training step derives
for a layer (``TrainState.step_key``, then ``kerax.core.rng.derive``) and ``fit``'s epoch
order. Under another JAX version the test is skipped with the reason (RNG streams may
change across versions, jax-ml/jax discussion #18480); regenerate with
``python tests/test_determinism_golden.py --write``.

Trained weights are not pinned here: a matmul's summation order follows the kernels XLA
picks for the host CPU, so trained weights are pinned across processes and thread counts
on one machine (D1-D3, test_training.py), not across CPU models. Every value hashed here is
made from random bits by element-wise arithmetic only.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kerax as kx
from kerax import layers
from kerax.core.rng import derive

GOLDEN = Path(__file__).parent / "golden" / "d6_hashes.json"


def _sha(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _hashes() -> dict[str, str]:
    model = kx.Sequential([layers.Dense(16, activation="relu", input_shape=(4,)), layers.Dense(3)])
    params, _ = model.init(jax.random.key(0), np.zeros((2, 4), np.float32))
    weights = [leaf for _, leaf in sorted(jax.tree_util.tree_leaves_with_path(params), key=lambda t: str(t[0]))]
    drop = layers.Dropout(0.5)
    mask, _ = drop.apply({}, {}, np.ones((8, 16), np.float32), rng=jax.random.key(1), training=True)
    step_keys = [jax.random.fold_in(jax.random.key(7), step) for step in range(3)]  # TrainState.step_key
    keys = jax.random.key_data(jnp.stack([derive(k, "dropout") for k in step_keys]))
    order = [kx.data.epoch_order(50, True, seed=3, epoch=e) for e in range(2)]
    return {"init": _sha(*weights), "dropout": _sha(mask), "keys": _sha(keys), "epoch_order": _sha(*order)}


def _golden() -> dict:
    return json.loads(GOLDEN.read_text())


@pytest.fixture
def optimized():
    """XLA's optimizations on, as users run (conftest turns most off for speed): unoptimized,
    glorot_uniform's scaling of the uniform bits rounds differently (measured: 38 of the first
    kernel's 64 entries one unit in the last place apart)."""
    old = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", False)
    jax.clear_caches()  # the flag is not in jit's cache key: programs compiled before would be reused
    yield
    jax.config.update("jax_disable_most_optimizations", old)
    jax.clear_caches()


@pytest.mark.usefixtures("optimized")
def test_d6_random_streams_match_the_golden_hashes():
    golden = _golden()
    if jax.__version__ != golden["jax"]:
        pytest.skip(f"golden hashes are for jax {golden['jax']}, this is jax {jax.__version__}: RNG streams "
                    "may change across JAX versions; regenerate with python tests/test_determinism_golden.py --write")
    assert _hashes() == golden["hashes"]


def test_d6_the_hashes_see_a_changed_stream():
    """The fixture is not vacuous: another seed gives another hash of each kind."""
    h = _hashes()
    assert len(set(h.values())) == 4
    params, _ = kx.Sequential([layers.Dense(16, input_shape=(4,)), layers.Dense(3)]).init(
        jax.random.key(1), np.zeros((2, 4), np.float32))
    assert _sha(*jax.tree.leaves(params)) != h["init"]


if __name__ == "__main__" and "--write" in sys.argv:
    GOLDEN.write_text(json.dumps({"jax": jax.__version__, "hashes": _hashes()}, indent=1) + "\n")
    print(f"wrote {GOLDEN}")
