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
