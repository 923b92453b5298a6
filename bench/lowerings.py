"""CPU lowerings of convolution and pooling against the generic ones, op by op and in a CNN step.

Part 1 times forward + backward of each op, generic (``lax.conv_general_dilated``,
``lax.reduce_window``) against the CPU lowerings of ``kerax/layers/_lowering.py``
(padded and im2col convolution, reshape pooling).
Part 2 times one training step of the workload W2 (conv32 3x3 - conv64 3x3 - maxpool 2 -
dense 128 - dense 10 on 28x28x1, batch 128, Adam, sparse cross-entropy from logits):

* a hand-written step in pure JAX + optax (``lax.conv_general_dilated`` + ``reduce_window``,
  ``jax.jit``, buffers donated, batches already on the device): the reference;
* kerax's pure ``make_train_step`` and ``model.fit``, each with the lowerings forced to
  ``generic`` (kerax before this change) and left on ``auto`` (the CPU lowerings).

Every variant runs in this one process, interleaved over the rounds (the machine may be
shared); medians are reported with min and max, and ratios to the hand-written step.

    python bench/lowerings.py             # 7 rounds
    python bench/lowerings.py --quick     # 2 rounds, a smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import time
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

import kerax as kx
from kerax import layers
from kerax.layers import _lowering

BATCH, STEPS_PER_EPOCH = 128, 8


@contextlib.contextmanager
def lowering(conv: str, pool: str) -> Iterator[None]:
    """Sets KERAX_CONV_LOWERING / KERAX_POOL_LOWERING while functions are traced."""
    old = {k: os.environ.get(k) for k in (_lowering.CONV_ENV, _lowering.POOL_ENV)}
    os.environ[_lowering.CONV_ENV], os.environ[_lowering.POOL_ENV] = conv, pool
    try:
        yield
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def interleave(fns: dict[str, Callable[[], Any]], rounds: int, reps: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each function, over ``rounds`` interleaved rounds of ``reps`` calls."""
    for fn in fns.values():
        jax.block_until_ready(fn())  # compile
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            for _ in range(reps):
                t = time.perf_counter()
                jax.block_until_ready(fn())
                times[name].append(time.perf_counter() - t)
    return times


def summary(times: list[float], scale: float = 1.0) -> str:
    ms = [1000 * t / scale for t in times]
    return f"{statistics.median(ms):8.1f} ms  (min {min(ms):.1f}, max {max(ms):.1f})"


# -- part 1: single ops -----------------------------------------------------------------


def op_benchmarks(rounds: int) -> None:
    rng = np.random.default_rng(0)
    rand = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
    conv = lambda padding: (lambda x, k, how: _lowering.conv(x, k, (1, 1), padding, lowering=how))
    conv_ways = ("generic", "padded", "im2col")
    cases = {
        "max pool 2x2, (128, 24, 24, 64)": (
            lambda x, how: _lowering.max_pool(x, (2, 2), (2, 2), "VALID", lowering=how),
            (rand(128, 24, 24, 64),), ("generic", "reshape"), (0,)),
        "avg pool 2x2, (128, 24, 24, 64)": (
            lambda x, how: _lowering.avg_pool(x, (2, 2), (2, 2), "VALID", lowering=how),
            (rand(128, 24, 24, 64),), ("generic", "reshape"), (0,)),
        "conv 3x3 32->64 valid, (128, 26, 26, 32), d/dx d/dk": (
            conv("VALID"), (rand(128, 26, 26, 32), 0.1 * rand(3, 3, 32, 64)), conv_ways, (0, 1)),
        "conv 3x3 1->32 valid, (128, 28, 28, 1), d/dk only": (
            conv("VALID"), (rand(128, 28, 28, 1), 0.3 * rand(3, 3, 1, 32)), conv_ways, (1,)),
        "conv 3x3 32->64 same, (128, 24, 24, 32), d/dx d/dk": (
            conv("SAME"), (rand(128, 24, 24, 32), 0.1 * rand(3, 3, 32, 64)), conv_ways, (0, 1)),
        "conv 1x1 64->128, (128, 24, 24, 64), d/dx d/dk": (
            conv("VALID"), (rand(128, 24, 24, 64), 0.1 * rand(1, 1, 64, 128)), conv_ways, (0, 1)),
    }
    print("\n## Forward + backward of one op (ms per call; * marks what auto picks here)")
    for title, (op, args, ways, wrt) in cases.items():
        padding = "SAME" if "same" in title else "VALID"
        if "im2col" in ways:  # only the lowerings that apply (a forced one may fall back)
            ways = [w for w in ways if _lowering.conv_lowering(
                args[0].shape, args[1].shape, (1, 1), padding, lowering=w) == w]
        fns = {}
        for how in ways:
            # sum(sin(y)) so the cotangent is not a constant XLA could fold away
            grad = jax.jit(jax.grad(lambda *a, how=how: jnp.sum(jnp.sin(op(*a, how))), argnums=wrt))
            fns[how] = lambda grad=grad: grad(*args)
        if "im2col" in ways:
            picked = _lowering.conv_lowering(args[0].shape, args[1].shape, (1, 1), padding)
        else:
            picked = _lowering.pool_lowering((2, 2), (2, 2), None, "max" if "max" in title else "mean")
        times = interleave(fns, rounds, reps=3)
        base = statistics.median(times["generic"])
        print(f"{title}")
        for how, t in times.items():
            mark = "*" if how == picked else " "
            print(f"  {how:8s}{mark} {summary(t)}  ratio {statistics.median(t) / base:.3f}")


# -- part 2: the W2 training step ---------------------------------------------------------


def w2_model() -> kx.Sequential:
    return kx.Sequential([
        layers.Conv2D(32, 3, activation="relu", input_shape=(28, 28, 1)),
        layers.Conv2D(64, 3, activation="relu"), layers.MaxPooling2D(2),
        layers.Flatten(), layers.Dense(128, activation="relu"), layers.Dense(10),
    ])


def hand_written_step() -> tuple[Callable, dict]:
    """W2 in pure JAX + optax, with XLA's generic convolution and reduce_window pooling."""
    rng = np.random.default_rng(1)

    def glorot(*shape):
        fan_in, fan_out = np.prod(shape[:-1]), shape[-1] * np.prod(shape[:-2])
        limit = np.sqrt(6 / (fan_in + fan_out))
        return jnp.asarray(rng.uniform(-limit, limit, shape), jnp.float32)

    params = {"c1": (glorot(3, 3, 1, 32), jnp.zeros(32)), "c2": (glorot(3, 3, 32, 64), jnp.zeros(64)),
              "d1": (glorot(9216, 128), jnp.zeros(128)), "d2": (glorot(128, 10), jnp.zeros(10))}

    def forward(p, x):
        for name in ("c1", "c2"):
            k, b = p[name]
            x = jax.nn.relu(lax.conv_general_dilated(
                x, k, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")) + b)
        x = lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        x = jax.nn.relu(x.reshape(x.shape[0], -1) @ p["d1"][0] + p["d1"][1])
        return x @ p["d2"][0] + p["d2"][1]

    tx = optax.adam(1e-3)

    def step(p, opt, x, y):
        loss, g = jax.value_and_grad(
            lambda p: optax.softmax_cross_entropy_with_integer_labels(forward(p, x), y).mean())(p)
        updates, opt = tx.update(g, opt, p)
        return optax.apply_updates(p, updates), opt, loss

    return jax.jit(step, donate_argnums=(0, 1)), {"params": params, "opt": tx.init(params)}


def w2_benchmarks(rounds: int) -> None:
    rng = np.random.default_rng(0)
    n = BATCH * STEPS_PER_EPOCH
    x = rng.normal(size=(n, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, n).astype(np.int32)
    xs, ys = jax.device_put(x.reshape(-1, BATCH, 28, 28, 1)), jax.device_put(y.reshape(-1, BATCH))
    loss = kx.losses.SparseCategoricalCrossentropy(from_logits=True)

    def epochs(one_epoch: Callable[[], Any]) -> Callable[[], list[float]]:
        """Two timed epochs of device-resident batches (the step is compiled already)."""
        def run():
            times = []
            for _ in range(2):
                t = time.perf_counter()
                jax.block_until_ready(one_epoch())
                times.append(time.perf_counter() - t)
            return times
        return run

    def hand() -> Callable[[], list[float]]:
        step, carry = hand_written_step()

        def one_epoch():
            for i in range(STEPS_PER_EPOCH):
                carry["params"], carry["opt"], out = step(carry["params"], carry["opt"], xs[i], ys[i])
            return out
        jax.block_until_ready(one_epoch())
        return epochs(one_epoch)

    def pure(how: str) -> Callable[[], list[float]]:
        model = w2_model()
        model.build(seed=0)
        carry = {"ts": kx.TrainState.create(model, model.params, model.state, optax.adam(1e-3), rng=0)}
        step = kx.make_train_step(model, loss=loss)

        def one_epoch():
            for i in range(STEPS_PER_EPOCH):
                carry["ts"], logs = step(carry["ts"], (xs[i], ys[i]))
            return logs
        with lowering(how, how if how == "generic" else "auto"):
            jax.block_until_ready(one_epoch())  # traced now, under `how`
        return epochs(one_epoch)

    def fit(how: str) -> Callable[[], list[float]]:
        def run():
            model = w2_model()
            model.build(seed=0)
            model.compile(optimizer=optax.adam(1e-3), loss=loss)
            timer = EpochTimer()
            with lowering(how, how if how == "generic" else "auto"):
                model.fit(x, y, batch_size=BATCH, epochs=3, shuffle=False, verbose=0, seed=0,
                          callbacks=[timer])
            return timer.times[1:]  # the first epoch compiles
        return run

    variants = {
        "hand-written jax + optax": hand(),
        "kerax make_train_step, generic": pure("generic"),
        "kerax make_train_step, auto (CPU lowerings)": pure("auto"),
        "kerax fit, generic": fit("generic"),
        "kerax fit, auto (CPU lowerings)": fit("auto"),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):  # interleaved, so machine noise spreads over all
        for name, run in variants.items():
            times[name].extend(t / STEPS_PER_EPOCH for t in run())
    print(f"\n## W2 train step, batch {BATCH}, {STEPS_PER_EPOCH} steps per epoch (ms per step, "
          f"{rounds} rounds x 2 epochs)")
    base = statistics.median(times["hand-written jax + optax"])
    for name, t in times.items():
        print(f"  {name:44s} {summary(t)}  ratio {statistics.median(t) / base:.3f}")


class EpochTimer(kx.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self.t = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="2 rounds, a smoke test")
    args = parser.parse_args()
    rounds = 2 if args.quick else args.rounds
    print(f"# {platform.machine()}, {os.cpu_count()} cores, {jax.devices()[0].device_kind}, "
          f"jax {jax.__version__}, backend {jax.default_backend()}, {rounds} rounds")
    op_benchmarks(rounds)
    w2_benchmarks(rounds)


if __name__ == "__main__":
    main()
