"""One workload's steady step time in ONE process: hand-written JAX, kerax pure and kerax ``fit``.

``bench/run.py`` runs every implementation in its own fresh process, which is what a user
sees, but on a GPU each process autotunes its convolutions on its own and may settle on
other algorithms: single runs of a short CNN step move by 20-40% between processes. Here
the three share one process, and so one autotuning cache (the same convolution shapes get
the same algorithms), and run interleaved over rounds, so that what remains of a
difference is the programs' and the loops' own.

* ``hand``: ``jax.jit(value_and_grad + Adam)`` over device-resident batches (the floor;
  ``bench/impls/handwritten.py``).
* ``pure``: ``kx.make_train_step`` over the same batches.
* ``fit``: ``model.fit`` on NumPy arrays, ``epochs`` epochs per round, the first epoch of
  every call left out (its set-up), timed by a callback.

    python bench/step_compare.py W2             # 5 rounds
    python bench/step_compare.py W1 --rounds 9 --epochs 4
    python bench/step_compare.py W4 --linen      # Flax Linen's step beside them (bench extra)
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import jax

import kerax as kx

if __package__ in (None, ""):  # run as a script: the repository root holds the bench package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import workloads as wl
from bench.impls import _kerax_models
from bench.impls._common import timed_epochs
from bench.impls import handwritten as hw


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("workload", nargs="?", default="W2")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs per round and implementation")
    ap.add_argument("--linen", action="store_true",
                    help="also time Flax Linen's step (bench extra) in the same process")
    args = ap.parse_args(argv)
    w = wl.get(args.workload)
    weights = wl.make_weights(w)
    x, y = wl.make_data(w)
    feeds = [jax.device_put(b) for b in wl.batches(x, y, w.batch)]

    params, apply = hw.model(w, weights)
    tx = hw.adam()
    one = hw.one_step(apply, tx)
    hand_step = jax.jit(lambda c, xb, yb: one(c, (xb, yb)), donate_argnums=0)
    hand = (params, tx.init(params))

    model = _kerax_models.build(w, weights)
    ts = kx.TrainState.create(model, model.params, model.state, hw.adam(), rng=jax.random.key(0))
    pure_step = kx.make_train_step(model, loss=_kerax_models.loss())

    fitted = _kerax_models.build(w, weights)
    fitted.compile(optimizer=kx.optimizers.Adam(learning_rate=wl.LEARNING_RATE, beta_1=wl.BETA_1,
                                                beta_2=wl.BETA_2, epsilon=wl.EPSILON),
                   loss=_kerax_models.loss())
    timer = _kerax_models.EpochTimer()

    def hand_call(c, f):
        return hand_step(c, *f)

    def pure_call(c, f):
        c, logs = pure_step(c, f)
        return c, logs["loss"]

    def fit_epochs(epochs: int) -> list[float]:
        timer.times.clear()
        fitted.fit(x, y, batch_size=w.batch, epochs=epochs + 1, shuffle=False, verbose=0, callbacks=[timer])
        return [t / len(feeds) for t in timer.times[1:]]

    linen = _linen(w, weights) if args.linen else None
    hand, _ = timed_epochs(hand_call, hand, feeds, 1)  # compile and warm up
    ts, _ = timed_epochs(pure_call, ts, feeds, 1)
    fit_epochs(1)
    per = {"hand": [], "pure": [], "fit": []}
    if linen is not None:
        linen_call, linen_state = linen
        linen_state, _ = timed_epochs(linen_call, linen_state, feeds, 1)
        per["linen"] = []
    print(f"{w.name} on {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}, "
          f"{len(feeds)} steps an epoch, {args.epochs} timed epochs per round", flush=True)
    for r in range(args.rounds):
        hand, a = timed_epochs(hand_call, hand, feeds, args.epochs)
        ts, b = timed_epochs(pure_call, ts, feeds, args.epochs)
        c = fit_epochs(args.epochs)
        results = [a, b, c]
        if linen is not None:
            linen_state, d = timed_epochs(linen_call, linen_state, feeds, args.epochs)
            results.append(d)
        for k, v in zip(per, results):
            per[k].append(statistics.median(v))
        print(f"round {r}: " + "  ".join(f"{k} {per[k][-1] * 1e3:.3f} ms" for k in per), flush=True)
    med = {k: statistics.median(v) for k, v in per.items()}
    print("median ms/step: " + "  ".join(f"{k} {v * 1e3:.3f} ({min(per[k]) * 1e3:.3f}-{max(per[k]) * 1e3:.3f})"
                                         for k, v in med.items()))
    print("ratio to hand: " + "  ".join(f"{k} {v / med['hand']:.3f}" for k, v in med.items()))
    print("per round: " + "  ".join(
        f"{k} {statistics.median([a / b for a, b in zip(per[k], per['hand'])]):.3f}" for k in per))
    return med


def _linen(w: wl.Workload, weights: list[dict]) -> tuple:
    """Flax Linen's step (``bench/impls/flax_linen.py``'s model and step) and its state."""
    from flax.training import train_state

    from bench.impls import flax_linen

    module, params = flax_linen.build(w, weights)
    state = train_state.TrainState.create(apply_fn=module.apply, params=params, tx=hw.adam())
    jitted = jax.jit(flax_linen.train_step, donate_argnums=0)
    return (lambda s, f: jitted(s, *f)), state


if __name__ == "__main__":
    main()
