"""Several optimizer steps per compiled call, in ONE process: the hand-written ``lax.scan``
against kerax's ``steps_per_execution``, both rolled and two steps per loop iteration.

``bench/run.py`` measures ``fit(steps_per_execution=16)`` and the hand-written scan in
fresh processes; here they share one process and run interleaved by round, beside the
hand-written per-step loop they are compared with (issue 8, acceptance 2), so that what
remains of a difference is the programs' own.

* ``hand``: ``jax.jit(value_and_grad + Adam)``, one step per call (the reference).
* ``hand_scan_u1`` / ``hand_scan_u2``: the same step under ``lax.scan`` over 16 batches,
  ``unroll=1`` / ``unroll=2``.
* ``kerax_u1`` / ``kerax_u2``: kerax's train step with ``steps_per_execution=16``, its scan
  rolled / two steps per iteration (``unroll=2`` is kerax's CPU default for models without
  convolutions, see docs/performance.md).

    python bench/spe_compare.py W1               # 9 rounds
    python bench/spe_compare.py W4 --rounds 5
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
from bench.impls import handwritten as hw
from bench.impls._common import stacked, timed_epochs
from kerax.training.objectives import Objectives
from kerax.training.steps import TrainStep

K = 16


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("workload", nargs="?", default="W1")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs per round and implementation")
    args = ap.parse_args(argv)
    w = wl.get(args.workload)
    if w.arch == "cnn":
        ap.error("convolutional workloads run fully unrolled on CPU; compare them with bench/run.py")
    weights = wl.make_weights(w)
    batches = wl.batches(*wl.make_data(w), w.batch)
    if len(batches) % K:
        ap.error(f"{w.name} has {len(batches)} batches an epoch, not a multiple of {K}")
    feeds = [jax.device_put(b) for b in batches]
    feeds_k = [jax.device_put(b) for b in stacked(batches, K)]
    tx = hw.adam()

    impls: dict = {}  # name -> (call, carry, feeds, steps per call)
    params, apply = hw.model(w, weights)
    one = hw.one_step(apply, tx)
    per_step = jax.jit(lambda c, xb, yb: one(c, (xb, yb)), donate_argnums=0)
    impls["hand"] = (lambda c, f: per_step(c, *f), (params, tx.init(params)), feeds, 1)
    for u in (1, 2):
        params, _ = hw.model(w, weights)
        scan = jax.jit(lambda c, xs, ys, u=u: jax.lax.scan(one, c, (xs, ys), unroll=u), donate_argnums=0)
        impls[f"hand_scan_u{u}"] = (lambda c, f, scan=scan: scan(c, *f), (params, tx.init(params)), feeds_k, K)
    for u in (1, 2):
        model = _kerax_models.build(w, weights)
        ts = kx.TrainState.create(model, model.params, model.state, hw.adam(), rng=jax.random.key(0))
        step = TrainStep(model, Objectives.create(model, _kerax_models.loss(), None, None), K, unroll=u)

        def call(c, f, step=step):
            c, logs = step(c, f)
            return c, logs["loss"]

        impls[f"kerax_u{u}"] = (call, ts, feeds_k, K)

    carries = {}
    for name, (call, carry, fd, k) in impls.items():  # compile and warm up
        carries[name], _ = timed_epochs(call, carry, fd, 1, k)
    print(f"{w.name} on {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}, "
          f"{len(feeds)} steps an epoch, {args.epochs} timed epochs per round", flush=True)
    per: dict = {name: [] for name in impls}
    for r in range(args.rounds):
        for name, (call, _, fd, k) in impls.items():
            carries[name], times = timed_epochs(call, carries[name], fd, args.epochs, k)
            per[name].append(statistics.median(times))
        print(f"round {r}: " + "  ".join(f"{n} {per[n][-1] * 1e3:.3f} ms" for n in per), flush=True)
    ratios = {n: statistics.median([a / b for a, b in zip(v, per["hand"])]) for n, v in per.items()}
    print("median ms/step: " + "  ".join(f"{n} {statistics.median(v) * 1e3:.3f}" for n, v in per.items()))
    print("per round, ratio to hand: " + "  ".join(f"{n} {r:.3f}" for n, r in ratios.items()))
    return ratios


if __name__ == "__main__":
    main()
