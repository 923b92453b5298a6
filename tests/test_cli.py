"""The ``kerax`` command: the default run end to end (at reduced size), every shipped
config, exit codes and one-line messages for user errors, evaluate / predict / summary,
resuming, a non-finite loss and ``--debug-nans`` (RELIABILITY C11, C14, C15, C18)."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import threading
from pathlib import Path

import jax
import numpy as np
import pytest

import kerax as kx
from kerax import cli
from kerax.experiments import runner
from kerax.experiments.plots import DPI, PANEL_INCHES

FAST = ["-q", "--set", "fit.epochs=2"]


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """``kerax train`` with the default config, 3 epochs instead of 25."""
    out = tmp_path_factory.mktemp("run") / "digits"
    return out, _run_main(["train", "-q", "--set", "fit.epochs=3", "-o", str(out)])


def _run_main(argv):
    import contextlib
    import io

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = cli.main(argv)
    return code, stdout.getvalue(), stderr.getvalue()


def test_default_train_writes_model_history_metrics_and_curves(default_run):
    out, (code, stdout, stderr) = default_run
    assert code == 0, stderr
    line = [ln for ln in stdout.splitlines() if ln.startswith("test_accuracy: ")]
    accuracy = float(line[0].split(": ")[1])
    assert accuracy > 0.85  # 3 epochs; the full default run reaches >= 0.97
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] == pytest.approx(accuracy, abs=1e-4)
    history = json.loads((out / "history.json").read_text())
    assert all(len(history[k]) == 3 for k in ("loss", "accuracy", "val_loss", "val_accuracy"))
    assert history["loss"][-1] < history["loss"][0]
    rows = (out / "history.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,loss,accuracy,val_loss,val_accuracy") and len(rows) == 4
    assert float(rows[3].split(",")[1]) == pytest.approx(history["loss"][2])
    # curves.png: one panel per quantity (loss, accuracy, learning_rate is not drawn)
    assert _png_size(out / "curves.png") == (2 * PANEL_INCHES[0] * DPI, PANEL_INCHES[1] * DPI)
    assert not (out / "backup").exists()  # a finished run leaves no backup behind
    model = kx.load_model(out / "model.kerax")
    (x, y), (xt, yt) = kx.datasets.load_digits()
    predicted = model.predict(xt, verbose=0).argmax(-1)
    assert np.mean(predicted == yt) == pytest.approx(accuracy, abs=1e-4)


def test_evaluate_predict_and_summary_use_the_saved_model(default_run, tmp_path):
    out, _ = default_run
    code, stdout, stderr = _run_main(["evaluate", str(out / "model.kerax")])
    assert code == 0, stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert float(stdout.split("test_accuracy: ")[1].split()[0]) == pytest.approx(metrics["test_accuracy"], abs=1e-4)

    x = kx.datasets.load_digits()[1][0][:5]
    np.save(tmp_path / "x.npy", x)
    code, _, stderr = _run_main(["predict", str(out / "model.kerax"), str(tmp_path / "x.npy"),
                                 "-o", str(tmp_path / "y.npy"), "-q"])
    assert code == 0, stderr
    expected = kx.load_model(out / "model.kerax").predict(x, verbose=0)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-6)

    code, stdout, _ = _run_main(["summary", str(out / "model.kerax")])
    assert code == 0 and "Total params: 151,306" in stdout and "conv2d" in stdout
    code, stdout, _ = _run_main(["summary", "digits_cnn"])
    assert code == 0 and "Total params: 151,306" in stdout


# digits_cnn, the default, is the module's default_run; mnist_cnn needs files (next test)
@pytest.mark.parametrize("name", sorted(set(runner.builtin_configs()) - {"mnist_cnn", "digits_cnn"}))
def test_every_shipped_config_trains_one_epoch(name, tmp_path):
    extra = ["data.max_chars=6000"] if name == "char_lstm" else []  # the text pipeline, smaller
    code, stdout, stderr = _run_main(["train", name, "-q", "--set", "fit.epochs=1", *extra,
                                      "-o", str(tmp_path)])
    assert code == 0, stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert np.isfinite(metrics["test_loss"]) and "test_loss" in stdout
    assert len(json.loads((tmp_path / "history.json").read_text())["loss"]) == 1


def test_mnist_without_files_exits_2_saying_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAX_HOME", str(tmp_path))
    monkeypatch.setenv("KERAX_OFFLINE", "1")
    code, _, stderr = _run_main(["train", "mnist_cnn", "--set", "fit.epochs=1", "-o", str(tmp_path / "o")])
    assert code == 2
    assert f"MNIST files not found in {tmp_path / 'datasets' / 'mnist'}" in stderr
    assert "train-images-idx3-ubyte" in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, message", [
    (["--set", "fit.epoch=3"], "fit.epoch: unknown key; did you mean 'epochs'?"),
    (["--set", "fit.epochs=-1"], "fit.epochs: expected a value >= 1; found -1"),
    (["--set", "fit.batch_size=0"], "fit.batch_size: expected a value >= 1; found 0"),
    (["--set", "fit.epochs=abc"], "fit.epochs: expected int; found 'abc'"),
    (["--set", "compile.optimizer=adamm"], "compile.optimizer: Unknown optimizer 'adamm'. Did you mean 'adam'?"),
    (["--set", "compile.optimizer.learning_rat=0.1"], "Did you mean 'learning_rate'?"),
    (["--set", "model.config.layers[0].class_name=Conv2E"], "model.config.layers[0]: unknown layer class 'Conv2E'"),
    (["--set", "data.name=digitz"], "data.name: Unknown data set 'digitz'. Did you mean 'digits'?"),
    (["--set", "fit.callbacks=[{name: EarlyStoping}]"], "fit.callbacks[0].name: unknown callback 'EarlyStoping'; did you mean 'EarlyStopping'?"),
    (["--set", "fit.callbacks=[{name: EarlyStopping, patiense: 1}]"], "fit.callbacks[0] (EarlyStopping).patiense: unknown key; did you mean 'patience'?"),
    (["--set", "distribute.devices=64"], "distribute.devices: 64 devices asked for; this machine has 4"),
    (["no_such_config.yaml"], "config 'no_such_config.yaml': no such file and no shipped config"),
    (["--set", "model.config.input_shape=[9, 9]"], "input expected shape (None, 9, 9); received shape"),
])
def test_a20_user_errors_exit_2_with_one_line_and_no_traceback(argv, message, tmp_path):
    code, _, stderr = _run_main(["train", *argv, "-q", "-o", str(tmp_path)])
    assert code == 2
    assert stderr.startswith("kerax train: error: ") and message in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr


def test_debug_shows_the_traceback(tmp_path):
    code, _, stderr = _run_main(["train", "--debug", "--set", "fit.epochs=0", "-o", str(tmp_path)])
    assert code == 2 and "Traceback (most recent call last)" in stderr and "ConfigError" in stderr


def test_bad_arguments_and_input_files_exit_2(tmp_path, default_run):
    out, _ = default_run
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--devices", "two"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        cli.main(["fly"])
    assert e.value.code == 2
    code, _, stderr = _run_main(["predict", str(out / "model.kerax"), str(tmp_path / "none.npy"), "-o", "y.npy"])
    assert code == 2 and "input file" in stderr and "does not exist" in stderr
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    code, _, stderr = _run_main(["predict", str(out / "model.kerax"), str(tmp_path / "obj.npy"), "-o", "y.npy"])
    assert code == 2 and "not a NumPy .npy array without objects" in stderr
    (tmp_path / "junk.kerax").write_bytes(b"not a zip")
    code, _, stderr = _run_main(["evaluate", str(tmp_path / "junk.kerax"), "digits_cnn"])
    assert code == 2 and "junk.kerax" in stderr and "Traceback" not in stderr
    evil = tmp_path / "evil.yaml"
    evil.write_text(f'!!python/object/apply:os.system ["touch {tmp_path / "pwned"}"]\n')
    code, _, stderr = _run_main(["config", "validate", str(evil)])
    assert code == 2 and "not valid YAML" in stderr and not (tmp_path / "pwned").exists()


def test_config_show_applies_overrides_and_validate_builds_the_model():
    import yaml

    code, stdout, _ = _run_main(["config", "show", "digits_mlp", "--set", "fit.epochs=7",
                                 "compile.optimizer.learning_rate=0.01"])
    shown = yaml.safe_load(stdout)
    assert code == 0 and shown["fit"]["epochs"] == 7
    assert shown["compile"]["optimizer"] == {"name": "adam", "learning_rate": 0.01}
    assert shown == runner.read_config("digits_mlp", ["fit.epochs=7", "compile.optimizer.learning_rate=0.01"])
    assert _run_main(["config", "validate", "digits_mlp"])[:2] == (0, "digits_mlp: ok\n")
    code, _, stderr = _run_main(["config", "validate", "digits_mlp", "--set", "model.config.layers[1].config.units=-4"])
    assert code == 2 and "model.config.layers[1]: Dense: units must be a positive integer" in stderr
    for override, message in [("compile.optimizer={name: adam, learnin_rate: 0.1}", "learnin_rate"),
                              ("compile.loss=mean_squarred_error", "Did you mean 'mean_squared_error'"),
                              ("compile.dp={l2_norm_clip: 0, noise_multiplier: 1}", "compile.dp: DPSGD: l2_norm_clip")]:
        code, _, stderr = _run_main(["config", "validate", "digits_mlp", "--set", override])
        assert code == 2 and message in stderr, (override, stderr)
    assert _run_main(["config", "validate", "digits_mlp", "--set", "distribute.devices=64"])[0] == 0


def test_c18_resume_auto_starts_fresh_with_a_log_line_and_required_fails(tmp_path):
    code, stdout, _ = _run_main(["train", "regression_hello", "--set", "fit.epochs=2", "--resume",
                                 "-o", str(tmp_path / "a")])
    assert code == 0 and f"no checkpoint in {tmp_path / 'a' / 'backup'}: starting from scratch" in stdout
    code, _, stderr = _run_main(["train", "regression_hello", "--resume", "required", "-o", str(tmp_path / "b")])
    assert code == 2 and f"--resume required: no checkpoint in {tmp_path / 'b' / 'backup'}" in stderr
    (tmp_path / "c" / "backup").mkdir(parents=True)  # an empty checkpoint directory
    code, _, stderr = _run_main(["train", "regression_hello", "--resume", "required", "-o", str(tmp_path / "c")])
    assert code == 2 and "no checkpoint in" in stderr


class _SetAfter(kx.callbacks.Callback):
    """Sets the stop event before batch ``n`` of the run (a deterministic 'SIGTERM')."""

    def __init__(self, event, n):
        super().__init__()
        self.event, self.n, self.count = event, n, 0

    def on_train_batch_begin(self, batch, logs=None):
        self.count += 1
        if self.count == self.n:
            self.event.set()


def test_c15_stopped_run_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    small = ("model.config.layers=[{class_name: Flatten, config: {}}, {class_name: Dropout, config: {rate: 0.3}},"
             " {class_name: Dense, config: {units: 10, activation: softmax}}]")  # dropout: keys must resume too
    config = runner.read_config("digits_mlp", ["fit.epochs=2", "fit.callbacks=[]", "fit.batch_size=128", small])
    whole = runner.train(config, output_dir=tmp_path / "whole", verbose=0)

    event = threading.Event()
    original = runner.build_callbacks
    monkeypatch.setattr(runner, "build_callbacks", lambda e, o: original(e, o) + [_SetAfter(event, 14)])
    with pytest.raises(kx.experiments.preemption.Preempted, match="SIGTERM at step 13"):
        runner.train(config, output_dir=tmp_path / "cut", verbose=0, stop_event=event)
    assert (tmp_path / "cut" / "backup" / "step_13").is_dir()  # mid-epoch 2 (11 batches an epoch)
    monkeypatch.setattr(runner, "build_callbacks", original)
    logs = []
    resumed = runner.train(config, output_dir=tmp_path / "cut", resume="required", verbose=1, log=logs.append)
    assert any("resuming from the checkpoint at step 13" in line for line in logs)
    for a, b in zip(jax.tree.leaves(whole.model.params), jax.tree.leaves(resumed.model.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert resumed.test_metrics == whole.test_metrics


def test_c15_sigterm_to_the_command_saves_and_exits_143(tmp_path):
    """A real signal to a real process: the checkpoint is written at the current step."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "kerax", "train", "digits_mlp", "--set", "fit.epochs=200",
                             "fit.callbacks=[]", "-o", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env)
    seen = b""
    while b"Epoch 2/" not in seen:  # training is under way
        chunk = proc.stdout.read1(4096)
        assert chunk, seen.decode()[-2000:]
        seen += chunk
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=60)
    text = (seen + rest).decode()
    assert proc.returncode == 143, text[-2000:]
    assert "kerax train: stopped: SIGTERM at step" in text and "--resume" in text
    step = int(text.split("SIGTERM at step ")[1].split(";")[0])
    assert step >= 41 and (out / "backup" / f"step_{step}").is_dir()
    assert not (out / "model.kerax").exists()


def test_c11_a_non_finite_loss_fails_the_run_and_keeps_the_last_good_backup(tmp_path):
    """Plain SGD at rate 1e30 on the one-unit regression: step 1 is finite, step 2's loss
    overflows. The run exits 1, says so, writes the history, keeps the backup (with step 1's
    weights, those a one-epoch run ends with) and saves no model."""
    from safetensors.numpy import load_file

    lr = ["--set", "compile.optimizer.learning_rate=1e30"]
    out = tmp_path / "nan"
    code, stdout, stderr = _run_main(["train", "regression_hello", "-q", *lr, "fit.epochs=5", "-o", str(out)])
    assert code == 1, stderr
    assert "Epoch 2: non-finite loss; stopped before applying that update" in stdout
    assert ("kerax train: error: epoch 2: non-finite loss; training stopped before applying that update. "
            f"{out / 'backup'} holds the weights after epoch 1 (step 1), the last epoch that ended with a "
            "finite loss.") in stderr
    assert f"--output-dir {out} --resume" in stderr and "--resume never" in stderr and "Traceback" not in stderr
    loss = json.loads((out / "history.json").read_text())["loss"]
    assert len(loss) == 2 and np.isfinite(loss[0]) and loss[1] == "nan"
    assert not (out / "model.kerax").exists() and not (out / "metrics.json").exists()
    backup = load_file(str(out / "backup" / "step_1" / "state.safetensors"))
    assert int(backup["step"]) == 1 and np.isfinite(backup["params/dense/kernel"]).all()
    code, _, stderr = _run_main(["train", "regression_hello", "-q", *lr, "fit.epochs=1", "-o", str(tmp_path / "one")])
    assert code == 0, stderr
    one = kx.load_model(tmp_path / "one" / "model.kerax", compile=False)
    np.testing.assert_array_equal(backup["params/dense/kernel"], one.params["dense"]["kernel"])


def test_an_infinite_test_loss_is_written_as_strict_json(tmp_path):
    """One SGD step at rate 1e30 is finite; the held-out loss of its weights overflows."""
    code, stdout, stderr = _run_main(["train", "regression_hello", "-q", "--set", "compile.optimizer.learning_rate=1e30",
                                      "fit.epochs=1", "-o", str(tmp_path)])
    assert code == 0, stderr
    assert "test_loss: inf" in stdout

    def refuse(constant):
        raise AssertionError(f"not strict JSON: {constant}")

    assert json.loads((tmp_path / "metrics.json").read_text(), parse_constant=refuse) == {"test_loss": "inf"}


@pytest.mark.filterwarnings("ignore:epoch .* had a non-finite loss")  # on_nan: warn reports each epoch
@pytest.mark.parametrize("mode", ["warn", "skip"])
def test_c11_the_other_on_nan_modes_fail_the_run_too_and_say_what_happened(tmp_path, mode):
    """warn: the overflow is applied and the weights go bad from epoch 2 on; skip: every step
    from epoch 2 on is skipped until max_consecutive_nonfinite (10) of them in a row (across
    epochs) fail the run. Neither backs up an epoch whose loss is not finite."""
    out = tmp_path / mode
    code, _, stderr = _run_main(["train", "regression_hello", "-q", "--set", "compile.optimizer.learning_rate=1e30",
                                 f"compile.on_nan={mode}", "fit.epochs=15", "-o", str(out)])
    assert code == 1, stderr
    if mode == "warn":
        assert "epoch 2: non-finite loss, and compile.on_nan: warn applied that update" in stderr
        loss = json.loads((out / "history.json").read_text())["loss"]
        assert len(loss) == 15 and all(v == "nan" or not np.isfinite(float(v)) for v in loss[1:])
    else:
        assert "10 consecutive steps had a non-finite loss or gradient" in stderr
        assert "holds the weights after epoch 1 (step 1)" in stderr
    assert (out / "history.json").exists() and not (out / "model.kerax").exists()
    assert [d.name for d in (out / "backup").iterdir() if d.name.startswith("step_")] == ["step_1"]


def test_c14_debug_nans_names_the_primitive_that_made_the_nan(tmp_path):
    """A Poisson loss of a negative prediction takes log of a negative number. on_nan: stop
    (the CLI's default) keeps NaNs out of the step's outputs, so without the flag the run only
    stops; with it the step lets the NaN through and JAX names the primitive."""
    poisson = ["regression_hello", "-q", "--set", "compile.loss=poisson", "fit.epochs=2"]
    code, stdout, stderr = _run_main(["train", *poisson, "--debug-nans", "-o", str(tmp_path / "debug")])
    assert not jax.config.jax_debug_nans  # set for the command only
    assert code == 1
    assert "FloatingPointError: invalid value (nan) encountered in log" in stderr
    assert "kerax train: error: invalid value (nan) encountered in log" in stderr
    code, stdout, stderr = _run_main(["train", *poisson, "-o", str(tmp_path / "plain")])
    assert code == 1 and "epoch 1: non-finite loss; training stopped before applying that update" in stderr


def test_compile_dp_trains_with_dp_sgd_and_reports_the_epsilon_spent(tmp_path):
    import math

    from kerax.experiments import datasources

    dp = "compile.dp={l2_norm_clip: 1.0, noise_multiplier: 1.1}"
    code, stdout, stderr = _run_main(["train", "digits_mlp", "-q", "--set", dp, "fit.epochs=2", "fit.callbacks=[]",
                                      "-o", str(tmp_path)])
    assert code == 0, stderr
    record = json.loads((tmp_path / "privacy.json").read_text())
    n = int(len(datasources.load(runner.read_config("digits_mlp")["data"]).x_train) * 0.9)  # Keras's split
    steps = 2 * math.ceil(n / 32)
    assert record["steps"] == steps and record["delta"] == 1e-5 and record["noise_multiplier"] == 1.1
    assert record["epsilon"] == pytest.approx(kx.privacy.compute_epsilon(steps, 1.1, 32 / n, 1e-5), rel=1e-9)
    assert f"DP-SGD: (epsilon = {record['epsilon']:.4g}, delta = 1e-05) after {steps} steps" in stdout
    saved = kx.load_model(tmp_path / "model.kerax")  # the DP setting and the ledger travel with it
    assert kx.privacy.privacy_spent(saved).epsilon == pytest.approx(record["epsilon"])


@pytest.mark.parametrize("dp, message", [
    ("{l2_norm_clip: 1.0, noise_multipler: 1.1}",
     "compile.dp.noise_multipler: unknown key; did you mean 'noise_multiplier'?"),
    ("{noise_multiplier: 1.1}", "compile.dp.l2_norm_clip: required"),
    ("{l2_norm_clip: 1.0, noise_multiplier: -1}", "compile.dp: DPSGD: noise_multiplier must be a finite number >= 0"),
    ("3", "compile.dp: expected"),
])
def test_compile_dp_errors_name_the_key(tmp_path, dp, message):
    code, _, stderr = _run_main(["train", "digits_mlp", "-q", "--set", f"compile.dp={dp}", "-o", str(tmp_path)])
    assert code == 2 and message in stderr, stderr


def test_data_parallel_run_matches_one_device(tmp_path):
    one = runner.train(runner.read_config("regression_hello", ["fit.epochs=20"]), tmp_path / "1", verbose=0)
    two = runner.train(runner.read_config("regression_hello", ["fit.epochs=20"]), tmp_path / "2", devices=2,
                       verbose=0)
    np.testing.assert_allclose(one.history["loss"], two.history["loss"], rtol=1e-5)
    assert one.test_metrics["test_loss"] == pytest.approx(two.test_metrics["test_loss"], rel=1e-4)


def test_python_dash_m_and_help():
    result = subprocess.run([sys.executable, "-m", "kerax", "train", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--resume" in result.stdout and "--set" in result.stdout
