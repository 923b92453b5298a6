"""The benchmark suite's quick mode, in-process: every importable implementation trains every
workload (toy sizes) from the same weights over the same batches, and their losses agree.

The hand-written reference is itself checked against a NumPy forward pass. No timing is
asserted: timings are the benchmark's business, not the test's. To stay inside the test
budget, W4 (W1's code at another batch size) runs two implementations, W5 (a compile-time
workload: 24 blocks to compile per implementation) and the pre-norm blocks W6 / W6s (scanned)
only kerax's and the hand-written one.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ lives beside kerax/, uninstalled

from bench import impls, report, run, workloads  # noqa: E402

W4_IMPLS = ("handwritten", "kerax_fit")
W5_IMPLS = ("handwritten", "kerax_pure")
W6 = ("W6", "W6s")  # written for kerax and hand-written JAX only; they run W5_IMPLS
FIELDS = ("setup_s", "first_step_s", "step_s", "steps_per_s", "samples_per_s", "peak_rss_mb", "epoch_losses",
          "steps_per_call", "device")


def _importable(name: str) -> bool:
    return all(importlib.util.find_spec(p) is not None for p in impls.IMPLS[name][1])


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """In-process quick runs of everything importable: (exit status, the JSON document)."""
    out = tmp_path_factory.mktemp("bench")
    common = ["--quick", "--inprocess", "--fast-compile"]
    status = run.main(common + ["--json", str(out / "a.json"), "--workloads", "W1,W2,W3"])
    status |= run.main(common + ["--json", str(out / "b.json"), "--workloads", "W4", "--impls", ",".join(W4_IMPLS)])
    status |= run.main(common + ["--json", str(out / "c.json"), "--workloads", ",".join(("W5",) + W6),
                                 "--impls", ",".join(W5_IMPLS)])
    a, b, c = (json.loads((out / f).read_text()) for f in ("a.json", "b.json", "c.json"))
    for other in (b, c):
        a["runs"] += other["runs"]
        a["agreement"].update(other["agreement"])
    import jax

    jax.clear_caches()  # some forty compiled programs nobody needs any more
    return status, a


def test_quick_mode_passes_and_every_importable_impl_ran_every_workload(quick):
    status, doc = quick
    assert status == 0
    errors = [r for r in doc["runs"] if "error" in r]
    assert errors == []
    ran = {(r["impl"], r["workload"]) for r in doc["runs"] if "step_s" in r}
    expected = {(i, w) for i in impls.IMPLS if _importable(i) for w in workloads.DEFAULT
                if (w != "W4" or i in W4_IMPLS) and (w != "W5" or i in W5_IMPLS)}
    expected |= {(i, w) for i in W5_IMPLS for w in W6}
    assert ran == expected
    for r in doc["runs"]:
        if "skipped" in r:
            assert not _importable(r["impl"]) and "not installed" in r["skipped"]


def test_every_result_has_the_fields(quick):
    _, doc = quick
    for r in (r for r in doc["runs"] if "step_s" in r):
        w = workloads.get(r["workload"], quick=True)
        assert set(FIELDS) <= set(r), r["impl"]
        assert r["setup_s"] > 0 and r["first_step_s"] > 0 and r["peak_rss_mb"] > 0
        s = r["step_s"]
        assert 0 < s["min"] <= s["median"] <= s["max"] and len(s["samples"]) == w.epochs
        assert r["steps_per_s"] == pytest.approx(1 / s["median"])
        assert r["samples_per_s"] == pytest.approx(w.batch / s["median"])
        assert len(r["epoch_losses"]) == w.epochs + 1
        if r["losses"] is not None:  # per-step losses: their epoch means are the epoch losses
            per_step = np.asarray(r["losses"]).reshape(w.epochs + 1, w.steps)
            np.testing.assert_allclose(per_step.mean(1), r["epoch_losses"], rtol=1e-6)
        assert r["steps_per_call"] == (w.spe if r["impl"].endswith(("spe16", "scan16")) else 1)


def test_losses_agree_across_implementations(quick):
    _, doc = quick
    ref = {r["workload"]: r["epoch_losses"] for r in doc["runs"] if r["impl"] == "handwritten"}
    for r in (r for r in doc["runs"] if "epoch_losses" in r):
        np.testing.assert_allclose(r["epoch_losses"], ref[r["workload"]], atol=report.TOL, rtol=0,
                                   err_msg=f"{r['impl']} on {r['workload']}")
        assert doc["agreement"][r["workload"]][r["impl"]]["ok"]
    # Training happened: the timed epoch's mean loss is below the warm-up epoch's.
    assert all(losses[1] < losses[0] for losses in ref.values())


# -- the reference against NumPy -----------------------------------------------------------


def _np_forward(w: workloads.Workload, p: list[dict], x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    relu = lambda a: np.maximum(a, 0.0)  # noqa: E731
    sigmoid = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    if w.arch == "mlp":
        for layer in p[:-1]:
            x = relu(x @ layer["kernel"] + layer["bias"])
        return x @ p[-1]["kernel"] + p[-1]["bias"]
    if w.arch == "resmlp":
        for layer in p[:-1]:
            x = x + relu(x @ layer["kernel"] + layer["bias"])
        return x @ p[-1]["kernel"] + p[-1]["bias"]
    if w.arch == "prenorm":
        erf = np.vectorize(math.erf)
        norm = lambda a, q: (a - a.mean(1, keepdims=True)) / np.sqrt(a.var(1, keepdims=True) + 1e-3) * q["gamma"] + q["beta"]  # noqa: E731,E501
        for ln, up, down in zip(p[:-2:3], p[1:-2:3], p[2:-2:3]):
            z = norm(x, ln) @ up["kernel"] + up["bias"]
            x = x + (0.5 * z * (1 + erf(z / math.sqrt(2)))) @ down["kernel"] + down["bias"]
        return norm(x, p[-2]) @ p[-1]["kernel"] + p[-1]["bias"]
    if w.arch == "cnn":
        for layer in p[:2]:  # valid 3x3 convolution as a sum over the window's offsets
            k = layer["kernel"]
            oh, ow = x.shape[1] - 2, x.shape[2] - 2
            x = relu(sum(x[:, i:i + oh, j:j + ow, :] @ k[i, j] for i in range(3) for j in range(3)) + layer["bias"])
        n, h, wd, c = x.shape
        x = x[:, :h // 2 * 2, :wd // 2 * 2].reshape(n, h // 2, 2, wd // 2, 2, c).max(axis=(2, 4))
        x = relu(x.reshape(n, -1) @ p[2]["kernel"] + p[2]["bias"])
        return x @ p[3]["kernel"] + p[3]["bias"]
    lstm = p[0]
    units = lstm["recurrent_kernel"].shape[0]
    h = c = np.zeros((x.shape[0], units))
    for t in range(x.shape[1]):
        z = x[:, t] @ lstm["kernel"] + h @ lstm["recurrent_kernel"] + lstm["bias"]
        i, f, g, o = np.split(z, 4, axis=1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
    return h @ p[1]["kernel"] + p[1]["bias"]


def _np_loss(logits: np.ndarray, y: np.ndarray) -> float:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(y)), y].mean())


@pytest.mark.parametrize("name", workloads.DEFAULT + W6)
def test_first_step_loss_matches_numpy(quick, name):
    _, doc = quick
    w = workloads.get(name, quick=True)
    x, y = workloads.make_data(w)
    expected = _np_loss(_np_forward(w, workloads.make_weights(w), x[:w.batch]), y[:w.batch])
    for r in doc["runs"]:
        if r["workload"] == name and r.get("losses"):
            assert r["losses"][0] == pytest.approx(expected, rel=1e-5), r["impl"]


# -- the pieces, without training --------------------------------------------------------------


def test_neutral_weights_follow_the_documented_layout():
    w = workloads.get("W3")
    lstm, dense = workloads.make_weights(w)
    assert lstm["kernel"].shape == (16, 512) and lstm["recurrent_kernel"].shape == (128, 512)
    limit = math.sqrt(6 / (16 + 512))
    assert np.abs(lstm["kernel"]).max() <= limit and np.abs(lstm["kernel"]).max() > 0.9 * limit
    np.testing.assert_allclose(lstm["recurrent_kernel"] @ lstm["recurrent_kernel"].T, np.eye(128), atol=1e-5)
    np.testing.assert_array_equal(lstm["bias"], np.r_[np.zeros(128), np.ones(128), np.zeros(256)])
    assert dense["kernel"].shape == (128, 10) and not dense["bias"].any()
    again = workloads.make_weights(w)
    flat, flat_again = workloads.flat_weights([lstm, dense]), workloads.flat_weights(again)
    assert [a.shape for a in flat] == [(16, 512), (128, 512), (512,), (128, 10), (10,)]
    assert all(np.array_equal(a, b) for a, b in zip(flat, flat_again))


def test_synthetic_labels_come_from_the_teacher_and_use_every_class():
    w = workloads.get("W1")
    x, y = workloads.make_data(w)
    assert x.shape == (w.steps * w.batch, 784) and x.dtype == np.float32 and y.dtype == np.int32
    assert set(np.unique(y)) == set(range(10))
    x2, y2 = workloads.make_data(w)
    np.testing.assert_array_equal(y, y2)


def test_deviation_is_absolute_below_one_and_relative_above():
    assert report.deviation([0.5004], [0.5]) == pytest.approx(4e-4)
    assert report.deviation([200.1], [200.0]) == pytest.approx(0.1 / 200)
    assert report.deviation([1.0, 2.0], [1.0]) == math.inf
    assert report.deviation([float("nan")], [1.0]) == math.inf


def _fake(impl: str, losses: list[float]) -> dict:
    return {"impl": impl, "workload": "W1", "batch": 8, "setup_s": 0.5, "first_step_s": 1.0, "peak_rss_mb": 100.0,
            "step_s": {"median": 1e-3, "min": 1e-3, "max": 1e-3, "samples": [1e-3]}, "epoch_losses": losses,
            "steps_per_call": 1, "device": "cpu"}


def test_runner_exits_non_zero_when_quick_losses_disagree(monkeypatch, capsys):
    fakes = {"handwritten": _fake("handwritten", [2.3, 2.2]), "kerax_pure": _fake("kerax_pure", [2.3, 2.21])}
    monkeypatch.setattr(run, "_inprocess_run", lambda impl, w, args: dict(fakes[impl]))
    status = run.main(["--quick", "--inprocess", "--workloads", "W1", "--impls", "handwritten,kerax_pure"])
    assert status == 1
    captured = capsys.readouterr()
    assert "LOSSES DISAGREE" in captured.err and "W1 kerax_pure" in captured.err
    assert "| kerax_pure |" in captured.out and "**NO** (dev 4.5e-03)" in captured.out


def test_from_json_reports_a_saved_run_without_measuring(monkeypatch, tmp_path):
    fakes = {"handwritten": _fake("handwritten", [2.3, 2.2]), "kerax_pure": _fake("kerax_pure", [2.3, 2.2001])}
    monkeypatch.setattr(run, "_inprocess_run", lambda impl, w, args: dict(fakes[impl]))
    saved, first, again = tmp_path / "run.json", tmp_path / "first.md", tmp_path / "again.md"
    assert run.main(["--quick", "--inprocess", "--workloads", "W1", "--impls", "handwritten,kerax_pure",
                     "--json", str(saved), "--markdown", str(first)]) == 0

    def no_run(*a):
        raise AssertionError("--from-json must not measure")

    monkeypatch.setattr(run, "_inprocess_run", no_run)
    assert run.main(["--from-json", str(saved), "--markdown", str(again), "--impls", "handwritten"]) == 0
    assert again.read_text() == first.read_text()  # the saved run's plan, not this command line's
    assert "| kerax_pure |" in again.read_text()


def test_summary_ratios_are_ratios_of_medians():
    runs = [_fake("handwritten", [1.0]), _fake("kerax_fit", [1.0])]
    runs[1]["step_s"] = {"median": 3e-3, "min": 2e-3, "max": 5e-3, "samples": [2e-3, 3e-3, 5e-3]}
    table = report.summarize(runs)["W1"]
    assert table["kerax_fit"]["step_ratio"] == pytest.approx(3.0)
    assert table["kerax_fit"]["samples_per_s"]["median"] == pytest.approx(8 / 3e-3)
    assert table["handwritten"]["step_ratio"] == 1.0


def test_per_round_ratios_pair_each_run_with_the_reference_run_of_its_round():
    def run(impl, rnd, step, first):
        r = _fake(impl, [1.0])
        r.update(round=rnd, first_step_s=first, step_s={"median": step, "min": step, "max": step, "samples": [step] * 4})
        return r

    # A slow spell (2x) over rounds 1 and 2 that hits kerax_fit's run but not handwritten's
    # in round 1: pooled medians read 2.0 / 1.0; per round the ratios are 0.9, 1.8, 0.95, 0.9.
    runs = [run("handwritten", 0, 1.0, 1.0), run("handwritten", 1, 1.0, 1.0), run("handwritten", 2, 2.0, 2.0),
            run("handwritten", 3, 1.0, 1.0),
            run("kerax_fit", 0, 0.9, 0.8), run("kerax_fit", 1, 1.8, 1.6), run("kerax_fit", 2, 1.9, 1.6),
            run("kerax_fit", 3, 0.9, 0.8), run("kerax_fit", 4, 5.0, 5.0)]  # round 4: no reference, left out
    fit = report.summarize(runs)["W1"]["kerax_fit"]
    assert fit["step_ratio"] == pytest.approx(1.8 / 1.0)
    assert fit["step_ratio_paired"] == pytest.approx({"median": 0.925, "min": 0.9, "max": 1.8})
    assert fit["first_step_ratio_paired"] == pytest.approx({"median": 0.8, "min": 0.8, "max": 1.6})
    text = report.tables(report.summarize(runs), {}, ["handwritten", "kerax_fit"], ["W1"])
    assert "| 1.80 | 0.93 (0.90–1.80) |" in text and "| 1.00 (1.00–1.00) |" in text


def test_unknown_names_are_refused_with_the_known_ones():
    with pytest.raises(KeyError, match=r"unknown workload 'W9'; expected one of \['W1'"):
        workloads.get("W9")
    with pytest.raises(KeyError, match=r"unknown implementation 'jax'; expected one of \["):
        impls.load("jax")
    with pytest.raises(SystemExit, match=r"unknown implementations \['torch'\]"):
        run.parse_args(["--impls", "handwritten,torch"])


def test_peers_refuse_the_kerax_and_handwritten_only_workloads_by_name():
    from bench.impls._common import Unsupported, require_peer_support

    for name in ("W5s", "W6", "W6s"):
        with pytest.raises(Unsupported, match=f"{name} is written for kerax and hand-written JAX only"):
            require_peer_support(workloads.get(name))
    require_peer_support(workloads.get("W5"))  # the unrolled residual MLP is every peer's


def test_prenorm_weights_hold_a_layer_norm_and_two_dense_layers_per_block():
    w = workloads.get("W6")
    weights = workloads.make_weights(w)
    assert len(weights) == 3 * 24 + 2 and sorted(weights[-2]) == ["beta", "gamma"]
    norm, up, down = weights[:3]
    assert np.array_equal(norm["gamma"], np.ones(256)) and not norm["beta"].any()
    assert up["kernel"].shape == (256, 1024) and down["kernel"].shape == (1024, 256)
    assert [a.shape for a in workloads.flat_weights(weights[:1])] == [(256,), (256,)]
