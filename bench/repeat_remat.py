"""``Repeat(remat=False)`` against ``Repeat(remat=True)`` on a scanned workload, in ONE process.

Two kerax models of the same scanned workload (W5s or W6s), one storing each block's
intermediates for the backward pass and one recomputing them (``jax.checkpoint``), trained
by ``make_train_step`` over the same device-resident batches, interleaved by round. Prints
each one's compile time (trace + lower + compile of its step), its step time, and the
per-round ratio of ``remat=True`` to ``remat=False``; the final losses agree (same
weights, same batches, same arithmetic up to rounding).

    python bench/repeat_remat.py W6s             # 7 rounds
    python bench/repeat_remat.py W5s --rounds 9
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax

import kerax as kx

if __package__ in (None, ""):  # run as a script: the repository root holds the bench package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import workloads as wl
from bench.impls import _kerax_models
from bench.impls import handwritten as hw
from bench.impls._common import timed_epochs


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("workload", nargs="?", default="W6s", choices=[n for n, w in wl.WORKLOADS.items() if w.scanned])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=16, help="steps per timed epoch")
    args = ap.parse_args(argv)
    w = wl.get(args.workload)
    weights = wl.make_weights(w)
    feeds = [jax.device_put(b) for b in wl.batches(*wl.make_data(w), w.batch)][:args.steps]
    runs: dict = {}
    for remat in (False, True):
        model = _kerax_models.build(w, weights, remat=remat)
        ts = kx.TrainState.create(model, model.params, model.state, hw.adam(), rng=jax.random.key(0))
        step = kx.make_train_step(model, loss=_kerax_models.loss())
        start = time.perf_counter()
        step._call.lower(ts, feeds[0]).compile()  # lands in jit's cache: the first call reuses it
        compile_s = time.perf_counter() - start

        def call(c, f, step=step):
            c, logs = step(c, f)
            return c, logs["loss"]

        ts, _ = timed_epochs(call, ts, feeds, 1)
        runs[f"remat={remat}"] = [call, ts, compile_s]
    print(f"{w.name} on {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}, "
          f"{len(feeds)} steps a round; compile (trace + lower + compile): "
          + "  ".join(f"{n} {r[2]:.2f} s" for n, r in runs.items()), flush=True)
    per: dict = {n: [] for n in runs}
    losses: dict = {}
    for r in range(args.rounds):
        for n, run in runs.items():
            out: list = []
            run[1], times = timed_epochs(run[0], run[1], feeds, 1, losses=out)
            per[n].append(times[0])
            losses[n] = float(out[-1])
        print(f"round {r}: " + "  ".join(f"{n} {per[n][-1] * 1e3:.2f} ms" for n in per), flush=True)
    base, other = per["remat=False"], per["remat=True"]
    ratio = statistics.median([b / a for a, b in zip(base, other)])
    print("median ms/step: " + "  ".join(f"{n} {statistics.median(v) * 1e3:.2f}" for n, v in per.items()))
    print(f"per round, remat=True / remat=False: {ratio:.3f}; last losses "
          + "  ".join(f"{n} {v:.6f}" for n, v in losses.items()))
    return {"ratio": ratio, "losses": losses}


if __name__ == "__main__":
    main()
