"""``TrainState``: everything a training step reads and writes, as one pytree.

Fields: ``step`` (int32 scalar), ``params``, ``state`` (non-trainable values),
``opt_state`` (the optax state), ``rng`` (a key; the key of step ``n`` is
``fold_in(rng, n)``, so resuming at step ``n`` continues the same random stream), and
``tx`` (the optax transformation, static: it is not a leaf).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax


@dataclasses.dataclass(frozen=True)
class TrainState:
    """The training state pytree; ``tx`` is static metadata, everything else leaves.

    Example::

        ts = kx.TrainState.create(model, params, state, optax.adam(1e-3), rng=jax.random.key(0))
        ts = ts.apply_gradients(grads)
    """

    step: jax.Array
    params: Any
    state: Any
    opt_state: Any
    rng: jax.Array
    tx: Any = dataclasses.field(default=None, metadata={"static": True})

    @classmethod
    def create(
        cls,
        model: Any,
        params: Any,
        state: Any,
        tx: optax.GradientTransformation,
        rng: jax.Array | int = 0,
    ) -> "TrainState":
        """A fresh state at step 0 (``model`` is accepted for symmetry and unused).

        ``params`` and ``state`` are copied: the train steps donate the train state's
        buffers, and the arrays passed in (``model.params``, say) must stay usable."""
        del model
        return fresh(params, state, tx, rng, () if isinstance(rng, int) else None)

    def apply_gradients(self, grads: Any, **changes: Any) -> "TrainState":
        """One optimizer update; other fields (``state=``) may be replaced too."""
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        params = optax.apply_updates(self.params, updates)
        return self.replace(step=self.step + 1, params=params, opt_state=opt_state, **changes)

    def step_key(self) -> jax.Array:
        """The random key of the current step."""
        return jax.random.fold_in(self.rng, self.step)

    def replace(self, **changes: Any) -> "TrainState":
        return dataclasses.replace(self, **changes)


@jax.jit
def copy_tree(tree: Any) -> Any:
    """A copy of every array in ``tree`` (new buffers), in one compiled call."""
    return jax.tree.map(jnp.copy, tree)


def fresh(params: Any, state: Any, tx: Any, rng: Any, folds: tuple | None = None) -> TrainState:
    """``TrainState.create`` in one compiled program (not one tiny compilation per leaf
    shape, as running ``tx.init`` op by op costs). ``rng`` is a key, or with ``folds`` an
    int seed whose key is ``key(seed)`` folded in with each of ``folds`` in turn."""
    seeded = folds is not None
    if seeded and not -2**31 <= int(rng) < 2**31:  # wider than a traced int32: make the key here
        rng, seeded = jax.random.key(int(rng)), False
    compiled = _fresh
    try:
        hash(tx)
    except TypeError:  # not usable as a static argument: build it op by op
        compiled = _fresh.__wrapped__
    step, params, state, opt_state, rng = compiled(tx, seeded, tuple(folds or ()), params, state, rng)
    return TrainState(step=step, params=params, state=state, opt_state=opt_state, rng=rng, tx=tx)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _fresh(tx: Any, seeded: bool, folds: tuple, params: Any, state: Any, rng: Any) -> tuple:
    if seeded:
        rng = jax.random.key(rng)
    for f in folds:
        rng = jax.random.fold_in(rng, f)
    params, state = jax.tree.map(jnp.copy, (params, state))  # copies: the steps donate them
    return jnp.zeros((), jnp.int32), params, state, tx.init(params), rng


jax.tree_util.register_dataclass(
    TrainState,
    data_fields=["step", "params", "state", "opt_state", "rng"],
    meta_fields=["tx"],
)
