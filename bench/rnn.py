"""One LSTM train step in kerax against hand-written JAX, Flax (NNX, Linen) and Equinox.

Workload W3: ``LSTM(128)`` over ``(batch 64, 32 timesteps, 16 features)`` -> ``Dense(10)``
logits, sparse softmax cross-entropy, Adam(1e-3); one ``jax.jit`` train step
(``value_and_grad`` + optax, train state donated) per implementation, on a batch already on
the device. Every implementation runs in this one process, interleaved over several rounds
(the machine may be shared and noisy); each round times a block of steps, and the report
gives the median ms per step with min and max over rounds, the median process CPU time per
step (steadier than wall time on a shared machine; on a quiet one, equal to it or more),
the ratios to the hand-written ``lax.scan`` LSTM (gates as one matmul of ``concat([x_t,
h])``), and the first call's time (trace + compile + one step; for ``fit``, the first
epoch's excess over the others).

kerax runs as ``make_train_step``, as ``model.apply`` inside the hand-written step, with its
loop's choices overridden (the plain loop instead of the fused one; the scan's unroll),
and as ``model.fit`` (a model per round, 20 batches an epoch, 2 epochs).

    python bench/rnn.py                 # the full run (a few minutes on 2 cores)
    python bench/rnn.py --quick         # 2 rounds of few steps: a smoke test
    python bench/rnn.py --only kerax    # implementations whose name contains a word
    python bench/rnn.py --hlo           # also write the optimized HLO of each step to /tmp/rnn_hlo
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from typing import Any, Callable
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import optax

import kerax as kx
from kerax import layers

B, T, F, H, C = 64, 32, 16, 128, 10
LR = 1e-3

# A step is ``step(carry, x, y) -> (carry, loss)``, jit-compiled with the carry donated.
Step = Callable[[Any, jax.Array, jax.Array], tuple[Any, jax.Array]]


def _xent(logits: jax.Array, y: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def _optax_step(loss_fn: Callable, tx: optax.GradientTransformation) -> Step:
    """``(params, opt_state)`` -> one Adam step on ``loss_fn(params, x, y)``."""

    def step(carry, x, y):
        params, opt_state = carry
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    return jax.jit(step, donate_argnums=(0,))


def _glorot(key: jax.Array, shape: tuple) -> jax.Array:
    return jax.nn.initializers.glorot_uniform()(key, shape, jnp.float32)


# -- hand-written JAX ---------------------------------------------------------------------


def _hand_params(key: jax.Array) -> dict:
    k = jax.random.split(key, 3)
    return {"wx": _glorot(k[0], (F, 4 * H)), "wh": jax.nn.initializers.orthogonal()(k[1], (H, 4 * H)),
            "b": jnp.zeros((4 * H,)), "wo": _glorot(k[2], (H, C)), "bo": jnp.zeros((C,))}


def _gates(z: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array]:
    i, f, g, o = jnp.split(z, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    return jax.nn.sigmoid(o) * jnp.tanh(c), c


def hand(variant: str, unroll: int = 1) -> tuple[Step, Any]:
    """A ``lax.scan`` LSTM written out by hand; ``variant`` says how the gates are computed:
    ``concat`` (one matmul of ``[x_t, h]``), ``split`` (``x_t @ wx + h @ wh`` in the loop),
    ``hoisted`` (every step's ``x @ wx + b`` as one matmul before the loop)."""

    def loss_fn(p, x, y):
        xs = jnp.swapaxes(x, 0, 1)
        zeros = jnp.zeros((x.shape[0], H))
        if variant == "hoisted":
            xs = xs @ p["wx"] + p["b"]
        w = jnp.concatenate([p["wx"], p["wh"]]) if variant == "concat" else None

        def body(carry, x_t):
            h, c = carry
            if variant == "concat":
                z = jnp.concatenate([x_t, h], -1) @ w + p["b"]
            elif variant == "split":
                z = x_t @ p["wx"] + h @ p["wh"] + p["b"]
            else:
                z = x_t + h @ p["wh"]
            h, c = _gates(z, c)
            return (h, c), None

        (h, _), _ = jax.lax.scan(body, (zeros, zeros), xs, unroll=unroll)
        return _xent(h @ p["wo"] + p["bo"], y)

    tx = optax.adam(LR)
    params = _hand_params(jax.random.key(0))
    return _optax_step(loss_fn, tx), (params, tx.init(params))


# -- Flax ---------------------------------------------------------------------------------


def flax_nnx(cell_name: str) -> tuple[Step, Any]:
    """``nnx.RNN(cell)`` -> ``nnx.Linear``, split into graphdef and state for a plain jit."""
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.rnn = nnx.RNN(getattr(nnx, cell_name)(F, H, rngs=rngs), rngs=False)
            self.out = nnx.Linear(H, C, rngs=rngs)

        def __call__(self, x):
            zeros = jnp.zeros((x.shape[0], H), x.dtype)
            return self.out(self.rnn(x, initial_carry=(zeros, zeros))[:, -1])

    graphdef, params, rest = nnx.split(Net(nnx.Rngs(0)), nnx.Param, ...)

    def loss_fn(p, x, y):
        return _xent(nnx.merge(graphdef, p, rest)(x), y)

    tx = optax.adam(LR)
    return _optax_step(loss_fn, tx), (params, tx.init(params))


def flax_linen(cell_name: str) -> tuple[Step, Any]:
    """``nn.RNN(cell)`` -> ``nn.Dense``."""
    import flax.linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(C)(nn.RNN(getattr(nn, cell_name)(H))(x)[:, -1])

    net = Net()
    params = net.init(jax.random.key(0), jnp.zeros((B, T, F)))

    def loss_fn(p, x, y):
        return _xent(net.apply(p, x), y)

    tx = optax.adam(LR)
    return _optax_step(loss_fn, tx), (params, tx.init(params))


# -- Equinox ------------------------------------------------------------------------------


def equinox() -> tuple[Step, Any]:
    """``eqx.nn.LSTMCell`` (unbatched) vmapped over the batch inside a ``lax.scan``."""
    import equinox as eqx

    k1, k2 = jax.random.split(jax.random.key(0))
    model = {"cell": eqx.nn.LSTMCell(F, H, key=k1), "out": eqx.nn.Linear(H, C, key=k2)}
    params, static = eqx.partition(model, eqx.is_array)

    def loss_fn(p, x, y):
        m = eqx.combine(p, static)
        cell = jax.vmap(m["cell"])
        zeros = jnp.zeros((x.shape[0], H))

        def body(carry, x_t):
            return cell(x_t, carry), None

        (h, _), _ = jax.lax.scan(body, (zeros, zeros), jnp.swapaxes(x, 0, 1))
        return _xent(jax.vmap(m["out"])(h), y)

    tx = optax.adam(LR)
    return _optax_step(loss_fn, tx), (params, tx.init(params))


# -- kerax --------------------------------------------------------------------------------


def _kerax_model() -> kx.Sequential:
    model = kx.Sequential([layers.LSTM(H, input_shape=(T, F)), layers.Dense(C)])
    model.build(seed=0)
    return model


LOSS = kx.losses.SparseCategoricalCrossentropy(from_logits=True)


def kerax_train_step() -> tuple[Step, Any]:
    """``kx.make_train_step`` as research code calls it (the state is donated inside)."""
    model = _kerax_model()
    ts = kx.TrainState.create(model, model.params, model.state, optax.adam(LR), rng=0)
    train_step = kx.make_train_step(model, loss=LOSS)

    def step(ts, x, y):
        ts, logs = train_step(ts, (x, y))
        return ts, logs["loss"]

    return step, ts


def kerax_apply() -> tuple[Step, Any]:
    """kerax's ``model.apply`` inside the hand-written optax step: the layers alone."""
    model = _kerax_model()

    def loss_fn(p, x, y):
        return _xent(model.apply(p, {}, x)[0], y)

    tx = optax.adam(LR)
    return _optax_step(loss_fn, tx), (model.params, tx.init(model.params))


def kerax_variant(unroll: int | None = None, fused: bool = True) -> tuple[Step, Any]:
    """``kerax_apply`` with the recurrent loop's choices overridden while it compiles: the
    scan's ``unroll`` (None: kerax's choice, ``rnn_loop.scan_unroll``) and the fused loop
    (False: the plain ``lax.scan`` that JAX differentiates)."""
    from kerax.layers import recurrent

    step, carry = kerax_apply()
    run_loop = recurrent.run_loop

    def plain_loop(*args, **kwargs):
        return run_loop(*args, **{**kwargs, "fused": kwargs["fused"] and fused})

    def first_call(carry, x, y):  # jit traces on the first call, then reuses the program
        with mock.patch.object(recurrent, "run_loop", plain_loop):
            if unroll is None:
                return step(carry, x, y)
            with mock.patch.object(recurrent, "scan_unroll", lambda *a, **k: unroll):
                return step(carry, x, y)

    calls = []

    def variant(carry, x, y):
        calls.append(None)
        return (first_call if len(calls) == 1 else step)(carry, x, y)

    return variant, carry


class _FitTimer(kx.callbacks.Callback):
    """Records each epoch's wall and process CPU time."""

    def on_train_begin(self, logs=None):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self.t = (time.perf_counter(), time.process_time())

    def on_epoch_end(self, epoch, logs=None):
        self.times.append((time.perf_counter() - self.t[0], time.process_time() - self.t[1]))


def kerax_fit_times(make_model: Callable[[], kx.Sequential], x: np.ndarray, y: np.ndarray, steps: int,
                    epochs: int) -> tuple[list, list, float]:
    """``model.fit`` on NumPy arrays, ``steps`` batches an epoch: the wall and CPU seconds per
    step of each epoch after the first, and the first epoch's excess over the others (compile)."""
    model = make_model()
    model.compile(optimizer=optax.adam(LR), loss=LOSS)
    timer = _FitTimer()
    xs, ys = np.tile(x, (steps, 1, 1)), np.tile(y, steps)
    model.fit(xs, ys, batch_size=B, epochs=epochs, shuffle=False, verbose=0, seed=0, callbacks=[timer])
    wall = [w / steps for w, _ in timer.times[1:]]
    cpu = [c / steps for _, c in timer.times[1:]]
    return wall, cpu, timer.times[0][0] - statistics.median(wall) * steps


# -- the harness --------------------------------------------------------------------------


def implementations() -> dict[str, Callable[[], tuple[Step, Any]]]:
    return {
        "hand scan, concat gates (reference)": lambda: hand("concat"),
        "hand scan, x/h split gates": lambda: hand("split"),
        "hand scan, hoisted input proj.": lambda: hand("hoisted"),
        "hand scan, hoisted, unroll 8": lambda: hand("hoisted", unroll=8),
        "flax nnx OptimizedLSTMCell": lambda: flax_nnx("OptimizedLSTMCell"),
        "flax nnx LSTMCell": lambda: flax_nnx("LSTMCell"),
        "flax linen OptimizedLSTMCell": lambda: flax_linen("OptimizedLSTMCell"),
        "flax linen LSTMCell": lambda: flax_linen("LSTMCell"),
        "equinox LSTMCell in scan": equinox,
        "kerax make_train_step": kerax_train_step,
        "kerax apply in hand step": kerax_apply,
        "kerax apply, plain loop (no fused)": lambda: kerax_variant(fused=False),
        **{f"kerax apply, unroll {u}": (lambda u=u: kerax_variant(unroll=u)) for u in (1, 2, 4, 8)},
    }


def fit_models() -> dict[str, Callable[[], kx.Sequential]]:
    """The ``model.fit`` runs (after the steps, in each round): name -> the model to build."""
    return {"kerax fit": _kerax_model}


def time_block(step: Step, carry: Any, x: jax.Array, y: jax.Array, n: int) -> tuple[Any, float, float]:
    """Runs ``n`` steps: the new carry, and the wall and process CPU seconds per step."""
    t, c = time.perf_counter(), time.process_time()
    for _ in range(n):
        carry, loss = step(carry, x, y)
    jax.block_until_ready(loss)
    return carry, (time.perf_counter() - t) / n, (time.process_time() - c) / n


def dump_hlo(name: str, step: Step, carry: Any, x: jax.Array, y: jax.Array, out: str) -> None:
    """Writes the optimized HLO of a jit-compiled step (kerax's TrainStep is skipped)."""
    if not hasattr(step, "lower"):
        return
    os.makedirs(out, exist_ok=True)
    fname = os.path.join(out, "".join(ch if ch.isalnum() else "_" for ch in name) + ".hlo")
    with open(fname, "w") as f:
        f.write(step.lower(carry, x, y).compile().as_text())


def main(impls: dict | None = None, fits: dict | None = None) -> None:
    """Runs the benchmark; ``impls`` and ``fits`` replace ``implementations()`` and
    ``fit_models()`` (a script comparing another version of kerax passes its own)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed block")
    parser.add_argument("--only", default="", help="comma-separated words; keep matching names")
    parser.add_argument("--no-fit", action="store_true")
    parser.add_argument("--hlo", action="store_true")
    args = parser.parse_args()
    rounds, steps = (2, 3) if args.quick else (args.rounds, args.steps)

    rng = np.random.default_rng(0)
    x_np, y_np = rng.normal(size=(B, T, F)).astype(np.float32), rng.integers(0, C, B).astype(np.int32)
    x, y = jax.device_put(x_np), jax.device_put(y_np)

    words = [w for w in args.only.split(",") if w]
    impls = {n: f for n, f in (impls or implementations()).items() if not words or any(w in n for w in words)}
    built, first, wall, cpu = {}, {}, {}, {}
    for name, make in impls.items():
        try:
            step, carry = make()
        except Exception as e:  # e.g. another library version's API: report it, run the rest
            print(f"# {name}: could not be built: {type(e).__name__}: {e}"[:300])
            continue
        if args.hlo:
            dump_hlo(name, step, carry, x, y, "/tmp/rnn_hlo")
        t = time.perf_counter()
        carry, loss = step(carry, x, y)
        jax.block_until_ready(loss)
        first[name] = time.perf_counter() - t
        built[name] = [step, carry]
    fits = {n: f for n, f in (fits or fit_models()).items()
            if not args.no_fit and (not words or any(w in n for w in words))}
    for _ in range(rounds):  # interleaved, so machine noise spreads over all
        for name, (step, carry) in built.items():
            built[name][1], w, c = time_block(step, carry, x, y, steps)
            wall.setdefault(name, []).append(w)
            cpu.setdefault(name, []).append(c)
        for name, make_model in fits.items():
            w, c, compile_s = kerax_fit_times(make_model, x_np, y_np, steps, epochs=2)
            wall.setdefault(name, []).extend(w)
            cpu.setdefault(name, []).extend(c)
            first.setdefault(name, compile_s)
    report(wall, cpu, first, rounds, steps)


def report(wall: dict, cpu: dict, first: dict, rounds: int, steps: int) -> None:
    """Prints one row per implementation; ratios are to the first one's medians."""
    print(f"# {platform.machine()}, {os.cpu_count()} cores, {jax.devices()[0].device_kind}, "
          f"jax {jax.__version__}")
    print(f"# W3: LSTM({H}) over ({B}, {T}, {F}) -> Dense({C}), Adam; medians of {rounds} rounds "
          f"x {steps} steps; 'cpu' is process CPU time per step (steadier on a shared machine)")
    ref = next(iter(wall))
    w0, c0 = statistics.median(wall[ref]), statistics.median(cpu[ref])
    print(f"{'implementation':38s} {'wall ms':>8s} {'(min':>7s} {'max)':>7s} {'ratio':>6s} "
          f"{'cpu ms':>7s} {'ratio':>6s} {'1st call s':>10s}")
    for name in wall:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        print(f"{name:38s} {1e3 * w:8.2f} {1e3 * min(wall[name]):7.2f} {1e3 * max(wall[name]):7.2f} "
              f"{w / w0:6.3f} {1e3 * c:7.2f} {c / c0:6.3f} {first[name]:10.2f}")

if __name__ == "__main__":
    main()
