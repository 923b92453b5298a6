"""Aggregating runs into per-workload statistics, the loss-agreement check, and the tables.

Agreement: every implementation's per-epoch mean training losses are compared with the
reference's (``handwritten`` where it ran) epoch by epoch; they agree when
``|a - b| <= TOL * max(1, |b|)``: absolute below a loss of 1, relative above.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from bench import workloads as wl

TOL = 1e-3


def deviation(a: list[float], b: list[float]) -> float:
    """The largest ``|a - b| / max(1, |b|)`` over epochs; inf when the lengths differ or a
    loss is not finite."""
    if len(a) != len(b) or not a:
        return math.inf
    devs = [abs(x - y) / max(1.0, abs(y)) for x, y in zip(a, b)]
    return max(devs) if all(map(math.isfinite, devs)) else math.inf


def _stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(runs: list[dict]) -> dict[str, dict[str, dict]]:
    """``{workload: {impl: stats}}`` over the rounds of every (workload, impl) that ran.

    Step times pool every timed epoch of every round; first-step times and peak RSS take
    one value per round. ``step_ratio`` / ``first_step_ratio`` are ratios of those medians
    to the reference's. ``step_ratio_paired`` / ``first_step_ratio_paired`` (median, min,
    max) pair each round's run with the reference's run of the same round: the runs of a
    round are interleaved, so they share the machine's state, and a slow spell that falls
    on some rounds cancels out of their ratio. The pooled median does not cancel it: with
    rounds in two speed regimes it lands in whichever regime holds more of that
    implementation's epochs (on 2 CPU cores a W1 `fit` median read 1.13 pooled where it
    was faster than hand-written in 4 of 5 rounds).
    """
    grouped: dict[str, dict[str, list[dict]]] = {}
    for r in runs:
        if "step_s" in r:
            grouped.setdefault(r["workload"], {}).setdefault(r["impl"], []).append(r)
    out: dict[str, dict[str, dict]] = {}
    for w, by_impl in grouped.items():
        table = {}
        for impl, rs in by_impl.items():
            steps = [t for r in rs for t in r["step_s"]["samples"]]
            step = _stats(steps)
            batch = rs[0]["batch"]
            table[impl] = {
                "rounds": len(rs), "setup_s": _stats([r["setup_s"] for r in rs]),
                "first_step_s": _stats([r["first_step_s"] for r in rs]), "step_s": step,
                "steps_per_s": {"median": 1 / step["median"], "min": 1 / step["max"], "max": 1 / step["min"]},
                "samples_per_s": {"median": batch / step["median"], "min": batch / step["max"],
                                  "max": batch / step["min"]},
                "peak_rss_mb": _stats([r["peak_rss_mb"] for r in rs]),
                "steps_per_call": rs[0].get("steps_per_call", 1),
            }
        ref_name = _reference(table)
        ref = table.get(ref_name)
        for impl, s in table.items():
            s["step_ratio"] = s["step_s"]["median"] / ref["step_s"]["median"] if ref else None
            s["first_step_ratio"] = s["first_step_s"]["median"] / ref["first_step_s"]["median"] if ref else None
            s["step_ratio_paired"] = _paired(by_impl[impl], by_impl.get(ref_name, []), lambda r: r["step_s"]["median"])
            s["first_step_ratio_paired"] = _paired(by_impl[impl], by_impl.get(ref_name, []), lambda r: r["first_step_s"])
        out[w] = table
    return out


def _paired(runs: list[dict], ref_runs: list[dict], value: Any) -> dict | None:
    """Stats of ``value(run) / value(reference run of the same round)`` over the rounds both ran."""
    ref = {r.get("round"): value(r) for r in ref_runs}
    ratios = [value(r) / ref[r.get("round")] for r in runs if r.get("round") in ref]
    return _stats(ratios) if ratios else None


def _reference(names: Any) -> str | None:
    from bench.impls import REFERENCE

    names = list(names)
    return REFERENCE if REFERENCE in names else (names[0] if names else None)


def agreement(runs: list[dict]) -> dict[str, dict[str, dict]]:
    """``{workload: {impl: {"reference", "max_deviation", "ok"}}}`` (see module doc)."""
    by_w: dict[str, list[dict]] = {}
    for r in runs:
        if "epoch_losses" in r:
            by_w.setdefault(r["workload"], []).append(r)
    out: dict[str, dict[str, dict]] = {}
    for w, rs in by_w.items():
        ref_name = _reference(dict.fromkeys(r["impl"] for r in rs))
        ref = next(r for r in rs if r["impl"] == ref_name)["epoch_losses"]
        table: dict[str, dict] = {}
        for r in rs:
            dev = deviation(r["epoch_losses"], ref)
            prev = table.get(r["impl"], {"max_deviation": 0.0})["max_deviation"]
            worst = max(dev, prev)
            table[r["impl"]] = {"reference": ref_name, "max_deviation": worst, "ok": worst <= TOL,
                                "final_loss": r["epoch_losses"][-1]}
        out[w] = table
    return out


def _fmt(v: float, digits: int = 3) -> str:
    if v == 0 or not math.isfinite(v):
        return str(v)
    return f"{v:.{max(digits - 1 - int(math.floor(math.log10(abs(v)))), 0)}f}"


def _cell(s: dict, scale: float = 1.0) -> str:
    return f"{_fmt(s['median'] * scale)} ({_fmt(s['min'] * scale)}–{_fmt(s['max'] * scale)})"


def _ratio_cell(s: dict | None) -> str:
    return "-" if s is None else f"{s['median']:.2f} ({s['min']:.2f}–{s['max']:.2f})"


def tables(summary: dict, agree: dict, order: list[str], workload_names: list[str], quick: bool = False) -> str:
    """Markdown tables, one per workload, implementations in ``order``."""
    lines = []
    for name in workload_names:
        if name not in summary:
            continue
        w = wl.get(name, quick)
        lines += ["", f"### {w.name}: {w.title}" + (" (--quick: toy sizes)" if quick else ""), ""]
        if w.compile_only:
            lines.append("Compile-time workload: read the set-up (building the model and its initial weights) and "
                         "first-step (trace + compile + one step) columns.\n")
        lines.append("| implementation | set-up, s | first step, s | step, ms | steps/s | samples/s | peak RSS, MB "
                     "| step / handwritten | per round | first step / handwritten | per round | final loss "
                     "| losses agree |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for impl in order:
            s = summary[name].get(impl)
            if s is None:
                continue
            a = agree.get(name, {}).get(impl)
            ok = "-" if a is None else ("yes" if a["ok"] else f"**NO** (dev {a['max_deviation']:.1e})")
            ratio = "-" if s["step_ratio"] is None else f"{s['step_ratio']:.2f}"
            fratio = "-" if s["first_step_ratio"] is None else f"{s['first_step_ratio']:.2f}"
            final = "-" if a is None else f"{a['final_loss']:.4f}"
            lines.append(f"| {impl} | {_fmt(s['setup_s']['median'])} | {_cell(s['first_step_s'])} "
                         f"| {_cell(s['step_s'], 1e3)} | {_fmt(s['steps_per_s']['median'])} "
                         f"| {_fmt(s['samples_per_s']['median'])} | {_fmt(s['peak_rss_mb']['median'])} "
                         f"| {ratio} | {_ratio_cell(s.get('step_ratio_paired'))} | {fratio} "
                         f"| {_ratio_cell(s.get('first_step_ratio_paired'))} | {final} | {ok} |")
    return "\n".join(lines)


def header(machine: dict, rounds: int, device: str | None) -> str:
    v = machine["versions"]
    pkgs = ", ".join(f"{k} {v[k]}" for k in ("python", "jax", "jaxlib", "optax", "flax", "equinox", "keras", "kerax"))
    return "\n".join([
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['platform']}"
        + (f"; device {device}" if device else ""),
        f"Versions: {pkgs}",
        f"Date: {machine['date']}; {rounds} round(s), each run in a fresh process, interleaved",
        f"Command: `{machine['command']}`",
        "Cells: median (min–max) over rounds (set-up, first step, RSS) or over every timed epoch of every round "
        f"(step); ratios are ratios of medians; \"per round\": median (min–max) over rounds of the ratio "
        f"to handwritten's run of the same round (drift between rounds cancels); losses agree when every "
        f"epoch's mean loss is within "
        f"{TOL:g} of handwritten's (absolute below 1, relative above).",
    ])
