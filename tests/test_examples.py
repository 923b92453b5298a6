"""The examples run and do what they say (at reduced size)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

EXAMPLES = Path(__file__).parent.parent / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pure_core_example_trains_an_ensemble():
    result = _load("pure_core").main(steps=150, members=3)
    assert result["final_loss"] < 0.2 * result["first_loss"]
    assert result["accuracy"] > 0.95
    assert len(result["member_accuracy"]) == 3 and min(result["member_accuracy"]) > 0.9
    assert len(result["per_example_grad_norms"]) == 4


def test_mnist_style_mlp_example_learns():
    result = _load("mnist_style_mlp").main(n_train=1200, n_test=300, epochs=2, verbose=0)
    assert result["test_accuracy"] > 0.8
    assert result["history"]["loss"][1] < result["history"]["loss"][0]


def test_custom_train_loop_example_learns():
    result = _load("custom_train_loop").main(epochs=2)
    assert result["steps"] == 2 * (1792 // 64)
    assert result["history"][-1]["val_accuracy"] > 0.7


def test_digits_cnn_example_learns():
    result = _load("digits_cnn").main(n_train=800, n_test=200, epochs=3, verbose=0)
    assert result["test_accuracy"] > 0.8


def test_data_parallel_example_matches_one_device():
    result = _load("data_parallel").main(epochs=1, n=256)
    assert result["max_weight_diff"] < 1e-5
    assert result["history_1"]["loss"] == __import__("pytest").approx(result["history_n"]["loss"], rel=1e-5)


def test_text_lstm_example_learns_with_masking():
    result = _load("text_lstm").main(n_train=800, n_test=200, epochs=2, verbose=0)
    assert result["test_accuracy"] > 0.8
