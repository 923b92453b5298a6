"""Pure, jit-compiled step builders: ``make_train_step``, ``make_eval_step``, ``make_predict_step``.

::

    train_step = kx.make_train_step(model, loss="sparse_categorical_crossentropy",
                                    metrics=["accuracy"])
    ts, logs = train_step(ts, (x, y))          # or (x, y, sample_weight)

With ``steps_per_execution=K`` every leaf of the batch has a leading axis of K and one
call runs K optimizer steps (``lax.scan``; unrolled for convolutional models on CPU,
where XLA runs convolutions inside loops slowly, and two steps per loop iteration for
other models on CPU, which halves the loop's copies of the carried state: W4 of bench/
7% faster a step, W1 3%). The train state is donated.

The step builders also expose the lower-level pieces the fit loop uses: ``run(ts,
metric_state, data, idx)`` accumulates metrics on device across calls, either over
batches given directly (``idx=None``; leading axis K) or gathered by ``idx`` (K, B) from a
data set that lives on the device.

``on_nan``: ``"warn"`` (default) applies every update, as Keras does, and counts
non-finite losses so the loop can report them; ``"stop"`` never applies a non-finite update
and freezes the state from the first one on; ``"skip"`` drops non-finite updates and counts
consecutive ones. While ``jax_debug_nans`` (or ``jax_debug_infs``) is on (the CLI's
``--debug-nans``), every call runs a program of its own that applies updates as ``"warn"``
does and donates nothing (evaluation steps too): a masked update would keep the NaN out of
the step's outputs, where JAX looks for it, and JAX then re-runs the step op by op on its
inputs to name the primitive that made the NaN. The program is picked when the step is
called (:class:`PerMode`; JAX's compile cache does not tell the two modes apart), so
turning the flag on or off between calls takes effect.
"""

from __future__ import annotations

import ctypes
import functools
import sys
import threading
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from kerax import errors, loss_scale
from kerax.core.layer import aux_losses
from kerax.privacy.dpsgd import check_config as check_dp
from kerax.privacy.dpsgd import dp_value_and_grad
from kerax.training.objectives import NAN_KEY, Objectives
from kerax.training.packed import Packed, unpacked

ON_NAN = ("warn", "stop", "skip")


def _split_batch(batch: Any) -> tuple[Any, Any, Any]:
    if not isinstance(batch, (tuple, list)) or not 1 <= len(batch) <= 3:
        raise errors.InputStructureError(
            "a batch must be a tuple (x, y) or (x, y, sample_weight); received "
            f"{type(batch).__name__}" + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
        )
    x, y, sw = (list(batch) + [None, None])[:3]
    return x, y, sw


def _batch_size(x: Any, axis: int = 0) -> int:
    return int(jax.tree.leaves(x)[0].shape[axis])


def uses_conv(model: Any) -> bool:
    """True if the model contains a convolution (walks nested containers)."""
    from kerax.layers.conv import _ConvBase

    todo, seen = [model], set()
    while todo:
        layer = todo.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, _ConvBase):
            return True
        core = getattr(layer, "core", None)
        todo.extend(getattr(core, "layers", ()) if core is not None else ())
        todo.extend(getattr(layer, "layers", ()) if isinstance(getattr(layer, "layers", None), (list, tuple)) else ())
    return False


def _loop(body: Any, carry: Any, xs: Any, k: int, unroll: bool | int) -> Any:
    """``lax.scan`` over the leading axis of ``xs`` (``unroll``: an int, its steps per loop
    iteration), or a Python loop (``unroll=True``: fully unrolled)."""
    flag = isinstance(unroll, (bool, np.bool_))
    if k == 1 or (flag and unroll):
        for i in range(k):
            carry, _ = body(carry, jax.tree.map(lambda a: a[i], xs))
        return carry
    return jax.lax.scan(body, carry, xs, unroll=1 if flag else max(1, int(unroll)))[0]


def _default_unroll(model: Any) -> bool | int:
    """``_loop``'s ``unroll`` for a train step: see the module docstring (accelerators keep
    the rolled loop, unmeasured there)."""
    if jax.default_backend() != "cpu":
        return False
    return True if uses_conv(model) else 2


def debugging() -> bool:
    """Whether ``jax_debug_nans`` or ``jax_debug_infs`` is on (in this thread)."""
    return bool(jax.config.jax_debug_nans or jax.config.jax_debug_infs)


class PerMode:
    """A compiled step's program for the current :func:`debugging` setting: ``make(debug)``
    builds it on first use (see the module docstring); ``get()`` picks it at each call."""

    def __init__(self, make: Callable[[bool], Callable]) -> None:
        self._make, self._programs = make, {}

    def get(self) -> Callable:
        debug = debugging()
        fn = self._programs.get(debug)
        if fn is None:
            fn = self._programs[debug] = self._make(debug)
        return fn


def _where(pred: Any, new: Any, old: Any) -> Any:
    return jax.tree.map(lambda n, o: jnp.where(pred, n, o), new, old)


class TrainStep:
    """A compiled training step (see the module docstring); build with ``make_train_step``."""

    def __init__(self, model: Any, objectives: Objectives, steps_per_execution: int = 1,
                 on_nan: str = "warn", unroll: bool | int | None = None, distribute: Any = None,
                 dp: Any = None) -> None:
        if on_nan not in ON_NAN:
            raise errors.ConfigError(f"on_nan must be one of {list(ON_NAN)}; received {on_nan!r}")
        if not isinstance(steps_per_execution, int) or steps_per_execution < 1:
            raise errors.ConfigError(
                f"steps_per_execution must be a positive int; received {steps_per_execution!r}"
            )
        self.model, self.objectives = model, objectives
        self.k, self.on_nan = steps_per_execution, on_nan
        self.unroll = _default_unroll(model) if unroll is None else unroll
        self.distribute = distribute
        check_dp(dp, model, distribute)
        self.dp = dp  # kx.privacy.DPSGD or None
        self.axis = distribute.axis_name if distribute is not None and distribute.mode == "pmap" else None
        self._runs, self._calls = PerMode(self._make_run), PerMode(self._make_call)
        self._init_metrics = jax.jit(lambda: Packed.pack(objectives.init()))  # one call, not one per leaf
        self._precompiled: set = set()  # the shapes precompile has compiled for

    @property
    def run(self) -> Callable:
        """The jitted ``_run`` for the current :func:`debugging` setting."""
        return self._runs.get()

    @property
    def _call(self) -> Callable:
        return self._calls.get()

    def on_nan_for(self, debug: bool) -> str:
        """The ``on_nan`` a program applies: ``"warn"`` while debugging (module docstring)."""
        return "warn" if debug else self.on_nan

    def _make_run(self, debug: bool) -> Callable:
        run = functools.partial(self._run, on_nan=self.on_nan_for(debug))
        if self.axis is not None:
            return jax.pmap(run, axis_name=self.axis, donate_argnums=() if debug else (0, 1),
                            devices=self.distribute.devices)
        # the packed metric state is not donated: it is what the loop waits on
        return jax.jit(run, donate_argnums=() if debug else (0,))

    def _make_call(self, debug: bool) -> Callable:
        call = functools.partial(self._call_impl, on_nan=self.on_nan_for(debug))
        return jax.jit(call, donate_argnums=() if debug else (0,))

    def init_metrics(self) -> Packed:
        """The fit loop's metric state: packed (``kerax.training.packed``), one vector per dtype."""
        return self._init_metrics()

    def compute(self, metric_state: Any) -> dict:
        if self.axis is not None:  # one state per device: additive, so sum them
            metric_state = jax.tree.map(lambda a: a.sum(0), metric_state)
        return _compute(self.objectives, metric_state)

    def precompile(self, abstract_ts: Callable[[], Any], data: Any, table_shape: tuple | None) -> threading.Thread | None:
        """Starts compiling ``run`` for in-memory ``data`` and an index table of
        ``table_shape`` (None: ``data`` is the execution's stacked batches) in a thread;
        ``join`` it before the first ``run`` and before leaving.
        ``abstract_ts()`` gives the train state's shapes (``jax.eval_shape``).

        XLA compiles without holding the GIL, so the train state's, the metrics' and the
        epoch-end programs, compiled meanwhile on this thread, cost the first step nothing
        (2 CPU cores: the first ``fit`` step of W1 in bench/ took about 0.1 s less). The
        result lands in jit's cache: the first ``run`` finds it. A failure is left to that
        call, which traces again and raises it. Returns None, starting nothing, when an
        earlier call already compiled these shapes (a ``fit`` in a loop).
        """
        leaves, tree = jax.tree.flatten(data)
        key = (table_shape and tuple(table_shape), tree, tuple((a.shape, str(a.dtype)) for a in leaves))
        if key in self._precompiled:
            return None
        self._precompiled.add(key)
        ts, mstate = abstract_ts(), jax.eval_shape(self._init_metrics)
        idx = None if table_shape is None else (jax.ShapeDtypeStruct(table_shape, np.int32),
                                                jax.ShapeDtypeStruct((), np.int32))

        run = self.run  # picked here: jax.debug_nans() as a context is the main thread's only

        def work() -> None:
            try:
                run.lower(ts, mstate, data, idx, None).compile()
            except Exception:  # noqa: BLE001 - the real call reports it
                pass

        release_free_heap()
        thread = threading.Thread(target=work, name="kerax-precompile", daemon=True)
        thread.start()
        try:
            _compute_jit.lower(self.objectives, mstate).compile()
        except Exception:  # noqa: BLE001 - as above
            pass
        return thread

    def _psum(self, x: Any) -> Any:
        return x if self.axis is None else jax.lax.psum(x, self.axis)

    # -- one optimizer step ---------------------------------------------------------------------

    def _one(self, ts: Any, mstate: dict, x: Any, y: Any, sw: Any, mask: Any,
             on_nan: str | None = None) -> tuple[Any, dict]:
        model, obj = self.model, self.objectives
        on_nan = self.on_nan if on_nan is None else on_nan
        # Under pmap each device averages over the *global* number of rows and the sums of
        # the devices' losses and gradients are the single-device ones.
        count = self._psum(jnp.sum(mask))
        share = 1.0 if self.axis is None else 1.0 / jax.lax.psum(1, self.axis)
        rng = ts.step_key() if self.axis is None else jax.random.fold_in(ts.step_key(), jax.lax.axis_index(self.axis))

        def loss_fn(params):
            y_pred, new_state = model.apply(params, ts.state, x, rng=rng, training=True)
            total, parts = obj.loss(y, y_pred, sw, mask, count)
            total = total + share * (model.penalty(params) + aux_losses(new_state))
            return total, (y_pred, new_state, parts)

        if self.dp is not None:  # DP-SGD: clipped, noised per-example gradients (kerax.privacy)
            total, parts, y_pred, new_state, grads = dp_value_and_grad(
                self.dp, model, obj.loss, ts.params, ts.state, x, y, sw, mask, rng)
        else:  # with a LossScaleOptimizer, the loss is scaled for the backward pass
            (total, (y_pred, new_state, parts)), grads = loss_scale.scaled_value_and_grad(
                loss_fn, ts.params, loss_scale.current_scale(ts.opt_state))
        if self.axis is not None:
            total, parts, grads = self._psum((total, parts, grads))
            new_state = jax.lax.pmean(new_state, self.axis)
        if loss_scale.current_scale(ts.opt_state) is not None:
            # The LossScaleOptimizer skips a step with non-finite gradients; the model state
            # (BatchNormalization's moving statistics) is kept with the weights, not poisoned.
            new_state = _where(loss_scale.all_finite(grads), new_state, ts.state)
        candidate = ts.apply_gradients(grads, state=new_state)
        finite = jnp.isfinite(total)
        # A finite loss can still have non-finite gradients (a LossScaleOptimizer skips those itself).
        if on_nan != "warn" and loss_scale.current_scale(ts.opt_state) is None:
            finite = finite & jnp.all(jnp.stack(
                [jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)] or [jnp.bool_(True)]
            ))
        bad = mstate[NAN_KEY]
        if on_nan == "warn":
            new_ts, applied = candidate, jnp.bool_(True)
        else:
            applied = finite & ((bad[0] == 0) if on_nan == "stop" else jnp.bool_(True))
            kept = _where(applied, (candidate.step, candidate.params, candidate.state, candidate.opt_state),
                          (ts.step, ts.params, ts.state, ts.opt_state))
            new_ts = ts.replace(step=kept[0], params=kept[1], state=kept[2], opt_state=kept[3])
        weight = mask * applied.astype(mask.dtype)
        mstate = obj.update(mstate, total, parts, y, y_pred, sw, weight)
        nonfinite = (~finite).astype(jnp.float32)
        mstate[NAN_KEY] = jnp.stack([bad[0] + nonfinite, jnp.where(finite, 0.0, bad[1] + 1.0)])
        return new_ts, mstate

    def _run(self, ts: Any, mstate: dict, data: Any, idx: Any, mask: Any = None,
             on_nan: str | None = None) -> tuple[Any, dict, Any]:
        """K steps over ``data`` (leading axis K) or over ``data[idx[k]]``; see module doc.

        ``idx`` may also be a pair ``(table, pos)``: a whole epoch's indices (G, K, B) sent
        to the device once, and the device scalar ``pos`` of this execution's row of it;
        the third output is then ``pos + 1``, the next call's position, so the loop never
        sends anything per step. ``mask`` (K, B) marks real rows; None means all. Only data
        parallelism pads a training batch (to a multiple of the device count).

        ``mstate`` is a dict or a :class:`Packed` one (returned the same way). The third
        output is None for a packed state outside ``pmap``: the state is not donated, so the
        loop waits on it; otherwise ``ts.step``'s copy."""
        token, packed = None, isinstance(mstate, Packed)
        mstate = unpacked(mstate)
        if isinstance(idx, tuple):
            table, pos = idx
            idx, token = table[pos], pos + 1

        def body(carry, xs):
            ts, mstate = carry
            if mask is not None:
                xs, m = xs
            batch = xs if idx is None else jax.tree.map(lambda a: a[xs], data)
            x, y, sw = batch
            if mask is None:
                m = jnp.ones((_batch_size(x),), jnp.float32)
            return self._one(ts, mstate, x, y, sw, m, on_nan), None

        xs = data if idx is None else idx
        if mask is not None:
            xs = (xs, mask)
        k = jax.tree.leaves(xs)[0].shape[0]
        ts, mstate = _loop(body, (ts, mstate), xs, k, self.unroll)
        if token is None and (not packed or self.axis is not None):
            token = ts.step + 0  # a small output to wait on
        return ts, Packed.pack(mstate) if packed else mstate, token

    # -- the pure API -------------------------------------------------------------------------------

    def _call_impl(self, ts: Any, batch: Any, on_nan: str | None = None) -> tuple[Any, dict]:
        x, y, sw = _split_batch(batch)
        data = (x, y, sw) if self.k > 1 else jax.tree.map(lambda a: a[None], (x, y, sw))
        ts, mstate, _ = self._run(ts, self.objectives.init(), data, None, None, on_nan)
        return ts, self.objectives.compute(mstate)

    def __call__(self, ts: Any, batch: Any) -> tuple[Any, dict]:
        """``(ts, logs)`` after one call (``steps_per_execution`` optimizer steps).

        With ``distribute``, ``ts`` is replicated (``dp.replicate(ts)``) and ``batch`` is
        the global batch on the host; the step splits it over the devices."""
        if self.distribute is None:
            ts, logs = self._call(ts, batch)
            return ts, {k: logs[k] for k in self.objectives.log_names() if k in logs}
        x, y, sw = _split_batch(batch)
        data = (x, y, sw) if self.k > 1 else jax.tree.map(lambda a: np.asarray(a)[None], (x, y, sw))
        self.distribute.check_batch_size(_batch_size(data, 1))
        data, mask = self.distribute.shard_batch(data, stacked=True)
        ts, mstate, _ = self.run(ts, self.distribute.replicate(self.objectives.init()), data, None, mask)
        return ts, self.compute(mstate)



def release_free_heap() -> None:
    """Hands the heap's free memory back to the OS (glibc's ``malloc_trim``; elsewhere a no-op).

    A compile on another thread allocates from a malloc arena of its own, so the memory
    the main thread freed (the weights' initialisation program, say) would stay mapped
    beside it and add to the peak: W5 of bench/ peaked at 401-456 MB, and at 389-396 MB
    with the trim (390-402 MB compiling on one thread)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None


@functools.partial(jax.jit, static_argnums=0)
def _compute_jit(objectives: Objectives, mstate: Any) -> dict:
    return objectives.compute(unpacked(mstate))


def _compute(objectives: Objectives, mstate: dict) -> dict:
    """The logs, in Keras's order (loss first; jit returns dicts with sorted keys)."""
    out = _compute_jit(objectives, mstate)
    return {k: out[k] for k in objectives.log_names() if k in out}


class EvalStep:
    """A compiled evaluation step: accumulates the loss and metrics without updating."""

    def __init__(self, model: Any, objectives: Objectives, steps_per_execution: int = 1,
                 distribute: Any = None) -> None:
        self.model, self.objectives, self.k = model, objectives, steps_per_execution
        self.unroll = uses_conv(model) and jax.default_backend() == "cpu"
        self.distribute = distribute
        self.axis = distribute.axis_name if distribute is not None and distribute.mode == "pmap" else None
        self._runs = PerMode(self._make_run)
        self._call = jax.jit(self._call_impl)
        self._init_metrics = jax.jit(lambda: Packed.pack(objectives.init()))

    @property
    def run(self) -> Callable:
        """The jitted ``_run``: the metric state donated, except while debugging (JAX re-runs
        a program with a NaN output on its inputs; see the module docstring)."""
        return self._runs.get()

    def _make_run(self, debug: bool) -> Callable:
        donate = () if debug else (2,)
        if self.axis is not None:
            return jax.pmap(self._run, axis_name=self.axis, donate_argnums=donate, devices=self.distribute.devices)
        return jax.jit(self._run, donate_argnums=donate)

    def init_metrics(self) -> Packed:
        """``evaluate``'s metric state, packed as ``TrainStep.init_metrics``'s."""
        return self._init_metrics()

    def compute(self, metric_state: dict) -> dict:
        if self.axis is not None:
            metric_state = jax.tree.map(lambda a: a.sum(0), metric_state)
        return _compute(self.objectives, metric_state)

    def _run(self, params: Any, state: Any, mstate: Any, data: Any, idx: Any, mask: Any) -> Any:
        obj, packed = self.objectives, isinstance(mstate, Packed)
        mstate = unpacked(mstate)

        def body(mstate, xs):
            if idx is None:
                batch, m = xs
            else:
                i, m = xs
                batch = jax.tree.map(lambda a: a[i], data)
            x, y, sw = batch
            y_pred, new_state = self.model.apply(params, state, x, training=False)
            if self.axis is None:
                total, parts = obj.loss(y, y_pred, sw, m)
                total = total + self.model.penalty(params) + aux_losses(new_state)
            else:
                total, parts = obj.loss(y, y_pred, sw, m, jax.lax.psum(jnp.sum(m), self.axis))
                total, parts = jax.lax.psum((total, parts), self.axis)
                total = total + self.model.penalty(params) + jax.lax.pmean(aux_losses(new_state), self.axis)
            return obj.update(mstate, total, parts, y, y_pred, sw, m), None

        xs = (data if idx is None else idx, mask)
        mstate = _loop(body, mstate, xs, mask.shape[0], self.unroll)
        return Packed.pack(mstate) if packed else mstate

    def _call_impl(self, ts: Any, batch: Any) -> dict:
        x, y, sw = _split_batch(batch)
        mask = jnp.ones((1, _batch_size(x)), jnp.float32)
        data = jax.tree.map(lambda a: a[None], (x, y, sw))
        mstate = self._run(ts.params, ts.state, self.objectives.init(), data, None, mask)
        return self.objectives.compute(mstate)

    def __call__(self, ts: Any, batch: Any) -> dict:
        """The logs (loss and metrics) of ``batch`` under ``ts``'s weights."""
        if self.distribute is None:
            logs = self._call(ts, batch)
            return {k: logs[k] for k in self.objectives.log_names() if k in logs}
        x, y, sw = _split_batch(batch)
        data, mask = self.distribute.shard_batch(jax.tree.map(lambda a: np.asarray(a)[None], (x, y, sw)), stacked=True)
        mstate = self.run(ts.params, ts.state, self.distribute.replicate(self.objectives.init()), data, None, mask)
        return self.compute(mstate)


def make_train_step(model: Any, loss: Any, metrics: Any = None, loss_weights: Any = None,
                    steps_per_execution: int = 1, on_nan: str = "warn",
                    distribute: Any = None, dp: Any = None) -> TrainStep:
    """A jit-compiled ``train_step(ts, batch) -> (ts, logs)`` for ``model``.

    ``loss``, ``metrics`` and ``loss_weights`` take what ``compile`` takes (names, objects,
    per-output lists or dicts). ``ts`` is a :class:`~kerax.TrainState` and is donated.
    ``dp``: a ``kx.privacy.DPSGD`` for differentially private steps (DP-SGD).
    """
    return TrainStep(model, Objectives.create(model, loss, metrics, loss_weights),
                     steps_per_execution, on_nan, distribute=_checked(distribute), dp=dp)


def make_eval_step(model: Any, loss: Any, metrics: Any = None, loss_weights: Any = None,
                   distribute: Any = None) -> EvalStep:
    """A jit-compiled ``eval_step(ts, batch) -> logs`` (no update)."""
    return EvalStep(model, Objectives.create(model, loss, metrics, loss_weights), distribute=_checked(distribute))


def make_predict_step(model: Any, distribute: Any = None) -> Any:
    """A jit-compiled ``predict_step(params, state, x) -> outputs`` (``training=False``)."""
    _checked(distribute)

    @jax.jit
    def predict_step(params: Any, state: Any, x: Any) -> Any:
        return model.apply(params, state, x, training=False)[0]

    return predict_step


def _checked(distribute: Any) -> Any:
    from kerax.distribute import DataParallel

    if distribute is not None and not isinstance(distribute, DataParallel):
        raise errors.ConfigError(
            f"distribute= expects a kx.distribute.DataParallel; received {type(distribute).__name__}"
        )
    return distribute
