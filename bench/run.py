"""The kerax benchmark runner: kerax against hand-written JAX (the floor) and its peers.

Each implementation of each workload runs in its own fresh process (``bench/worker.py``),
interleaved (A B C A B C ...) over ``--rounds`` rounds so that machine noise spreads over
all of them, each run started only once the CPUs are idle (or after ``--idle-cap``
seconds, noted). The report gives, per workload, the set-up time (model and initial
weights), medians with min and max of the first step (compile included), the steady-state
step, steps/s, samples/s and peak RSS, the ratios to ``handwritten``, and whether every
implementation's losses agree with handwritten's (see ``bench/report.py``). See
bench/README.md.

    python bench/run.py                         # W1-W5, every implementation, 3 rounds
    python bench/run.py --workloads W1,W3 --impls handwritten,kerax_fit --rounds 5
    python bench/run.py --json out.json --markdown docs/bench-table.md
    python bench/run.py --quick                 # toy sizes, 1 round; non-zero exit if losses disagree
    python bench/run.py --quick --inprocess     # the same without subprocesses (what the test runs)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``bench`` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import impls, machine, report, workloads  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "worker.py"


def _subprocess_run(impl: str, workload: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, str(WORKER), impl, workload]
    cmd += ["--quick"] * args.quick + (["--steps", str(args.steps)] if args.steps else [])
    cmd += (["--epochs", str(args.epochs)] if args.epochs else []) + ["--fast-compile"] * args.fast_compile
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"impl": impl, "workload": workload, "error": f"timed out after {args.timeout} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {"impl": impl, "workload": workload,
                "error": f"worker exited {proc.returncode} without a result: {proc.stderr.strip()[-1500:]}"}
    return json.loads(lines[-1])


def _inprocess_run(impl: str, workload: str, args: argparse.Namespace) -> dict:
    from bench import worker

    try:
        return worker.run_one(impl, workload, args.quick, args.steps, args.epochs)
    except Exception as e:  # one failing implementation must not stop the others
        return {"impl": impl, "workload": workload, "error": f"{type(e).__name__}: {e}"}


def _names(value: str, known: dict, what: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown {what} {unknown}; expected some of {sorted(known)}")
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workloads", default=",".join(workloads.DEFAULT), help="comma-separated, e.g. W1,W3")
    p.add_argument("--impls", default=",".join(impls.IMPLS), help="comma-separated implementation names")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3; 1 with --quick)")
    p.add_argument("--steps", type=int, default=None, help="steps per epoch (a multiple of 16; default per workload)")
    p.add_argument("--epochs", type=int, default=None, help="timed epochs per run (default per workload)")
    p.add_argument("--json", default=None, help="write every run and the summary to this file")
    p.add_argument("--markdown", nargs="?", const="-", default=None,
                   help="write the report as Markdown to this file (stdout without a path)")
    p.add_argument("--quick", action="store_true", help="toy sizes, 1 round, no idle wait; exit 1 if losses disagree")
    p.add_argument("--inprocess", action="store_true", help="run in this process (fast; for tests)")
    p.add_argument("--fast-compile", action="store_true",
                   help="XLA with most optimizations off: checks losses sooner; never for timings")
    p.add_argument("--idle-threshold", type=float, default=0.15, help="CPU busy fraction counted as idle")
    p.add_argument("--idle-cap", type=float, default=5.0, help="longest wait for idle before a run, s")
    p.add_argument("--idle-sample", type=float, default=0.5, help="CPU busy sampling interval, s")
    p.add_argument("--timeout", type=float, default=900.0, help="longest single run, s")
    p.add_argument("--budget-s", type=float, default=None, help="start no new run after this many seconds")
    p.add_argument("--from-json", default=None, metavar="PATH",
                   help="measure nothing: report the runs saved in PATH by --json (the tables as this version "
                        "of the report writes them)")
    args = p.parse_args(argv)
    args.workload_list = _names(args.workloads, workloads.WORKLOADS, "workloads")
    args.impl_list = _names(args.impls, impls.IMPLS, "implementations")
    args.rounds = args.rounds or (1 if args.quick else 3)
    return args


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark; returns the exit status (1: with --quick, losses disagree or a run failed)."""
    args = parse_args(argv)
    if args.inprocess and args.fast_compile:
        import jax

        old = jax.config.read("jax_disable_most_optimizations")
        jax.config.update("jax_disable_most_optimizations", True)
        try:
            return _main(args, argv)
        finally:
            jax.config.update("jax_disable_most_optimizations", old)
    return _main(args, argv)


def _measure(args: argparse.Namespace, info: dict) -> tuple[list[dict], list[str]]:
    """Every planned run, in order: (the results, notes on skips, failures and waits)."""
    runs: list[dict] = []
    notes: list[str] = []
    skipped: dict[tuple[str, str], str] = {}
    impl_notes: dict[tuple[str, str], list[str]] = {}
    start = time.perf_counter()
    run = _inprocess_run if args.inprocess else _subprocess_run
    capped = 0
    # Round-major: every round runs every workload's implementations in turn (A B C A B C),
    # so noise spreads over all of them and a --budget-s cut still leaves whole rounds.
    plan = [(r, w, impl) for r in range(args.rounds) for w in args.workload_list for impl in args.impl_list]
    for n, (r, w, impl) in enumerate(plan):
        if (impl, w) in skipped:
            continue
        if args.budget_s is not None and time.perf_counter() - start > args.budget_s:
            notes.append(f"budget of {args.budget_s:g} s spent: the last {len(plan) - n} planned runs "
                         f"(from round {r + 1}, {w} {impl}) were not started")
            break
        idle = None
        if not (args.quick or args.inprocess):
            idle = machine.wait_idle(args.idle_threshold, args.idle_cap, args.idle_sample)
            capped += idle["capped"]
        t = time.perf_counter()
        result = run(impl, w, args)
        result.update(round=r + 1, idle=idle, wall_s=time.perf_counter() - t)
        if "skipped" in result:
            skipped[(impl, w)] = result["skipped"]
            notes.append(f"{w} {impl}: skipped ({result['skipped']})")
        elif "error" in result:
            notes.append(f"{w} {impl} round {r + 1}: FAILED ({result['error']})")
        else:
            for note in result.get("notes", []):
                impl_notes.setdefault((impl, note), []).append(w)
        runs.append(result)
        _progress(result)
        if args.json:
            _write_json(args.json, info, runs, notes, args)
    notes += [f"{impl} ({', '.join(dict.fromkeys(ws))}): {note}" for (impl, note), ws in impl_notes.items()]
    if capped:
        notes.append(f"idle wait: the {args.idle_cap:g} s cap was hit before {capped} of {len(runs)} runs "
                     f"(CPU busy >= {args.idle_threshold:.0%}): those ran on a busy machine")
    return runs, notes


def _main(args: argparse.Namespace, argv: list[str] | None) -> int:
    if args.from_json:  # the saved run's own plan and machine, not this command line's
        saved = json.loads(Path(args.from_json).read_text())
        info, runs, notes = saved["machine"], saved["runs"], saved["notes"]
        args.rounds, args.quick = saved["rounds"], saved["quick"]
        args.workload_list, args.impl_list = saved["workloads"], saved["impls"]
        args.json = None if args.json == args.from_json else args.json
    else:
        info = machine.describe()
        if argv is not None:
            info["command"] = "python bench/run.py " + " ".join(argv)
        runs, notes = _measure(args, info)
    summary, agree = report.summarize(runs), report.agreement(runs)
    device = next((r["device"] for r in runs if "device" in r), None)
    text = "\n".join([report.header(info, args.rounds, device),
                      report.tables(summary, agree, args.impl_list, args.workload_list, args.quick),
                      "", "Notes:" if notes else "", *(f"- {n}" for n in notes)])
    print(text)
    if args.markdown and args.markdown != "-":
        Path(args.markdown).write_text(text + "\n")
    if args.json:
        _write_json(args.json, info, runs, notes, args, summary, agree)
    bad = [f"{w} {i}" for w, t in agree.items() for i, a in t.items() if not a["ok"]]
    failed = [f"{r['workload']} {r['impl']}" for r in runs if "error" in r]
    if bad:
        print(f"\nLOSSES DISAGREE (tolerance {report.TOL:g}): {', '.join(bad)}", file=sys.stderr)
    if failed:
        print(f"\nFAILED RUNS: {', '.join(failed)}", file=sys.stderr)
    return 1 if args.quick and (bad or failed) else 0


def _progress(r: dict) -> None:
    what = r.get("skipped") and f"skipped: {r['skipped']}" or r.get("error") and f"FAILED: {r['error'][:200]}"
    if not what:
        what = (f"first step {r['first_step_s']:.3f} s, step {r['step_s']['median'] * 1e3:.3f} ms, "
                f"final loss {r['epoch_losses'][-1]:.5f}")
    print(f"[{r['workload']} round {r['round']}] {r['impl']}: {what}", file=sys.stderr, flush=True)


def _write_json(path: str, info: dict, runs: list, notes: list, args: argparse.Namespace,
                summary: dict | None = None, agree: dict | None = None) -> None:
    doc = {"machine": info, "rounds": args.rounds, "quick": args.quick, "workloads": args.workload_list,
           "impls": args.impl_list, "runs": runs, "notes": notes, "summary": summary, "agreement": agree,
           "tolerance": report.TOL}
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str))
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
